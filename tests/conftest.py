"""Fixtures shared by every test module."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only shared material (``shared/fixtures``) next to the repository root."""
    path = Path(__file__).resolve().parents[1].parent / "shared"
    if not path.is_dir():
        pytest.fail(f"shared material not found at {path}: the tests need the 'shared' folder next to the repository")
    return path
