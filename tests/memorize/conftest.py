import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_and_a_seed():
    """Tests share 2 cores with other work: one intra-op thread is faster there. Seeded, so a failure
    reproduces (the assertions themselves hold for any draw)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)
