"""Shared test set-up: one torch thread (the CI box has 2 cores) and a private cache directory."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def run_cli(capsys):
    """Run the attnlab CLI in-process: returns (exit code, stdout, stderr)."""
    from attnlab.cli import main

    def run(*argv: str):
        rc = main([str(a) for a in argv])
        out = capsys.readouterr()
        return rc, out.out, out.err

    return run
