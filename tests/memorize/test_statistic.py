"""m* as a statistic (issue 14, item 1): p(m) over prompt seeds, m*_q and its bootstrap interval, on synthetic
outcome tables (known answers), then through ``memorize search --n-prompt-seeds``."""

import json

import pytest

from attnlab.cli import main
from attnlab.core.errors import AttnlabError
from attnlab.memorize.statistic import MIN_SEEDS, bootstrap_interval, estimate_m_star, m_star_q


def ramp(full_at: int, n: int):
    """Outcomes whose success rate rises linearly in m, reaching 1 at ``full_at``: round(n * m / full_at) of n."""
    return lambda m: [i < round(n * min(1.0, m / full_at)) for i in range(n)]


def test_m_star_q_is_the_smallest_length_at_the_level():
    table = {1: [False] * 5, 4: [True, False, False, False, False], 8: [True, True, True, False, False],
             16: [True] * 5}
    assert m_star_q(table, 0.5) == 8 and m_star_q(table, 0.2) == 4 and m_star_q(table, 1.0) == 16
    assert m_star_q({1: [False] * 5}, 0.5) is None


@pytest.mark.parametrize("full_at, q", [(40, 0.5), (40, 0.8), (7, 0.5), (1, 0.5), (200, 0.3)])
def test_the_search_on_p_of_m_finds_the_known_threshold(full_at, q):
    n = 10
    tried = []
    outcomes = ramp(full_at, n)
    res = estimate_m_star(lambda m: tried.append(m) or outcomes(m), m_max=256, n_seeds=n, q=q, n_boot=200)
    truth = min(m for m in range(1, 257) if sum(outcomes(m)) / n >= q)
    assert res.m_star == truth
    assert truth in tried and (truth == 1 or truth - 1 in tried)  # the bisection pinned it between neighbours
    assert len(tried) <= 2 * (256).bit_length() and len(set(tried)) == len(tried)
    assert res.p == {m: sum(outcomes(m)) / n for m in sorted(tried)}
    lo, hi = res.ci
    assert lo <= res.m_star and (hi is None or hi >= res.m_star)


def test_the_interval_is_a_point_when_every_seed_agrees_and_widens_with_noise():
    sharp = {m: [m >= 20] * 6 for m in (16, 19, 20, 24, 32)}
    assert bootstrap_interval(sharp, 0.5, n_boot=500) == (20, 20)
    noisy = {16: [True, False, False, False, False, False], 19: [True, True, False, False, False, False],
             20: [True, True, True, False, False, False], 24: [True, True, True, True, False, False],
             32: [True] * 6}
    lo, hi = bootstrap_interval(noisy, 0.5, n_boot=2000)
    assert lo < m_star_q(noisy, 0.5) == 20 < hi
    assert bootstrap_interval(noisy, 0.5, n_boot=2000, seed=3) == bootstrap_interval(noisy, 0.5, n_boot=2000, seed=3)


def test_nothing_at_the_level_up_to_m_max_is_none_with_an_open_interval():
    res = estimate_m_star(ramp(1000, 5), m_max=64, n_seeds=5, n_boot=100)
    assert res.m_star is None and res.ci == (None, None) and max(res.p) == 64
    near = {8: [False] * 4 + [True], 16: [True, True, False, False, False]}  # a rate 0.4 can resample to >= 0.5
    lo, hi = bootstrap_interval(near, 0.5, n_boot=2000)
    assert m_star_q(near, 0.5) is None and lo in (8, 16) and hi is None


@pytest.mark.parametrize("kw, words", [({"n_seeds": MIN_SEEDS - 1}, "at least"), ({"q": 0.0}, "q must be"),
                                       ({"q": True}, "q must be"), ({"m_start": 99}, "m_start")])
def test_bad_arguments_are_refused_before_any_fit(kw, words):
    calls = []
    args = {"m_max": 64, "n_seeds": MIN_SEEDS, **kw}
    with pytest.raises(AttnlabError, match=words):
        estimate_m_star(lambda m: calls.append(m) or [True] * args["n_seeds"], **args)
    assert not calls


TINY = ["memorize", "search", "--n-pairs", "4", "--seq-len", "2", "--vocab", "8", "--n-classes", "4",
        "--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--d-ff", "32", "--max-steps", "30", "--m-max", "4"]


def test_cli_search_estimates_p_of_m_over_prompt_seeds(capsys, tmp_path):
    assert main([*TINY, "--n-prompt-seeds", "5", "--n-boot", "100", "-o", str(tmp_path / "pm"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    pm = out["p_of_m"]
    lengths = [int(m) for m in pm["p"]]
    assert pm["n_seeds"] == 5 and len(out["probes"]) == 5 * len(lengths)
    for m in lengths:
        fits = [p for p in out["probes"] if p["m"] == m]
        assert len({p["seed"] for p in fits}) == 5  # five distinct prompt initialisations per length
        assert pm["p"][str(m)] == sum(p["memorized"] for p in fits) / 5
    record = json.loads((tmp_path / "pm" / "record.json").read_text())
    assert record["metrics"]["m_star_q"] == pm["m_star"] and "--n-prompt-seeds 5" in record["command"]
    assert main([*TINY, "--n-prompt-seeds", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "at least 5" in err
