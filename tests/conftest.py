"""Shared test set-up: deterministic seeds and a thread count that suits a 2-core machine."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield
