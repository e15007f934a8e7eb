"""Shared fixtures. Test media are read at run time from CAMEO_TEST_DATA (default: ../shared/data
beside the project); tests that need them skip with a clear reason when they are absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("CAMEO_TEST_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "faces").is_dir():
        pytest.skip(f"test media not found at {DATA} (set CAMEO_TEST_DATA to the data root)")
    return DATA
