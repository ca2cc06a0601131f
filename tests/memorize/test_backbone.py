import pytest
import torch

from attnlab.core.errors import AttnlabError
from attnlab.memorize.backbone import Backbone, BackboneConfig, OwnAttention, attend_after_prefix
from attnlab.memorize.settings import INITS


def small(**kw):
    base = dict(vocab=16, n_classes=8, d_model=16, n_heads=2, n_layers=2, d_ff=32, max_len=12, train_steps=20)
    return Backbone(BackboneConfig(**{**base, **kw}))


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("gen_steps", [0, 3])
def test_cached_prompt_states_equal_naive_concatenation(init, gen_steps):
    """Exact up to rounding: checked in float64 (fed-back generation steps amplify float32 rounding)."""
    bb = small(init=init).double()
    prompt = torch.randn(5, 16, dtype=torch.float64)
    tokens = torch.randint(0, 16, (7, 6))
    cached, naive = bb(prompt, tokens, gen_steps), bb.forward_naive(prompt, tokens, gen_steps)
    assert cached.shape == naive.shape == (7, 6, 16)  # readout over the whole vocabulary
    torch.testing.assert_close(cached, naive, atol=1e-10, rtol=1e-10)
    fast32 = small(init=init)(prompt.float(), tokens, gen_steps)
    torch.testing.assert_close(fast32, naive.float(), atol=1e-2, rtol=1e-3)


@pytest.mark.parametrize("P, m", [(1, 1), (3, 5)])
def test_attention_after_a_prefix_is_attention_over_the_concatenated_keys(P, m):
    """attend_after_prefix (the inputs' own causal attention computed once, the prefix scores merged in) equals
    softmax attention over [prefix p; own keys] with the causal mask, for every prefix and example, also where the
    scores are large enough that an unshifted exp would overflow."""
    B, H, L, hd = 4, 2, 6, 8
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, L, hd, generator=g, dtype=torch.float64) * 30 for _ in range(3))
    kp, vp = (torch.randn(P, H, m, hd, generator=g, dtype=torch.float64) * 30 for _ in range(2))
    got = attend_after_prefix(q, (kp, vp), OwnAttention.of(q, k, v))
    mask = torch.ones(L, m + L, dtype=torch.bool).tril(diagonal=m)
    for p in range(P):
        keys, values = torch.cat([kp[p].expand(B, -1, -1, -1), k], 2), torch.cat([vp[p].expand(B, -1, -1, -1), v], 2)
        want = torch.nn.functional.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        torch.testing.assert_close(got[p], want, atol=1e-10, rtol=1e-10)


def test_equal_without_norm_and_with_one_token_prompt():
    bb = small(norm=False, gain=2.0).double()
    prompt, tokens = torch.randn(1, 16, dtype=torch.float64), torch.randint(0, 16, (3, 4))
    torch.testing.assert_close(bb(prompt, tokens, 2), bb.forward_naive(prompt, tokens, 2), atol=1e-10, rtol=1e-10)


def test_examples_do_not_interact():
    bb = small()
    prompt, tokens = torch.randn(4, 16), torch.randint(0, 16, (5, 6))
    whole = bb(prompt, tokens, 2)
    torch.testing.assert_close(whole[2:3], bb(prompt, tokens[2:3], 2), atol=1e-5, rtol=1e-5)


def test_prompt_matters_and_causality():
    bb = small()
    tokens = torch.randint(0, 16, (3, 6))
    a, b = bb(torch.randn(4, 16), tokens), bb(torch.randn(4, 16), tokens)
    assert not torch.allclose(a, b)
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 16
    p = torch.randn(4, 16)
    torch.testing.assert_close(bb(p, tokens)[:, :-1], bb(p, changed)[:, :-1])  # the future does not leak back


def test_only_the_prompt_gets_gradients():
    bb = small()
    prompt = torch.randn(3, 16, requires_grad=True)
    bb(prompt, torch.randint(0, 16, (4, 5)), 2).sum().backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in bb.parameters())


def test_inits_are_seeded_and_distinct():
    w = {init: small(init=init).blocks[0].attn.qkv.weight for init in INITS}
    assert torch.equal(small(init="trained").blocks[0].attn.qkv.weight, w["trained"])
    assert not torch.equal(w["trained"], w["gaussian"])  # pretraining moved the weights
    assert torch.equal(w["identity"][32:], torch.eye(16))  # value map is the identity
    q = small(init="orthogonal", gain=1.0).blocks[0].attn.proj.weight
    torch.testing.assert_close(q @ q.T, torch.eye(16), atol=1e-5, rtol=0)
    g1, g3 = small(gain=1.0).blocks[0].mlp[0].weight, small(gain=3.0).blocks[0].mlp[0].weight
    torch.testing.assert_close(g3, 3 * g1)


def test_bad_configs():
    for kw, words in ((dict(init="xavier"), "unknown init"), (dict(d_model=10, n_heads=4), "divisible"),
                      (dict(gain=0.0), "gain")):
        with pytest.raises(AttnlabError, match=words):
            BackboneConfig(**kw)
    with pytest.raises(AttnlabError, match="max_len"):
        small()(torch.randn(2, 16), torch.randint(0, 16, (2, 10)), gen_steps=5)


@pytest.mark.parametrize("n_layers", [1, 2])
@pytest.mark.parametrize("gen_steps", [0, 2])
def test_precomputed_inputs_and_last_only_give_the_same_values(n_layers, gen_steps):
    """The fast path (input states computed once, the last block carrying only the last position) computes the
    same last-position logits and prompt gradient as the full forward: in float64 to 1e-10, not bit for bit (the
    fast path merges the inputs' own attention with the prompt's, another order of the same sums)."""
    bb = small(n_layers=n_layers).double()
    tokens = torch.randint(0, 16, (9, 6))
    inputs = bb.input_states(tokens)
    assert not inputs.x.requires_grad and not inputs.qkv.requires_grad
    grads = []
    for fast in (False, True):
        prompt = torch.randn(5, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64,
                             requires_grad=True)
        logits = bb(prompt, inputs, gen_steps, last_only=True) if fast else bb(prompt, tokens, gen_steps)[:, -1:]
        assert logits.shape == (9, 1, 16)
        logits.square().sum().backward()
        grads.append((logits.detach(), prompt.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-10, rtol=1e-10)
    # and the full logits with precomputed inputs are those of the tokens
    torch.testing.assert_close(bb(prompt.detach(), inputs, gen_steps), bb(prompt.detach(), tokens, gen_steps))
