"""Shared fixtures for the test suite."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny annotated toy-car dataset, generated once per session: 6 objects x 5 views at 32 px, seed 0.

    Layout and annotations as in :mod:`featurenerf.data.annotations`; splits 0.7/0.1/0.2 by object
    (4 train, 1 val, 1 test). Treat it as read-only: it is shared by every test of the session.
    """
    from featurenerf.data.synth import generate_dataset

    return generate_dataset(
        "toycar", tmp_path_factory.mktemp("toycar"), objects=6, views=5, size=32, seed=0, progress=False
    )


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    tiny tensors gain nothing from threads, and on a shared, busy machine spinning OpenMP threads make
    each call up to 100x slower; the setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
