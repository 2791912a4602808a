"""Suite-wide settings."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # The suite's tensors are tiny: one intra-op thread is as fast, and avoids
    # OpenMP spin-waits when other processes share the cores.
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
