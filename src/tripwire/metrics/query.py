"""The Python API of the metrics layer: load a workspace's metrics and query them.

>>> from tripwire.metrics.query import parse_time, parse_where
>>> parse_where("locale=en-GB")
Predicate(field='locale', op='eq', value='en-GB')
>>> parse_where("properties.latency_ms>=1500")
Predicate(field='properties.latency_ms', op='ge', value=1500.0)
>>> parse_time("2026-11-03").isoformat()
'2026-11-03T00:00:00+00:00'

Typical use::

    metrics = Metrics.open("path/to/workspace")
    table = metrics.query("voice_checkout_conversion", by=["locale"], grain="hour", since="7d")
    frame = metrics.query("orders", grain="day", pandas=True)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from ibis.backends import BaseBackend

from tripwire.metrics.compile import Grain
from tripwire.metrics.definitions import MetricBase, Predicate, parse_duration
from tripwire.metrics.loader import MetricCatalog, load_metrics
from tripwire.metrics.timeseries import (
    DEFAULT_TOP_N,
    Query,
    SeriesResult,
    data_end,
    metric_sql,
    timeseries,
)
from tripwire.store.engine import connect
from tripwire.store.workspace import Workspace

TimeLike = datetime | date | str | None
Anchor = Literal["now", "data"]

_WHERE = re.compile(r"^\s*([A-Za-z_$][\w.$]*)\s*(==|!=|>=|<=|=|>|<)\s*(.*?)\s*$")
_WHERE_OPS = {"=": "eq", "==": "eq", "!=": "ne", ">": "gt", ">=": "ge", "<": "lt", "<=": "le"}


def parse_where(text: str) -> Predicate:
    """``field=value`` / ``!=`` / ``>`` / ``>=`` / ``<`` / ``<=``; ``a|b`` means ``in``.

    Values read as numbers when they look like numbers, ``true``/``false`` as booleans.
    """
    match = _WHERE.match(text)
    if not match:
        raise ValueError(f"--where {text!r}: expected FIELD=VALUE (or != > >= < <=)")
    ref, op, raw = match.groups()
    if op in ("=", "==", "!=") and "|" in raw:
        values = [_scalar(v) for v in raw.split("|")]
        return Predicate(field=ref, op="in" if op != "!=" else "not_in", value=values)
    return Predicate(field=ref, op=_WHERE_OPS[op], value=_scalar(raw))  # type: ignore[arg-type]


def _scalar(raw: str) -> str | float | bool:
    text = raw.strip().strip("'\"")
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return float(text)
    except ValueError:
        return text


def parse_time(value: TimeLike, *, anchor: datetime | None = None) -> datetime | None:
    """A datetime (UTC) from a datetime, a date, an ISO string or a duration ago (``7d``).

    Durations count back from ``anchor`` (default: now). Naive datetimes are taken as UTC.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    text = str(value).strip()
    try:
        return (anchor or datetime.now(UTC)) - parse_duration(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise ValueError(
            f"time {text!r}: expected an ISO date/time or a duration like 7d"
        ) from error
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass
class Metrics:
    """A workspace's metric catalog bound to its query engine."""

    workspace: Workspace
    backend: BaseBackend
    catalog: MetricCatalog

    @classmethod
    def open(cls, workspace: Workspace | str | Path, *, check_lake: bool = True) -> Metrics:
        """Load definitions (raising on any definition error) and connect the engine."""
        ws = workspace if isinstance(workspace, Workspace) else Workspace.load(Path(workspace))
        catalog = load_metrics(ws, check_lake=check_lake)
        return cls(ws, connect(ws), catalog)

    def list(self) -> list[MetricBase]:
        """Every metric, in definition order."""
        return list(self.catalog)

    def get(self, name: str) -> MetricBase:
        return self.catalog[name]

    def build_query(
        self,
        *,
        by: Sequence[str] = (),
        grain: Grain | None = "hour",
        since: TimeLike = None,
        until: TimeLike = None,
        where: Sequence[str | Predicate] = (),
        top_n: int | None = DEFAULT_TOP_N,
        values: dict[str, Sequence[str]] | None = None,
        fill: bool = False,
        relative_to: Anchor = "now",
        approximate: bool = False,
    ) -> Query:
        """A :class:`Query`; relative times count back from now or from the data's end.

        ``approximate=True`` opts in to sketches for distinct counts and quantiles (see
        :mod:`tripwire.metrics.timeseries`); the default is exact.
        """
        end = parse_time(until)
        anchor = end
        if anchor is None and relative_to == "data":
            anchor = data_end(self.backend)
        return Query(
            grain=grain,
            dimensions=tuple(by),
            start=parse_time(since, anchor=anchor),
            end=end,
            where=tuple(w if isinstance(w, Predicate) else parse_where(w) for w in where),
            top_n=top_n,
            dimension_values={k: tuple(v) for k, v in values.items()} if values else None,
            fill=fill,
            approximate=approximate,
        )

    def series(self, names: Sequence[str], **query: Any) -> dict[str, SeriesResult]:
        """Several metrics at once (scalar ones share one scan); see :meth:`build_query`."""
        metrics = [self.catalog[n] for n in names]
        return timeseries(self.backend, metrics, self.build_query(**query))

    def query(self, name: str, *, pandas: bool = False, **query: Any) -> pa.Table | Any:
        """One metric's series as an Arrow table (a pandas frame with ``pandas=True``)."""
        table = self.series([name], **query)[name].table
        return table.to_pandas() if pandas else table

    def sql(self, name: str, **query: Any) -> str:
        """The SQL that computes the metric (what ``tripwire metrics show`` prints)."""
        return metric_sql(self.backend, self.catalog[name], self.build_query(**query))
