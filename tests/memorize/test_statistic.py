"""m* as a statistic (issue 14, item 1): p(m) over prompt seeds, m*_q and its bootstrap interval, on synthetic
outcome tables (known answers), then through ``memorize search --prompt-seeds``."""

import json

import pytest

from attnlab.cli import main
from attnlab.core.errors import AttnlabError
from attnlab.memorize.statistic import MIN_SEEDS, bootstrap_interval, estimate_m_star, m_star_q


def ramp(full_at: int, n: int):
    """Outcomes whose success rate rises linearly in m, reaching 1 at ``full_at``: round(n * m / full_at) of n
    memorize (after 10 steps), the rest do not (None)."""
    return lambda m: [10 if i < round(n * min(1.0, m / full_at)) else None for i in range(n)]


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
    [res] = estimate_m_star(lambda m: tried.append(m) or outcomes(m), m_max=256, n_seeds=n, budgets=[10], q=q,
                            n_boot=200)
    truth = min(m for m in range(1, 257) if sum(s is not None for s in outcomes(m)) / n >= q)
    assert res.m_star == truth
    assert truth in tried and (truth == 1 or truth - 1 in tried)  # the bisection pinned it between neighbours
    assert len(tried) <= 2 * (256).bit_length() and len(set(tried)) == len(tried)
    assert res.p == {m: sum(s is not None for s in outcomes(m)) / n for m in sorted(tried)} and res.budget == 10
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
    [res] = estimate_m_star(ramp(1000, 5), m_max=64, n_seeds=5, budgets=[10], n_boot=100)
    assert res.m_star is None and res.ci == (None, None) and max(res.p) == 64
    near = {8: [False] * 4 + [True], 16: [True, True, False, False, False]}  # a rate 0.4 can resample to >= 0.5
    lo, hi = bootstrap_interval(near, 0.5, n_boot=2000)
    assert m_star_q(near, 0.5) is None and lo in (8, 16) and hi is None


def test_each_budget_gets_its_own_search_over_one_table_of_fits():
    """A fit at length m takes 2000 / m steps to memorize: within 400 steps from m = 5 on, within 100 from m = 20.
    Each length is fitted once, and each budget's m*_q is pinned between neighbours."""
    tried = []
    fits = lambda m: tried.append(m) or [2000 // m] * 5  # noqa: E731
    long, short = estimate_m_star(fits, m_max=256, n_seeds=5, budgets=[400, 100], n_boot=100)
    assert (long.budget, long.m_star, short.budget, short.m_star) == (400, 5, 100, 20)
    assert len(set(tried)) == len(tried) and {4, 5, 19, 20} <= set(tried)
    assert long.p[19] == 1.0 and short.p[19] == 0.0 and long.outcomes.keys() == short.outcomes.keys()


@pytest.mark.parametrize("kw, words", [({"n_seeds": MIN_SEEDS - 1}, "at least"), ({"q": 0.0}, "q must be"),
                                       ({"q": True}, "q must be"), ({"m_start": 99}, "m_start"),
                                       ({"budgets": []}, "budgets"), ({"budgets": [10, 10]}, "budgets")])
def test_bad_arguments_are_refused_before_any_fit(kw, words):
    calls = []
    args = {"m_max": 64, "n_seeds": MIN_SEEDS, "budgets": [10], **kw}
    with pytest.raises(AttnlabError, match=words):
        estimate_m_star(lambda m: calls.append(m) or [1] * args["n_seeds"], **args)
    assert not calls


TINY = ["memorize", "search", "--n-pairs", "4", "--seq-len", "2", "--vocab", "8", "--n-classes", "4",
        "--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--d-ff", "32", "--max-steps", "30", "--m-max", "4"]


def test_cli_search_estimates_p_of_m_over_prompt_seeds(capsys, tmp_path):
    assert main([*TINY, "--prompt-seeds", "5", "--n-boot", "100", "-o", str(tmp_path / "pm"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    pm = out["p_of_m"]
    lengths = [int(m) for m in pm["p"]]
    assert pm["n_seeds"] == 5 and len(out["probes"]) == 5 * len(lengths)
    for m in lengths:
        fits = [p for p in out["probes"] if p["m"] == m]
        assert len({p["seed"] for p in fits}) == 5  # five distinct prompt initialisations per length
        assert pm["p"][str(m)] == sum(p["memorized"] for p in fits) / 5
    record = json.loads((tmp_path / "pm" / "record.json").read_text())
    assert record["metrics"]["m_star_q"] == pm["m_star"] and "--prompt-seeds 5" in record["command"]
    assert main([*TINY, "--prompt-seeds", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ">= 5" in err


def test_cli_search_reads_a_shorter_budget_off_the_same_fits(capsys):
    assert main([*TINY, "--prompt-seeds", "5", "--short-steps", "10", "--n-boot", "50", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    long, short = out["p_of_m"], out["p_of_m_short"]
    assert (long["budget"], short["budget"]) == (30, 10) and long["p"].keys() == short["p"].keys()
    for m, fits in short["outcomes"].items():
        probes = [p for p in out["probes"] if p["m"] == int(m)]
        assert fits == [p["memorized"] and p["steps"] <= 10 for p in probes]
        assert short["p"][m] <= long["p"][m]


@pytest.mark.parametrize("argv, words", [(["--short-steps", "10"], "set prompt_seeds"),
                                         (["--prompt-seeds", "5", "--short-steps", "30"], "below max_steps")])
def test_cli_refuses_a_short_budget_it_cannot_read(capsys, argv, words):
    assert main([*TINY, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err
