import json

import pytest

from attnlab.core.records import RunRecord
from attnlab.tour import run_tour


def test_no_command_and_help(run_cli):
    rc, out, err = run_cli()
    assert rc == 2 and "usage" in err
    rc, out, _ = run_cli("--help")
    assert rc == 0 and "tour" in out and "info" in out


@pytest.mark.parametrize("argv, message", [
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["tour", "--threads", "x"], "argument --threads: expected a positive integer, got 'x'"),
    (["tour", "--seed", "-3"], "expected a non-negative integer"),
    (["tour", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["report", "/no/such/dir"], "no such file or directory: /no/such/dir"),
    (["tour", "--only", "nonexistent"], "unknown or not installed module(s): nonexistent"),
])
def test_bad_input_is_one_line_and_exit_2(run_cli, argv, message):
    rc, out, err = run_cli(*argv)
    assert rc == 2
    assert out == ""
    assert err.count("\n") == 1, err  # exactly one line, no traceback
    assert message in err
    assert "Traceback" not in err


def test_debug_shows_traceback(run_cli):
    rc, _, err = run_cli("report", "/no/such/dir", "--debug")
    assert rc == 2 and "Traceback" in err and err.strip().endswith("no such file or directory: /no/such/dir")


def test_internal_error_exits_1(run_cli, monkeypatch):
    import attnlab.cli

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(attnlab.cli, "_cmd_info", broken)
    rc, _, err = run_cli("info")
    assert rc == 1
    assert err.count("\n") == 1 and "internal error: ZeroDivisionError" in err


def test_info_json(run_cli):
    rc, out, err = run_cli("info", "--json")
    assert rc == 0
    info = json.loads(out)  # stdout holds the JSON object and nothing else
    assert info["versions"]["torch"] and info["cache_dir"] and set(info["packaged_models"]) == {"smollm2", "minilm"}


def test_tour_core_and_report_command(tmp_path, run_cli):
    rc, out, err = run_cli("tour", "--only", "core", "-o", tmp_path / "rep", "--json")
    assert rc == 0
    result = json.loads(out)
    assert result["status"] == {"core": "ok"}
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "data:image/png;base64," in html and "attnlab tour --only core" in html
    rec = RunRecord.load(tmp_path / "rep" / "core" / "record.json")
    assert rec.metrics["calibration_documents"] > rec.metrics["heldout_documents"] > 0
    assert "[1/1] core (expected about" in err and "quick profile" in err
    rc, out, _ = run_cli("report", tmp_path / "rep", "-o", tmp_path / "again.html")
    assert rc == 0 and (tmp_path / "again.html").exists() and (tmp_path / "again.md").exists() and "1 records" in out


def test_tour_and_report_never_overwrite_silently(tmp_path, run_cli):
    rep = tmp_path / "rep"
    assert run_cli("tour", "--only", "core", "-o", rep, "--quiet")[0] == 0
    before = (rep / "index.html").read_bytes()
    rc, _, err = run_cli("tour", "--only", "core", "-o", rep, "--quiet")
    assert rc == 2 and err.count("\n") == 1 and "--overwrite" in err
    assert (rep / "index.html").read_bytes() == before
    assert run_cli("tour", "--only", "core", "-o", rep, "--quiet", "--overwrite")[0] == 0
    # report -o DIR/x.html writes x.md beside it and never touches DIR/index.md
    index_md = (rep / "index.md").read_bytes()
    assert run_cli("report", rep, "-o", rep / "x.html")[0] == 0
    assert (rep / "index.md").read_bytes() == index_md and (rep / "x.md").exists()
    rc, _, err = run_cli("report", rep, "-o", rep / "x.html")
    assert rc == 2 and err.count("\n") == 1 and "--overwrite" in err


def test_report_names_a_malformed_record(tmp_path, run_cli):
    good = RunRecord(name="ok", title="fine", command="attnlab x", seed=0)
    good.save(tmp_path / "a" / "record.json")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "record.json").write_text("{torn")
    bad = good.to_dict() | {"metrics": [1, 2]}
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "record.json").write_text(json.dumps(bad))
    rc, out, err = run_cli("report", tmp_path, "-o", tmp_path / "r.html", "--json")
    assert rc == 0 and json.loads(out)["records"] == 3
    assert "b/record.json" in err and "c/record.json: malformed run record: metrics is not dict" in err
    html = (tmp_path / "r.html").read_text()
    assert html.count("unreadable record") >= 2 and "[failed]" in html


