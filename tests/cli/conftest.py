"""Fixtures shared by the command-line tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from corteza.client import make_dataset, save_dataset
from tests.conftest import TINY


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.npz"
    save_dataset(make_dataset(120, input_dim=TINY.input_dim, seed=1), path)
    return path
