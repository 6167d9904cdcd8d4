"""The dashboard's bounded queries read only their days' partitions and still return the
rows of a scan of the whole lake (the demo workspace: a KPI rate, a funnel, a breakdown)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tripwire.web.data import DEFAULT_KPI, DashboardData


@pytest.mark.parametrize(
    ("metric", "by"),
    [(DEFAULT_KPI, []), ("voice_checkout_funnel", []), ("events_by_source", ["source"])],
)
def test_bounded_series_equal_the_open_ended_ones(world: Any, metric: str, by: list[str]) -> None:
    data = DashboardData(world.workspace)
    try:
        end = data.end()  # just after the newest event
        since = end.replace(minute=0, second=0, microsecond=0) - timedelta(hours=30)
        common = {"grain": "hour", "by": by, "since": since, "top_n": None}
        # bounded (the dashboard's queries): reads the 2 date partitions of the 30 hours
        pruned = data._series(metric, until=end + timedelta(seconds=1), **common)
        # open-ended: reads every date partition; no event is after ``end``
        whole = data._series(metric, **common)
        key = lambda r: tuple(str(v) for v in r.values())  # noqa: E731
        assert pruned and sorted(pruned, key=key) == sorted(whole, key=key)
    finally:
        data.close()
