"""Fixtures for every test. Helpers live in support.py (importable as `support`: pytest puts this folder on
sys.path)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def converted_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("converted")
