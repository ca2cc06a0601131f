import numpy as np
import pytest

from attnlab.depth.slope import analyze_slope, best_depth
from attnlab.depth.theory import fit_depth_for_budget

DEPTHS = (1, 2, 4, 8, 16)


def curve(true_star: float, depths=DEPTHS, curvature=0.1, offset=2.0):
    return [offset + curvature * (np.log(L) - np.log(true_star)) ** 2 for L in depths]


def rows(stars: dict[int, float], seeds=(0, 1, 2, 3, 4), noise=0.002, seed=0):
    """Hand-made results: each seed's curve is a parabola in ln L with its minimum near the budget's L* (the
    seed's own minimum scattered by 15% around it), a per-seed offset, and small noise."""
    rng = np.random.default_rng(seed)
    out = {}
    for budget, star in stars.items():
        for s in seeds:
            shift, own = rng.normal(0, 0.05), star * np.exp(rng.normal(0, 0.15))
            for L, loss in zip(DEPTHS, curve(own), strict=True):
                key = f"N{budget}-L{L}-s{s}"
                out[key] = {"key": key, "budget": budget, "depth": L, "seed": s,
                            "heldout_loss": loss + shift + rng.normal(0, noise)}
    return out


def test_best_depth_of_a_curve():
    assert best_depth(DEPTHS, curve(4.0)) == pytest.approx(4.0, rel=1e-2)
    assert best_depth(DEPTHS, curve(0.2)) == 1.0  # the vertex lies below the swept depths: the end point
    assert best_depth(DEPTHS, [2.0, 2.5, 2.6, 2.5, 2.1]) == 1.0  # opens downward: the better end point
    assert best_depth((1, 2), (2.0, 1.5)) == 2.0  # two depths: the better one


def test_interval_contains_the_true_L_star():
    s = analyze_slope(rows({500_000: 3.0}, seed=2))  # one sweep; coverage: the next test
    (b,) = s["budgets"]
    assert b["interval"][0] <= 3.0 <= b["interval"][1] and b["interval"][1] - b["interval"][0] < 1.0
    assert b["L_star"] == pytest.approx(3.0, rel=0.15) and len(b["per_seed"]) == 5
    assert b["paper_L_star"] == pytest.approx(fit_depth_for_budget(500_000)) and s["fit"] is None


def test_interval_coverage_grows_with_seeds():
    """Over 30 simulated sweeps the interval holds the true L* in most with 5 seeds, and clearly less often with
    2 (a percentile bootstrap over 2 seeds is no 95% interval; docs/depth.md says so)."""
    def coverage(seeds):
        hits = [analyze_slope(rows({500_000: 3.0}, seeds=range(seeds), seed=k), bootstrap=100)["budgets"][0]
                ["interval"] for k in range(30)]
        return np.mean([lo <= 3.0 <= hi for lo, hi in hits])

    five, two = coverage(5), coverage(2)
    assert five >= 0.7 and two < five


def test_zero_slope_rejected_when_the_best_depth_grows():
    s = analyze_slope(rows({500_000: 1.5, 2_000_000: 4.3, 8_000_000: 9.6}), bootstrap=300)
    f = s["fit"]
    assert f["zero_slope_rejected"] and f["interval"][0] > 0
    assert f["paper_slope"] == pytest.approx(2.94, abs=0.01)  # (9.62 - 1.48) / ln 16
    assert f["paper_slope_in_interval"]  # the data were made with the paper's L*


def test_zero_slope_not_rejected_when_the_best_depth_stays():
    s = analyze_slope(rows({500_000: 4.0, 2_000_000: 4.0, 8_000_000: 4.0}), bootstrap=300)
    f = s["fit"]
    assert not f["zero_slope_rejected"] and f["interval"][0] <= 0 <= f["interval"][1]
    assert not f["paper_slope_in_interval"]


def test_only_complete_seeds_count():
    data = rows({500_000: 3.0}, seeds=(0, 1))
    del data["N500000-L16-s1"]  # seed 1 still running
    (b,) = analyze_slope(data)["budgets"]
    assert b["seeds"] == [0] and list(b["per_seed"]) == ["0"] and b["interval"][0] == b["interval"][1]


def test_a_run_in_progress_counts_no_seed_before_all_configured_depths_are_trained():
    data = {k: r for k, r in rows({500_000: 3.0}, seeds=(0,)).items() if r["depth"] <= 2}  # depths 1, 2 done
    assert analyze_slope(data)["budgets"][0]["depths"] == [1, 2]  # without the design: the depths present
    assert analyze_slope(data, depths=list(DEPTHS))["budgets"] == []  # with it: seed 0 is not complete yet
    full = rows({500_000: 3.0}, seeds=(0,))
    assert analyze_slope(full, depths=list(DEPTHS))["budgets"][0]["depths"] == list(DEPTHS)


def test_the_sweep_analysis_passes_the_design_on():
    from attnlab.depth.sweep import analyze

    data = {k: {**r, "width": 8, "heads": 1, "non_embedding": 500_000}
            for k, r in rows({500_000: 3.0}, seeds=(0,)).items() if r["depth"] <= 2}
    assert analyze(data, design=list(DEPTHS))["slope"]["budgets"] == []
    assert analyze(data)["slope"]["budgets"][0]["depths"] == [1, 2]
