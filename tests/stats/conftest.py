"""Fixtures shared by the stats tests."""

from __future__ import annotations

from typing import Any

import pytest

from .reference_results import load_reference


@pytest.fixture(scope="session")
def reference() -> dict[str, Any]:
    """The reference engines' results (skips when ``../shared`` is absent)."""
    return load_reference()
