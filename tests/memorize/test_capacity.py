"""``attnlab.memorize.capacity`` on a tiny random Llama (no SmolLM2 download): the search returns the largest
text length that memorizes, a saved prompt makes transformers' greedy generate reproduce its text, a run resumes,
and bad input is one line with exit code 2."""

import json

import pytest
import torch

from attnlab.core.errors import AttnlabError
from attnlab.memorize import capacity as C


@pytest.fixture(scope="module")
def tiny_lm(tiny_llama_dir):
    """A tiny random Llama (2 layers, tied embeddings) with a byte-level BPE tokenizer, as an HF checkpoint folder
    (what --model takes)."""
    return str(tiny_llama_dir("tiny-lm", 5, 280, num_hidden_layers=2, max_position_embeddings=128,
                              tie_word_embeddings=True))


@pytest.mark.parametrize("capacity", [0, 1, 5, 16, 17, 23, 40])
@pytest.mark.parametrize("n_start", [1, 8])
@pytest.mark.parametrize("n_step", [1, 4])
def test_largest_passing_is_the_largest_length_that_passes(capacity, n_start, n_step):
    tried = []

    def memorizes(n):
        tried.append(n)
        return f"fit {n}" if n <= capacity else None

    n, got = C.largest_passing(memorizes, n_max=32, n_start=n_start, n_step=n_step)
    assert n == min(capacity // n_step * n_step, 32)
    assert got == (None if n == 0 else f"fit {n}")
    assert all(t % n_step == 0 for t in tried)
    if n < 32:
        assert n + n_step in tried  # the answer is bracketed: the next length tried failed
    assert len(tried) == len(set(tried)) <= 12


def test_sample_window_is_fixed_by_its_seed_and_fits():
    lengths = [5, 40, 12, 100]
    windows = {C.sample_window(lengths, 30, seed) for seed in range(20)}
    assert all(lengths[d] >= off + 30 and d in (1, 3) for d, off in windows)
    assert len(windows) > 1 and C.sample_window(lengths, 30, 3) == C.sample_window(lengths, 30, 3)
    with pytest.raises(AttnlabError, match="lower --n-max"):
        C.sample_window(lengths, 101, 0)


@pytest.fixture(scope="module")
def searched(tiny_lm, tmp_path_factory):
    out = tmp_path_factory.mktemp("capacity")
    config = C.CapacityConfig(model=tiny_lm, ms=(2,), seeds=1, max_steps=60, lr=0.1, n_max=24, n_start=4)
    row = C.search_one(config, 2, 0, out)
    probes = [json.loads(line) for line in (out / C.PROBES).read_text().splitlines()]
    return config, row, probes, out


def test_search_returns_the_largest_length_that_memorizes(searched):
    config, row, probes, _ = searched
    by_n = {p["n"]: p for p in probes}
    assert 0 < row["capacity"] < config.n_max, row  # both sides of the answer are tested below
    assert by_n[row["capacity"]]["memorized"] and not by_n[row["capacity"] + 1]["memorized"]
    assert all(p["memorized"] == (p["n"] <= row["capacity"]) for p in probes)
    assert row["steps"] == by_n[row["capacity"]]["steps"] and row["min_margin"] > 0


def test_saved_prompt_reproduces_its_text_with_generate(searched, tiny_lm):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    _, row, _, out = searched
    assert row["generated_exact"] and row["generated_prefix"] == row["capacity"]
    saved = load_file(str(out / row["prompt_file"]))
    assert saved["prompt"].shape == (2, 32) and saved["tokens"].shape == (row["capacity"],)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()  # plain transformers, loaded afresh
    with torch.no_grad():
        got = model.generate(inputs_embeds=saved["prompt"][None], max_new_tokens=row["capacity"], do_sample=False,
                             use_cache=False, pad_token_id=0)
    assert got[0].tolist() == saved["tokens"].tolist()
    with torch.no_grad():  # the check can fail: another prompt does not bring the text back
        other = model.generate(inputs_embeds=-saved["prompt"][None], max_new_tokens=row["capacity"],
                               do_sample=False, use_cache=False, pad_token_id=0)
    assert other[0].tolist() != saved["tokens"].tolist()


def test_cli_run_resumes_and_writes_record_and_plot(tiny_lm, tmp_path, run_cli):
    argv = ["memorize", "capacity", "--model", tiny_lm, "--m", "1", "2", "--seeds", "1", "--max-steps", "20",
            "--lr", "0.1", "--n-max", "6", "--n-start", "2", "-o", str(tmp_path / "run"), "--json", "--quiet"]
    rc, out, err = run_cli(*argv)
    assert rc == 0, err
    result = json.loads(out)
    assert [(r["m"], r["seed"]) for r in result["rows"]] == [(1, 0), (2, 0)]
    assert [t["m"] for t in result["summary"]] == [1, 2]
    run = tmp_path / "run"
    assert (run / "record.json").is_file() and (run / "capacity.png").is_file()
    record = json.loads((run / "record.json").read_text())
    assert record["env"]["cpu_model"] is not None and record["env"]["versions"]["torch"]
    probes = (run / C.PROBES).read_text()
    rc, out, err = run_cli(*argv[:5], "1", "2", "3", *argv[7:])  # one more m: only its search runs
    assert rc == 0, err
    assert (run / C.PROBES).read_text().startswith(probes)
    assert {json.loads(line)["m"] for line in (run / C.PROBES).read_text()[len(probes):].splitlines()} == {3}
    assert [r["m"] for r in json.loads(out)["rows"]] == [1, 2, 3]
    before = (run / C.PROBES).read_text()
    rc, _, err = run_cli(*[a if a != "0.1" else "0.2" for a in argv])  # another lr: another run
    assert rc == 2 and "different config" in err and len(err.strip().splitlines()) == 1
    assert (run / C.PROBES).read_text() == before


@pytest.mark.parametrize("flags, words", [
    (["--m", "0"], "--m"), (["--m", "1", "1"], "distinct"), (["--lr", "0"], "--lr"), (["--lr", "inf"], "--lr"),
    (["--n-max", "1"], "--n-max must be at least 2"), (["--n-start", "9"], "--n-start"),
    (["--n-step", "9"], "--n-step"),
    (["--n-max", "100000"], "lower --n-max"), (["--seeds", "0"], "--seeds"), (["--model", "no/such-model"], "model"),
    (["--max-steps", "-1"], "--max-steps")])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(flags, words, tiny_lm, tmp_path, run_cli):
    base = ["memorize", "capacity", "--model", tiny_lm, "--n-max", "8", "--n-start", "2", "-o", str(tmp_path / "run")]
    rc, _, err = run_cli(*base, *flags)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and words in err, err
    assert not (tmp_path / "run").exists()


def test_a_folder_without_results_is_named(tmp_path):
    with pytest.raises(AttnlabError, match="not a memorize capacity folder"):
        C.check_run_dir(tmp_path)


def test_summary_interval_needs_three_seeds(tmp_path):
    rows = [{"m": 1, "seed": s, "capacity": c, "censored": False, "generated_exact": True}
            for s, c in enumerate([10, 12, 14])] + [{"m": 2, "seed": 0, "capacity": 30, "censored": True,
                                                      "generated_exact": True}]
    one, two = C.summarize(rows)
    assert one["mean"] == 12 and one["ci"][0] < 10 < 14 < one["ci"][1] and one["tokens_per_vector"] == 12
    assert two["ci"] is None and two["censored"] and two["tokens_per_vector"] == 15
    assert C.plot(rows, tmp_path / "capacity.png", "t").read_bytes()[:4] == b"\x89PNG"


def test_the_gain_over_the_previous_m_is_paired_by_seed():
    """Each seed's window is the same at every m: the gain is the mean of per-seed differences (a seed missing
    at either m is left out), with a t interval from three pairs on."""
    caps = {1: [2, 0, 1, 5], 2: [6, 3, 9], 4: [10]}  # m -> capacity of seeds 0, 1, ...
    rows = [{"m": m, "seed": s, "capacity": c, "censored": False, "generated_exact": True}
            for m, cs in caps.items() for s, c in enumerate(cs)]
    one, two, four = C.summarize(rows)
    assert one["gain"] is None
    diffs = [4, 3, 8]
    assert two["gain"]["from_m"] == 1 and two["gain"]["n"] == 3 and two["gain"]["mean"] == pytest.approx(5)
    assert two["gain"]["ci"][0] < min(diffs) and two["gain"]["ci"][1] > max(diffs)
    assert four["gain"] == {"from_m": 2, "n": 1, "mean": 4.0, "ci": None}
