"""Shared fixtures: one tiny base encoder per session, a fresh models root per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from factories import make_tiny_base


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_base(tmp_path_factory.mktemp("base"))


@pytest.fixture
def models_root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    return root
