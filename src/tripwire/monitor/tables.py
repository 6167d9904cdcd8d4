"""Rich tables of alerts (shared by the CLI and the demo step)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rich.table import Table

from tripwire.monitor.alerts import Alert


def _hhmm(moment: datetime | None) -> str:
    return "—" if moment is None else moment.strftime("%m-%d %H:%M")


def _num(value: float | None) -> str:
    if value is None or value != value:
        return "—"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def alerts_table(alerts: Sequence[Alert], title: str) -> Table:
    """A Rich table of alerts with onset, observed vs expected and matching changes."""
    table = Table(title=title)
    for col in (
        "id",
        "sev",
        "status",
        "monitor / rule",
        "segment",
        "opened",
        "onset",
        "observed",
        "expected [interval]",
        "changes before onset",
    ):
        table.add_column(col, justify="right" if col in ("id", "observed") else "left")
    for a in alerts:
        interval = (
            f"{_num(a.expected)} [{_num(a.lower)}, {_num(a.upper)}]"
            if a.lower is not None
            else _num(a.expected)
        )
        changes = (
            "; ".join(
                f"{c['kind']} {c['service']} {c['version']} @{c['at'][11:16]}"
                for c in a.changes[:3]
            )
            or "—"
        )
        status = (
            a.status
            + ("" if a.is_group_head else f" (group {a.group_id})")
            + (" silenced" if a.silenced else "")
        )
        table.add_row(
            str(a.id),
            a.severity,
            status,
            f"{a.monitor} / {a.rule}",
            a.segment_text,
            _hhmm(a.opened_at),
            _hhmm(a.onset_at),
            _num(a.observed),
            interval,
            changes,
        )
    return table
