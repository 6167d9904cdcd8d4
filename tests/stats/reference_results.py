"""The reference engines' results on shared fixtures (``shared/reference-results/stats``).

GrowthBook's gbstats, tea-tasting and spotify-confidence were run on the same sufficient
statistics; tests compare tripwire's results with theirs. The folder sits beside the repo
(``../shared``); without it the tests that need it are skipped with a message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REFERENCE = Path(__file__).parents[3] / "shared" / "reference-results" / "stats" / "reference.json"


def load_reference() -> dict[str, Any]:
    """The parsed reference file, or a skip naming where it was looked for."""
    if not REFERENCE.exists():
        pytest.skip(
            f"reference results not found at {REFERENCE} (shared/ must sit beside the repo)"
        )
    return json.loads(REFERENCE.read_text())  # type: ignore[no-any-return]


def arms_of(reference: dict[str, Any], fixture: str) -> dict[str, dict[str, Any]]:
    """The fixture's sufficient statistics, one row per arm, keyed by arm name."""
    return {row["arm"]: row for row in reference["fixtures"][fixture]["sufficient_stats"]}


def assert_close(actual: Any, expected: Any, rtol: float = 1e-10, atol: float = 1e-13) -> None:
    """Agreement to the engines' own precision (they agree with each other to ~1e-12)."""
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)
