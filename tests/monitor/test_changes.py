"""The change log: scopes, recording from every source, queries RCA uses, and the CLI."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from tripwire.cli.main import app
from tripwire.monitor.changes import (
    Change,
    ChangeError,
    ChangeLog,
    changes_from_envelopes,
    parse_scope,
    touches,
)
from tripwire.store.workspace import init_workspace

T0 = datetime(2026, 11, 7, 18, 0, tzinfo=UTC)


def log() -> ChangeLog:
    return ChangeLog(sqlite3.connect(":memory:", isolation_level=None))


values = st.sampled_from(["a", "b", "c"])
scopes = st.dictionaries(st.sampled_from(["locale", "device", "intent"]), values, max_size=3)


@given(scopes, scopes)
def test_touches_is_symmetric_and_global_touches_all(scope: dict, segment: dict) -> None:
    assert touches(scope, segment) == touches(segment, scope)
    assert touches({}, segment)
    conflict = any(k in segment and segment[k] != v for k, v in scope.items())
    assert touches(scope, segment) == (not conflict)


def test_record_dedupes_and_queries() -> None:
    changes = log()
    cause = Change(
        T0 - timedelta(minutes=1),
        "deploy",
        "payments-token",
        "2.3.1",
        {"locale": "en-GB", "device": "Echo Show"},
    )
    decoy = Change(
        T0 - timedelta(minutes=30),
        "deploy",
        "voice-ux",
        "7.2.0",
        {"locale": "en-GB", "device": "Echo Dot"},
    )
    global_ = Change(T0 - timedelta(hours=1), "config", "cdn-cache-ttl", "1", {})
    old = Change(T0 - timedelta(hours=5), "deploy", "payments-token", "2.3.0", {})
    assert changes.record([cause, decoy, global_, old]) == 4
    assert changes.record(cause) == 0  # same content, same id
    segment = {"locale": "en-GB", "device": "Echo Show"}
    hits = changes.touching(segment, T0 - timedelta(hours=2), T0)
    assert [c.service for c in hits] == ["payments-token", "cdn-cache-ttl"]  # nearest first
    assert [c.version for c in changes.query(service="payments-token")] == ["2.3.0", "2.3.1"]
    assert [c.service for c in changes.query(since=T0 - timedelta(hours=2), kind="deploy")] == [
        "voice-ux",
        "payments-token",
    ]


def test_changes_from_events_and_bad_input() -> None:
    envelope = {
        "event": "$change",
        "messageId": "m1",
        "timestamp": "2026-11-07T17:59:00Z",
        "properties": {
            "kind": "deploy",
            "service": "payments-token",
            "version": "2.3.1",
            "scope": {"locale": "en-GB"},
            "rollback_of": None,
        },
    }
    (change,) = changes_from_envelopes([envelope, {"event": "Order Completed"}])
    assert (
        change.id == "evt_m1" and change.scope == {"locale": "en-GB"} and change.origin == "event"
    )
    with pytest.raises(ChangeError, match="kind: must be one of"):
        Change(T0, "rocket", "x")
    with pytest.raises(ChangeError, match="scope: must be"):
        changes_from_envelopes(
            [{**envelope, "properties": {**envelope["properties"], "scope": "en-GB"}}]
        )
    with pytest.raises(ChangeError, match="scope: expected DIMENSION=VALUE"):
        parse_scope(["locale"])
    assert parse_scope(["device=Echo Show|Echo Dot"]) == {"device": ["Echo Show", "Echo Dot"]}


def test_cli_change_add_and_list(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "change",
            "add",
            "--kind",
            "deploy",
            "--service",
            "payments-token",
            "--version",
            "2.3.1",
            "--scope",
            "locale=en-GB",
            "-w",
            str(ws.root),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "payments-token 2.3.1 (locale=en-GB)" in result.output
    listed = runner.invoke(
        app,
        ["changes", "--since", "1h", "--service", "payments-token", "--json", "-w", str(ws.root)],
    )
    assert listed.exit_code == 0, listed.output
    assert '"service": "payments-token"' in listed.output and '"locale": "en-GB"' in listed.output
    bad = runner.invoke(
        app, ["change", "add", "--kind", "rocket", "--service", "x", "-w", str(ws.root)]
    )
    assert bad.exit_code == 2 and "kind: must be one of" in bad.output
