import pytest
import torch

from attnlab.core.errors import AttnlabError
from attnlab.core.runtime import choose_device, environment, seed_everything, set_threads


def test_seed_makes_runs_repeatable():
    seed_everything(7)
    a = torch.randn(4)
    seed_everything(7)
    assert torch.equal(a, torch.randn(4))
    with pytest.raises(AttnlabError):
        seed_everything(-1)


def test_threads_and_device():
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(AttnlabError, match="at least 1"):
        set_threads(0)
    assert choose_device("cpu") == "cpu"
    assert choose_device("auto") in ("cpu", "cuda")
    with pytest.raises(AttnlabError, match="unknown device"):
        choose_device("tpu")


def test_environment_records_versions():
    env = environment()
    assert env["versions"]["torch"] == torch.__version__.split("+")[0] or env["versions"]["torch"] == torch.__version__
    assert env["versions"]["attnlab"]
    assert env["cpu_count"] >= 1 and env["torch_threads"] >= 1
