import json
import shutil

import pytest

TRAIN = ["--d-model", "32", "--queries", "8", "--batch-size", "8", "--image-size", "32", "--threads", "1",
         "--device", "cpu"]


def _one_line_error(rc, err, fragment):
    assert rc == 2
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("attnlab: error:") and fragment in last, err


def test_bare_detr_prints_help(run_cli):
    rc, out, err = run_cli("detr")
    assert rc == 2 and "make-data" in err and "compare" in err


def test_make_data_train_eval_predict(run_cli, tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    rc, out, _ = run_cli("detr", "make-data", "synthetic-digits", "-o", data, "--n-train", "16", "--n-val", "4",
                         "--image-size", "32", "--max-size", "14", "--json")
    assert rc == 0 and json.loads(out)["splits"]["train"]["images"] == 16
    rc, out, _ = run_cli("detr", "train", "--data", data, "--dac", "--epochs", "1", "-o", run, "--json", *TRAIN)
    res = json.loads(out)
    assert rc == 0 and res["steps"] == 2 and "AP50" in res["final"]
    from attnlab.detr.train import load_run

    assert res["parameters"] == sum(p.numel() for p in load_run(run)[1].parameters()) > 10_000
    rec = json.loads((run / "config.json").read_text())
    assert rec["train"]["seed"] == 0 and rec["train"]["model"]["dac"] is True and rec["env"]["versions"]["torch"]
    rc, out, _ = run_cli("detr", "eval", run, "--json", "-o", tmp_path / "eval")
    ev = json.loads(out)
    assert rc == 0 and ev["AP"] == res["final"]["AP"] and "queries_per_object@0.7" in ev
    assert ev["annotations_as_recorded"] is True
    assert json.loads((tmp_path / "eval" / "record.json").read_text())["metrics"]["AP"] == ev["AP"]
    rc, out, _ = run_cli("detr", "predict", run, data / "val" / "000001.png", "-o", tmp_path / "pred",
                         "--threshold", "0", "--json")
    pred = json.loads(out)
    assert rc == 0 and (tmp_path / "pred" / "000001_detections.png").is_file()
    assert len(pred["results"][0]["detections"]) > 0
    assert pred["results"][0]["drawn"] == str(tmp_path / "pred" / "000001_detections.png")
    assert json.loads((tmp_path / "pred" / "record.json").read_text())["metrics"]["images"] == 1


def test_a_run_records_the_command_that_reproduces_its_config(run_cli, tiny_data, tmp_path):
    from attnlab.cli import build_parser
    from attnlab.detr.cli import _train_config
    from attnlab.detr.train import TrainConfig

    run = tmp_path / "run"
    flags = ["--data", str(tiny_data), "--epochs", "1", "--lr", "0.002", "--cls-loss", "ia_bce", "--o2m-topk", "3",
             "--no-shared-first-self-attn", "--dac", "--seed", "4", *TRAIN]
    assert run_cli("detr", "train", *flags, "-o", run, "--quiet")[0] == 0
    rec = json.loads((run / "record.json").read_text())
    argv = rec["command"].split()[1:]
    assert argv[:2] == ["detr", "train"] and rec["notes"] == []
    again = _train_config(build_parser().parse_args(argv), dac="--dac" in argv)
    assert again.result_keys() == TrainConfig(**rec["config"]).result_keys()


@pytest.fixture
def copy_of(tiny_data, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(tiny_data, dst)
    return dst


def test_malformed_coco_json_is_a_one_line_error(run_cli, copy_of, tmp_path):
    (copy_of / "annotations" / "instances_train.json").write_text('{"images": [')
    rc, _, err = run_cli("detr", "train", "--data", copy_of, "-o", tmp_path / "run", *TRAIN)
    _one_line_error(rc, err, "malformed COCO JSON")


def test_missing_image_is_a_one_line_error(run_cli, copy_of, tmp_path):
    (copy_of / "train" / "000003.png").unlink()
    rc, _, err = run_cli("detr", "train", "--data", copy_of, "-o", tmp_path / "run", *TRAIN)
    _one_line_error(rc, err, "000003.png")


def test_empty_annotations_is_a_one_line_error(run_cli, copy_of, tmp_path):
    path = copy_of / "annotations" / "instances_train.json"
    coco = json.loads(path.read_text())
    path.write_text(json.dumps({**coco, "annotations": []}))
    rc, _, err = run_cli("detr", "train", "--data", copy_of, "-o", tmp_path / "run", *TRAIN)
    _one_line_error(rc, err, "no usable")


def test_checkpoint_from_another_configuration_is_a_one_line_error(run_cli, tiny_data, tmp_path):
    run = tmp_path / "run"
    assert run_cli("detr", "train", "--data", tiny_data, "--epochs", "1", "-o", run, *TRAIN)[0] == 0
    rc, _, err = run_cli("detr", "train", "--data", tiny_data, "--epochs", "1", "-o", run, *TRAIN, "--queries", "12")
    _one_line_error(rc, err, "another configuration")
    cfg = json.loads((run / "config.json").read_text())
    cfg["train"]["model"]["num_queries"] = 12
    (run / "config.json").write_text(json.dumps(cfg))
    rc, _, err = run_cli("detr", "eval", run)
    _one_line_error(rc, err, "another model configuration")


def test_not_a_run_and_missing_image_are_one_line_errors(run_cli, tmp_path):
    rc, _, err = run_cli("detr", "eval", tmp_path)
    _one_line_error(rc, err, "is not a detr run")
    rc, _, err = run_cli("detr", "train", "--data", tmp_path / "nope", "-o", tmp_path / "r", *TRAIN)
    _one_line_error(rc, err, "make-data")


def test_more_deformable_levels_than_backbone_stages_is_a_one_line_error(run_cli, tiny_data, tmp_path):
    rc, _, err = run_cli("detr", "train", "--data", tiny_data, "--deformable-levels", "9", "-o", tmp_path / "r",
                         *TRAIN)
    _one_line_error(rc, err, "deformable_levels must be 0")


def _documented_commands(section: str) -> list[list[str]]:
    """The `attnlab detr ...` commands of the bash blocks in docs/detr.md's ``section`` (up to the next
    ``## `` heading), continuation lines joined, comments dropped."""
    import re
    import shlex
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "detr.md").read_text(encoding="utf-8")
    body = text.split(section, 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", body, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:2] == ["attnlab", "detr"]:
                commands.append(words[1:])
    return commands


def test_the_documented_hf_commands_parse():
    from attnlab.cli import build_parser

    commands = _documented_commands("## DAC on Hugging Face's Deformable DETR")
    assert {c[1] for c in commands} >= {"train", "eval", "compare"}
    assert any("--from-pretrained" in c and "--dac" in c for c in commands)        # the fine-tune recipe
    parser = build_parser()
    for words in commands:
        args = parser.parse_args(words)                  # an unknown or malformed flag exits 2 here
        assert args.detr_command == words[1]


@pytest.mark.parametrize("preset", ["cpu", "gpu"])
def test_the_dac_benchmark_commands_parse_and_validate(preset, tmp_path):
    import importlib.util
    from pathlib import Path

    from attnlab.cli import build_parser
    from attnlab.detr.cli import _train_config

    script = Path(__file__).parents[2] / "benchmarks" / "detr_dac.py"
    spec = importlib.util.spec_from_file_location("detr_dac", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    plan = bench.commands(preset, tmp_path, seeds=5, jobs=2)
    assert [c[1] for c in plan] == ["make-data", "compare", "compare"]
    assert "--official-dac" in plan[2] and "--official-dac" not in plan[1]
    for argv in plan[1:]:
        args = build_parser().parse_args(argv)
        cfg = _train_config(args, dac=args.official_dac)     # the model options validate (levels, heads, sizes)
        assert cfg.model["num_queries"] >= 100 and cfg.model["dec_layers"] == 6
    assert len(bench.commands(preset, tmp_path, 5, 1, only="dac")) == 2
