"""Every command follows the conventions users expect: an example in each help page, help text on every
option, the common flags everywhere, and --overwrite wherever -o writes something."""

import argparse
import sys

import pytest

from attnlab.cli import build_parser


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, path + (name,))


PAGES = list(_walk(build_parser()))


@pytest.mark.parametrize("path, parser", PAGES, ids=[" ".join(p) or "attnlab" for p, _ in PAGES])
def test_help_page_has_an_example_and_every_option_has_help(path, parser):
    assert parser.epilog and "Example" in parser.epilog, f"`attnlab {' '.join(path)} --help` has no example"
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)):
            continue
        assert action.help and action.help.strip(), f"`attnlab {' '.join(path)}`: {action.dest} has no help"
    page = parser.format_help()  # descriptions are printed as written, option help %-formatted: no "%%" left over
    assert "%%" not in page and ") (default: refuse" not in page, f"{path}: stray %% or ) ("


LEAVES = [(p, parser) for p, parser in PAGES
          if p and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)]


@pytest.mark.parametrize("path, parser", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_commands_take_the_common_flags_and_overwrite_with_out(path, parser):
    flags = {s for a in parser._actions for s in a.option_strings}
    assert {"--seed", "--threads", "--json", "--quiet", "--debug"} <= flags, " ".join(path)
    if "--out" in flags:
        assert "--overwrite" in flags, f"`attnlab {' '.join(path)}` writes with -o but has no --overwrite"


GRIDS = {"memorize sweep": ["memorize", "sweep", "grid.yaml"], "depth sweep": ["depth", "sweep", "grid.yaml"],
         "detr compare": ["detr", "compare", "--data", "data"],
         "nbl compare": ["nbl", "compare", "model", "--layers", "1", "--configs", "nbl/cca"]}


def test_every_grid_command_has_the_grid_flags():
    commands = {" ".join(p): parser for p, parser in LEAVES}
    for name, argv in GRIDS.items():
        flags = {s for a in commands[name]._actions for s in a.option_strings}
        assert {"--backend", "--ray-address", "--device"} <= flags and flags & {"--workers", "--jobs"}, name


@pytest.mark.parametrize("name", GRIDS)
@pytest.mark.parametrize("flags, words", [(["--backend", "ray"], "pip install 'attnlab[ray]'"),
                                          (["--backend", "ray", "--device", "cuda:1"], "--device cuda:1 with"),
                                          (["--ray-address", "auto"], "--ray-address needs --backend ray")],
                         ids=["ray missing", "numbered GPU on Ray", "address without Ray"])
def test_grid_options_that_cannot_work_are_one_line_before_anything_is_written(name, flags, words, tmp_path,
                                                                                monkeypatch, run_cli):
    import torch

    monkeypatch.chdir(tmp_path)
    (tmp_path / "grid.yaml").write_text("experiments: {n_pairs: {n_pairs: [4]}}\nbudgets: [1000]\ndepths: [1]\n")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # so that cuda:1 passes the device check
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    if "pip install" in words:
        monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    rc, out, err = run_cli(*GRIDS[name], "-o", "out", *flags)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and words in err, err
    assert not (tmp_path / "out").exists()
