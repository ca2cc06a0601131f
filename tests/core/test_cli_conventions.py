"""Every command follows the conventions users expect: an example in each help page, help text on every
option, the common flags everywhere, and --overwrite wherever -o writes something."""

import argparse

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


LEAVES = [(p, parser) for p, parser in PAGES
          if p and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)]


@pytest.mark.parametrize("path, parser", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_commands_take_the_common_flags_and_overwrite_with_out(path, parser):
    flags = {s for a in parser._actions for s in a.option_strings}
    assert {"--seed", "--threads", "--json", "--quiet", "--debug"} <= flags, " ".join(path)
    if "--out" in flags:
        assert "--overwrite" in flags, f"`attnlab {' '.join(path)}` writes with -o but has no --overwrite"