def test_tour_keeps_going_when_a_module_fails(tmp_path, monkeypatch):
    import attnlab.tour as tour

    def boom(out_dir, seed, full):
        raise RuntimeError("module exploded")

    monkeypatch.setattr(tour, "tour_functions",
                        lambda only=None: [("broken", boom, {}), ("core", tour.core_tour, {"quick": 1})])
    result = run_tour(tmp_path / "rep", seed=1)
    tmp_path = tmp_path / "rep"
    assert result["status"] == {"broken": "failed", "core": "ok"}
    failed = RunRecord.load(tmp_path / "broken" / "record.json")
    assert "RuntimeError: module exploded" in failed.error
    html = (tmp_path / "index.html").read_text()
    assert "module exploded" in html and "[failed]" in html


def test_a_broken_module_does_not_break_the_cli(run_cli, monkeypatch):
    import importlib

    import attnlab.cli

    real = importlib.import_module

    def fake_import(name, *a, **k):
        if name.endswith(".cli") and name != "attnlab.cli":
            raise ImportError("simulated missing dependency")
        return real(name, *a, **k)

    monkeypatch.setattr(attnlab.cli, "available_modules", lambda: ["machines"])
    monkeypatch.setattr(attnlab.cli.importlib, "import_module", fake_import)
    rc, out, _ = run_cli("info", "--json")
    assert rc == 0 and json.loads(out)["attnlab"]
    rc, _, err = run_cli("machines", "run", "bb4")
    assert rc == 1 and "attnlab.machines failed to load (ImportError: simulated missing dependency)" in err


def test_a_bare_command_group_prints_its_own_help(run_cli, monkeypatch):
    import argparse

    from attnlab import cli

    def register(sub, common):
        group = sub.add_parser("fake", parents=[common], help="a fake module")
        group.add_subparsers(dest="fake_command").add_parser("go")

    monkeypatch.setattr(cli, "available_modules", lambda: ["fake"])
    monkeypatch.setattr(cli.importlib, "import_module",
                        lambda name: argparse.Namespace(register=register))
    rc, out, err = run_cli("fake")
    assert rc == 2
    assert err.startswith("usage: attnlab fake")


@pytest.mark.parametrize("group", ["machines", "memorize", "nbl", "detr", "depth"])
def test_every_module_group_alone_prints_its_help(run_cli, group):
    rc, out, err = run_cli(group)
    assert rc == 2 and err.startswith(f"usage: attnlab {group}") and "Traceback" not in err


@pytest.mark.parametrize("case", ["tour-into-file", "tour-unwritable", "report-unwritable", "report-into-folder",
                                  "report-no-records"])
def test_bad_outputs_are_one_line_and_lose_nothing(tmp_path, run_cli, case):
    blocker = tmp_path / "blocker.txt"
    blocker.write_text("keep me")
    good = RunRecord(name="ok", title="fine", command="attnlab x", seed=0)
    good.save(tmp_path / "runs" / "record.json")
    (tmp_path / "empty").mkdir()
    if case.endswith("unwritable") and not (tmp_path.root and __import__("os").path.isdir("/sys/kernel")):
        pytest.skip("needs Linux sysfs for a place unwritable even by root")
    argv = {"tour-into-file": ["tour", "--only", "core", "-o", blocker],
            "tour-unwritable": ["tour", "--only", "core", "-o", "/sys/attnlab-test/rep"],
            "report-unwritable": ["report", tmp_path / "runs", "-o", "/sys/attnlab-test/r.html"],
            "report-into-folder": ["report", tmp_path / "runs", "-o", blocker / "r.html"],
            "report-no-records": ["report", tmp_path / "empty", "-o", tmp_path / "r.html"]}[case]
    rc, out, err = run_cli(*argv)
    assert rc == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert ".partial" not in err and blocker.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker.txt", "empty", "runs"]
