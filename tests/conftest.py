"""Shared fixtures: tiny configs on the synthetic data, the optional ../shared/data folder."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from studylib import RunConfig
from studylib.datasets import load_dataset

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

torch.set_num_threads(2)


def tiny_config(**changes) -> RunConfig:
    """Seconds-long runs: tinycnn, 16 px crops, a few hundred synthetic images."""
    base = dict(backbone="tinycnn", image_size=16, synthetic_size=160, batch_size=32, max_epochs=3,
                patience=10, quiet=True, device="cpu")
    return RunConfig.from_dict({**base, **changes})


@pytest.fixture
def tiny():
    return tiny_config


@pytest.fixture(scope="session")
def tiny_data():
    return load_dataset(tiny_config(), progress=False)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (it only exists beside the project checkout)")
    return SHARED_DATA
