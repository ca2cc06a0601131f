"""The nbl CLI end to end on a tiny checkpoint: collect, rank, apply (one-shot, sequential, drop), eval, bench."""

import json
import shlex

import pytest

from attnlab.cli import build_parser
from attnlab.nbl.registry import SELECTORS


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path


CAL = ["--tokens", "512", "--seq-len", "32", "--batch-size", "4"]


def test_rank_apply_eval_bench(tiny_checkpoint, cache, run_cli):
    rc, out, err = run_cli("nbl", "rank", tiny_checkpoint, *CAL, "--json")
    assert rc == 0, err
    rows = json.loads(out)
    assert [r["layer"] for r in rows] == [0, 1, 2, 3]
    assert set(rows[0]) == {"layer", *SELECTORS}
    assert all(0 <= r["cca"] <= 32 and r["nmse"] <= r["cca"] for r in rows)
    assert len(list((cache / "cache" / "nbl").glob("stats-*"))) == 1  # cached for the next command

    for extra, name in ((["--selector", "nmse"], "oneshot"), (["--sequential"], "seq"),
                        (["--method", "drop"], "drop")):
        rc, out, err = run_cli("nbl", "apply", tiny_checkpoint, "--layers", "2", *extra, *CAL, "-o", cache / name,
                               "--json")
        assert rc == 0, err
        result = json.loads(out)
        assert len(result["layers"]) == 2 and (cache / name / "nbl.json").exists()
        info = json.loads((cache / name / "nbl.json").read_text())
        assert info["layers"] == result["layers"] and info["calibration"]["tokens"] == 512
        if name != "drop":  # each map's error on 4096 held-out tokens beside its calibration error
            layers = sorted(map(int, info["heldout_nmse"]))
            assert layers == result["layers"] == sorted(map(int, result["fitted_nmse"]))
            assert info["heldout_tokens"] == 4096 and all(v > 0 for v in result["heldout_nmse"].values())
        # the record's command, parsed again, asks for the same model
        record = json.loads((cache / name / "record.json").read_text())
        again = build_parser().parse_args(shlex.split(record["command"])[1:])
        assert (again.layers, again.tokens, again.out, again.sequential) == (2, 512, str(cache / name),
                                                                             name == "seq")

    rc, out, err = run_cli("nbl", "eval", cache / "oneshot", "--against", tiny_checkpoint, "--tokens", "256",
                           "--seq-len", "32", "--greedy-tokens", "8", "--json", "-o", cache / "eval")
    assert rc == 0, err
    ev = json.loads(out)
    assert json.loads((cache / "eval" / "record.json").read_text())["metrics"]["perplexity"] == ev["perplexity"]
    assert ev["eval_tokens"] == 8 * 31 and 0 <= ev["top1_agreement"] <= 1 and ev["perplexity"] > 1
    assert set(ev["replaced"].values()) == {"nbl"} and ev["heldout"]["split"] == "heldout"

    rc, out, err = run_cli("nbl", "bench", cache / "drop", "--against", tiny_checkpoint, "--prompt-lengths", "16",
                           "--batch-sizes", "1", "--decode-tokens", "2", "--repeats", "1", "--json", "-o", cache / "b")
    assert rc == 0, err
    bench = json.loads(out)
    row = bench["rows"][0]
    assert bench["replaced"] == 2 and row["kv_cache_mb_model"] == pytest.approx(row["kv_cache_mb"] / 2)
    assert json.loads((cache / "b" / "record.json").read_text())["tables"][0]["rows"][0][0] == 1


@pytest.mark.parametrize("argv, message", [
    (["rank", "no/such/model"], "unknown model 'no/such/model'"),
    (["apply", "{ckpt}", "--layers", "9", "-o", "{tmp}/x"], "cannot replace 9 layers: the model has 4"),
    (["apply", "{ckpt}", "--layers", "4", "--keep", "0", "-o", "{tmp}/x"],
     "the model has 4, 1 of them kept (ask for 1..3)"),
    (["apply", "{ckpt}", "--layers", "1", "--keep", "7", "-o", "{tmp}/x"], "--keep [7]: no such layer"),
    (["rank", "{ckpt}", "--tokens", "100000000"], "fewer than the 100000000 requested"),
    (["rank", "{ckpt}", "--seq-len", "4096"], "exceeds the model's 256 positions"),
    (["apply", "{ckpt}", "--layers", "1", "-o", "{tmp}/x", "--tokens", "100", "--seq-len", "32"],  # 96 used
     "96 calibration tokens are too few for a well-posed fit of d = 32 (the map would reproduce its calibration "
     "text): give at least 128 (--tokens 128)"),
    (["eval", "{ckpt}", "--against", "minilm-not-a-model"], "unknown model"),
    (["rank", "{ckpt}", "--stats", "{tmp}/junk.safetensors"], "not an attnlab NBL statistics folder (a file)"),
])
def test_bad_input_is_one_line(argv, message, tiny_checkpoint, cache, run_cli):
    (cache / "junk.safetensors").write_bytes(b"garbage")
    argv = [a.format(ckpt=tiny_checkpoint, tmp=cache) for a in argv]
    own_calibration = argv[0] == "eval" or "--tokens" in argv or "--seq-len" in argv
    rc, out, err = run_cli("nbl", *argv, *([] if own_calibration else CAL))
    assert rc == 2, err
    assert message in err.strip().splitlines()[-1] and "Traceback" not in err


def test_stats_of_another_model_refused(tiny_checkpoint, cache, run_cli, tiny_model):
    other = cache / "other"
    tiny_model("llama").save_pretrained(other)
    rc, _, err = run_cli("nbl", "collect", tiny_checkpoint, *CAL, "-o", cache / "stats")
    assert rc == 0, err
    import shutil

    for f in tiny_checkpoint.iterdir():
        if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
            shutil.copy(f, other / f.name)
    rc, _, err = run_cli("nbl", "rank", other, *CAL, "--stats", cache / "stats")
    assert rc == 2 and "collected on another model" in err


def test_every_command_has_an_example_and_every_option_a_help():
    from attnlab.nbl.cli import _PARSERS

    build_parser()
    assert set(_PARSERS) == {"collect", "rank", "apply", "compare", "eval", "bench", "plan"}
    for name, parser in _PARSERS.items():
        assert parser.epilog.startswith("Example: attnlab nbl " + name), name
        assert all(a.help for a in parser._actions), [a.dest for a in parser._actions if not a.help]


@pytest.mark.parametrize("selector", SELECTORS)
def test_apply_offers_every_registered_selector(selector):
    args = build_parser().parse_args(["nbl", "apply", "m", "--layers", "1", "--selector", selector, "-o", "x"])
    assert args.selector == selector
