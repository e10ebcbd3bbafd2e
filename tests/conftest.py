import pytest
import torch


@pytest.fixture(autouse=True)
def _fixed_threads():
    torch.manual_seed(0)
    yield
