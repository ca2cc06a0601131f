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
    assert choose_device("auto") in ("cpu", "cuda", "mps")


@pytest.mark.parametrize("bad", ["tpu", "cpu:0", "cuda:x", "cuda:-1", "mps:1", ""])
def test_a_malformed_device_is_one_line(bad):
    with pytest.raises(AttnlabError, match="unknown device"):
        choose_device(bad)


def test_a_device_the_machine_lacks_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(AttnlabError, match="no CUDA GPU is available"):
        choose_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert choose_device("cuda:1") == "cuda:1"
    with pytest.raises(AttnlabError, match=r"has 2 CUDA GPU\(s\) \(use cuda:0 to cuda:1\)"):
        choose_device("cuda:2")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(AttnlabError, match="MPS backend is not available"):
        choose_device("mps")


def test_dtypes():
    from attnlab.core.runtime import DTYPES, torch_dtype

    assert [torch_dtype(name) for name in DTYPES] == [torch.float32, torch.bfloat16, torch.float16]
    with pytest.raises(AttnlabError, match="unknown dtype 'float8'"):
        torch_dtype("float8")


def test_environment_records_versions():
    env = environment()
    assert env["versions"]["torch"] == torch.__version__.split("+")[0] or env["versions"]["torch"] == torch.__version__
    assert env["versions"]["attnlab"]
    assert env["cpu_count"] >= 1 and env["torch_threads"] >= 1
