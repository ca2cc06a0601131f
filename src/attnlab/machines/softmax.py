"""The softmax inverse temperature that makes a standard softmax attention head compute the hardmax
network exactly in a given floating-point format (standard library only: ``compile`` and ``export`` write
it into config.json without importing torch).

The compiled head's scores are q_i (k_j + rpe(i - j)) with q_i = 1, k_j = 0 and rpe = 1 for the oldest key,
0 for the W - 1 others. Softmax at inverse temperature β gives the oldest key e^β / (e^β + W - 1), so in
exact arithmetic the argmax is right iff e^β > W - 1 (β > ln(W - 1), the softmax ablation). In a p-bit
format (unit roundoff u = 2^-p) we ask for more: that every rounding of the forward pass lands on the
hardmax network's values.

**Claim.** Assume every floating-point operation (exp, +, ×, /) of the kernel returns its exact result times
(1 + δ), |δ| <= u, with round to nearest (monotone), in any order of summation, with exp(0) = 1 and
x / 1 = x (every libm, SLEEF and CUDA exp is exact at 0). If

    (W - 1) e^{-β} (1 + u)^{W + 3} < u / 2                                         (1)
    (1 + u)^{|Λ| + 2} < 2                                                          (2)
    e^{-β} >= 2^-126  (the exponentials stay in the normal range of float32 and bfloat16)

then the next token of the softmax network equals the hardmax network's, with logit >= 2 against < 2 (or,
after a halting token, the halt token's exact 1 against exact 0s).

*Proof.* Each non-oldest exponential is δ_j <= e^{-β}(1 + u); any partial sum of them is below
(W - 1) e^{-β} (1 + u)^{W+1} < u/2 < u by (1), and 1 plus a non-negative number below u (half the spacing
above 1) rounds to 1: the softmax denominator is exactly 1, the oldest weight exactly 1, every other weight
below u/2 in total. Values are one-hot symbols, so the attention output is exactly 1 at the oldest token's
symbol c and sums to below u/2 over the others. The FFN unit u(s, c') = ReLU(x[ST_s] + x[FRONT_c'] - 1)
then gives, in any order of its three terms: 1 exactly for (current state, c); 0 or the tiny input for the
current state with c' != c (1 + t rounds to 1 and t - 1 to -1 when t < u/2); 0 for every other state
(0 + 1 - 1 = 0 exactly, or t - 1 < 0): the firing unit is exactly 1 and the others sum to below u/2. The
factored output y = act W_2 (0/1 weights) then has, at the two entries y[SYM c'], y[ST s'] of the right token
τ = (s', c'), a sum containing 1 (so >= 1), and everywhere a sum of at most |Λ| nonzero terms, at most 1 + u/2
exactly (below (1 + u/2)(1 + u)^{|Λ|} rounded) at those two entries and below (u/2)(1 + u)^{|Λ|} elsewhere.
The right token's logit y[SYM c'] + y[ST s'] is >= 2; a wrong token shares at most one of the two entries, so
its logit is below (1 + u)^{|Λ| + 2} < 2 by (2). The halt unit ReLU(x[ST_h]) and its logit are exact.

β is the smallest integer satisfying (1) (an integer below 256 is exact in bfloat16 and float32, so
β·rpe and the max subtraction are exact). The tests replay every library machine through
``torch.nn.functional.scaled_dot_product_attention`` at this β in float32 and bfloat16.
"""

from __future__ import annotations

import math

#: unit roundoff 2^-p of the formats the softmax export supports (p counts the implicit bit)
UNIT_ROUNDOFF = {"float32": 2.0 ** -24, "bfloat16": 2.0 ** -8}
MIN_NORMAL_LOG = -126 * math.log(2)  # ln 2^-126: float32 and bfloat16 share the exponent range


def exact_inverse_temperature(window: int, n_symbols: int, dtype: str) -> int | None:
    """The smallest integer β satisfying the claim's conditions for window W and |Λ| symbols in ``dtype``,
    or None when no β does (the format is too coarse for this W or this alphabet)."""
    if dtype not in UNIT_ROUNDOFF:
        raise ValueError(f"no softmax bound for dtype {dtype!r} (use {', '.join(UNIT_ROUNDOFF)})")
    u = UNIT_ROUNDOFF[dtype]
    if (n_symbols + 2) * math.log1p(u) >= math.log(2):  # (2)
        return None
    others = max(window - 1, 1)
    # (1): β > ln(W - 1) + ln(2 / u) + (W + 3) ln(1 + u)
    bound = math.log(others) + math.log(2 / u) + (window + 3) * math.log1p(u)
    beta = math.floor(bound) + 1
    return beta if -beta >= MIN_NORMAL_LOG else None


def softmax_spec(window: int, n_symbols: int) -> dict:
    """What config.json states about the softmax alternative to hardmax: β per format and the conditions."""
    return {"inverse_temperature": {d: exact_inverse_temperature(window, n_symbols, d) for d in UNIT_ROUNDOFF},
            "unit_roundoff": dict(UNIT_ROUNDOFF),
            "rule": "a_ij = softmax_j(beta * s_ij): beta is the smallest integer with (W-1) e^-beta (1+u)^(W+3) "
                    "< u/2, given (1+u)^(|Λ|+2) < 2 and e^-beta >= 2^-126; then every rounding in the "
                    "format lands on the hardmax network's values (proof: attnlab.machines.softmax); null: no "
                    "beta is provably exact in that format",
            "exact_arithmetic_threshold": round(math.log(max(window - 1, 1)), 6)}
