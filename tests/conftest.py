"""Shared test set-up: deterministic seeds, and no process-wide float mode leaking from one test to the next."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield
    # The pipeline flushes subnormal floats for speed (hairclip.device.prepare); hypothesis refuses to
    # generate floats while that processor mode is on, so each test starts without it.
    torch.set_flush_denormal(False)
