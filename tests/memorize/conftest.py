import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests share 2 cores with other work: one intra-op thread is faster there (brief section 4.2)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
