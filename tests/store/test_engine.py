"""The engine connection and the field-reference resolver."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tripwire.store.engine import (
    JOIN_ORDER_OPTIMIZERS,
    UnknownField,
    column_for,
    connect,
    connect_lake,
    engine_name,
    events_table,
    field_kind,
    joins_as_written,
    register_events,
    resolve_field,
)
from tripwire.store.lake import write_events
from tripwire.store.workspace import Workspace, init_workspace

EVENT = {
    "messageId": "m1",
    "type": "track",
    "event": "Turn Completed",
    "userId": "u1",
    "timestamp": "2026-11-02T10:00:00Z",
    "receivedAt": "2026-11-02T10:05:30Z",
    "properties": {
        "latency_ms": 120,
        "intent": "returns",
        "nested": {"a": {"b": 7}},
        "session_id": "s1",
    },
    "context": {
        "locale": "de-DE",
        "device": {"model": "Echo Show"},
        "app": {"version": "5.1"},
        "os": {"name": "Fire OS"},
        "traits": {"tenure": "loyal"},
        "campaign": {"source": "mail"},
    },
}


def _select(backend, table, **exprs):
    return backend.to_pyarrow(table.select(**exprs)).to_pylist()[0]


def test_references_resolve_to_columns_json_and_derived(tmp_path: Path) -> None:
    write_events(tmp_path, [EVENT])
    backend = connect_lake(tmp_path)
    table = events_table(backend)
    row = _select(
        backend,
        table,
        latency=resolve_field(table, "properties.latency_ms"),
        intent=resolve_field(table, "properties.intent"),
        locale=resolve_field(table, "context.locale"),
        device=resolve_field(table, "context.device.model"),
        version=resolve_field(table, "context.app.version"),
        tenure=resolve_field(table, "context.traits.tenure"),
        tenure2=resolve_field(table, "traits.tenure"),
        session=resolve_field(table, "properties.session_id"),
        nested=resolve_field(table, "properties.nested.a.b", "double"),
        campaign=resolve_field(table, "context.campaign.source"),
        late=resolve_field(table, "lateness_seconds"),
        source=resolve_field(table, "event"),
    )
    assert row == {
        "latency": 120.0,
        "intent": "returns",
        "locale": "de-DE",
        "device": "Echo Show",
        "version": "5.1",
        "tenure": "loyal",
        "tenure2": "loyal",
        "session": "s1",
        "nested": 7.0,
        "campaign": "mail",
        "late": 330.0,
        "source": "Turn Completed",
    }
    assert column_for("properties.latency_ms", set(table.columns)) == "prop_latency_ms"
    assert field_kind(table, "properties.latency_ms") == "double"
    assert field_kind(table, "properties.nested.a.b") is None
    with pytest.raises(UnknownField, match="unknown field 'lokale'"):
        resolve_field(table, "lokale")


def test_empty_lake_has_the_envelope_and_view_refreshes(tmp_path: Path) -> None:
    backend = connect_lake(tmp_path)
    table = events_table(backend)
    assert {"event", "timestamp", "locale", "properties"} <= set(table.columns)
    assert backend.to_pyarrow(table.count().as_table()).to_pylist()[0] is not None
    write_events(tmp_path, [EVENT])
    register_events(backend, tmp_path)
    assert backend.to_pyarrow(events_table(backend).count().as_table()).column(0)[0].as_py() == 1


def test_workspace_engine_setting(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    assert engine_name(ws) == "duckdb"
    assert connect(ws).name == "duckdb"
    spark = Workspace(root=ws.root, config={"engine": {"query": "spark"}})
    assert engine_name(spark) == "spark"
    with pytest.raises(ValueError, match="engine.query must be duckdb or spark"):
        engine_name(Workspace(root=ws.root, config={"engine": {"query": "oracle"}}))


def test_timestamps_are_utc(tmp_path: Path) -> None:
    write_events(tmp_path, [EVENT])
    backend = connect_lake(tmp_path)
    table = events_table(backend)
    (row,) = backend.to_pyarrow(table.select("timestamp")).to_pylist()
    assert row["timestamp"] == datetime(2026, 11, 2, 10, tzinfo=UTC)


# --------------------------------------------------------------------------- event subsets


def _event(i: int, name: str, day: int, props: dict) -> dict:
    return {
        "messageId": f"m{i}",
        "type": "track",
        "event": name,
        "userId": f"u{i % 7}",
        "timestamp": f"2026-11-0{day}T{i % 24:02d}:00:00Z",
        "receivedAt": f"2026-11-0{day}T{i % 24:02d}:00:05Z",
        "properties": props,
        "context": {"locale": ["de-DE", "en-GB"][i % 2]},
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_event_subset_equals_the_filtered_whole_table(tmp_path: Path, seed: int) -> None:
    """The partition-pruned table has the whole table's schema and exactly its rows of
    those events, whatever properties each event's files carry (random lakes written in
    several batches, names needing URL quoting, names absent from the lake)."""
    import random

    rng = random.Random(seed)
    names = ["Turn Completed", "Order Completed", "Weird / Név's [x]*?", "$identify"]
    keys = ["latency_ms", "intent", "revenue", "flag"]
    i = 0
    for day in (2, 3, 4):
        batch = []
        for _ in range(rng.randint(5, 40)):
            name = rng.choice(names[: rng.randint(1, len(names))])
            props = {k: rng.choice([1.5, "a", True, None]) for k in rng.sample(keys, 2)}
            batch.append(_event(i, name, day, props))
            i += 1
        write_events(tmp_path, batch)
    backend = connect_lake(tmp_path)
    whole = events_table(backend)
    for subset in ([names[0]], names[1:3], names, ["Never Seen"], [names[2], "Never Seen"]):
        part = events_table(backend, subset)
        assert part.schema() == whole.schema()
        got = backend.to_pyarrow(part.order_by("message_id")).to_pylist()
        want = backend.to_pyarrow(
            whole.filter(whole.event.isin(subset)).order_by("message_id")
        ).to_pylist()
        assert got == want, subset


def test_event_subset_sees_files_written_after_connecting(tmp_path: Path) -> None:
    write_events(tmp_path, [EVENT])
    backend = connect_lake(tmp_path)

    def count() -> int:
        table = events_table(backend, ["Turn Completed", "Order Completed"])
        return int(backend.to_pyarrow(table.count().as_table()).column(0)[0].as_py())

    assert count() == 1
    write_events(tmp_path, [{**EVENT, "messageId": "m2", "event": "Order Completed"}])
    assert count() == 2


@pytest.mark.parametrize("seed", [0, 1])
def test_date_subset_equals_the_whole_table_filtered_by_day(tmp_path: Path, seed: int) -> None:
    """``days`` reads only those ``date=`` folders: exactly the rows whose UTC date is in
    the range (with or without an event subset; a range with no folder is empty)."""
    import random

    rng = random.Random(seed)
    names = ["Turn Completed", "Order Completed"]
    i = 0
    for day in (2, 3, 4, 5):
        batch = []
        for _ in range(rng.randint(5, 30)):
            batch.append(_event(i, rng.choice(names), day, {"latency_ms": rng.random()}))
            i += 1
        write_events(tmp_path, batch)
    backend = connect_lake(tmp_path)
    whole = events_table(backend)
    day = whole.timestamp.date()
    for first, last in ((3, 3), (3, 4), (1, 2), (5, 9), (7, 8)):
        lo, hi = datetime(2026, 11, first).date(), datetime(2026, 11, last).date()
        for subset in (None, [names[0]]):
            part = events_table(backend, subset, days=(lo, hi))
            assert part.schema() == whole.schema()
            want = whole.filter((day >= lo) & (day <= hi))
            if subset is not None:
                want = want.filter(want.event.isin(subset))
            got = backend.to_pyarrow(part.order_by("message_id")).to_pylist()
            assert got == backend.to_pyarrow(want.order_by("message_id")).to_pylist()


def test_duckdb_connections_draw_no_progress_bar(tmp_path):
    """DuckDB draws a progress bar on stdout for queries over 2 s unless told not to: a
    library's connection must not print into the CLI's output (or a benchmark's)."""
    backend = connect_lake(tmp_path / "lake")
    setting = backend.con.execute("SELECT current_setting('enable_progress_bar')").fetchone()
    assert setting == (False,)


def _disabled(con: Any) -> set[str]:
    value = con.execute("SELECT current_setting('disabled_optimizers')").fetchall()[0][0]
    return {name.strip() for name in str(value or "").split(",") if name.strip()}


def _build_side_rows(con: Any, sql: str) -> str:
    """The estimated rows of the side a hash join builds on (its second child)."""
    plan = json.loads(con.sql("EXPLAIN (FORMAT json) " + sql).fetchall()[0][1])

    def join(node: dict[str, Any]) -> dict[str, Any] | None:
        if "JOIN" in node.get("name", ""):
            return node
        return next((j for c in node.get("children", []) if (j := join(c))), None)

    found = join(plan[0])
    assert found is not None
    return str(found["children"][1]["extra_info"]["Estimated Cardinality"])


def test_joins_as_written_builds_on_the_right_side_and_restores_the_setting(tmp_path):
    con = connect_lake(tmp_path / "lake").con
    # written with the small side on the left: DuckDB would build on it (it is smaller)
    sql = "SELECT count(*) FROM range(10) AS s(j) JOIN range(100000) AS b(i) ON b.i = s.j"
    assert _build_side_rows(con, sql) == "10"
    con.execute("SET disabled_optimizers = 'compressed_materialization'")
    with joins_as_written(con):
        assert _disabled(con) == {"compressed_materialization", *JOIN_ORDER_OPTIMIZERS}
        assert _build_side_rows(con, sql) == "100000"  # as written: the right side
    assert _disabled(con) == {"compressed_materialization"}
    with pytest.raises(RuntimeError, match="inside"), joins_as_written(con):
        raise RuntimeError("inside")
    assert _disabled(con) == {"compressed_materialization"}
