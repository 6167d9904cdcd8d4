"""The Parquet lake: one layout, one envelope-to-row conversion, one `events` view.

Layout: ``<lake>/events/date=YYYY-MM-DD/event=<url-quoted name>/part-<id>.parquet``.
Each file holds the envelope columns, the typed context columns, the raw JSON and every
top-level scalar property flattened as ``prop_<key>`` (and ``context.traits``/identify
traits as ``trait_<key>``). The first type seen for a flattened key is recorded in
``<lake>/events/_property_types.json`` and wins for ever after, so the union of all files
has one stable type per column; values of another type stay only in the JSON.

Every reader goes through :func:`events_relation_sql` (DuckDB) so that the view has the same
columns whichever files exist, including none.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

TS = pa.timestamp("us", tz="UTC")

#: Columns every lake file has, in this order.
ENVELOPE_FIELDS: list[pa.Field] = [
    pa.field("message_id", pa.string(), nullable=False),
    pa.field("type", pa.string(), nullable=False),
    pa.field("event", pa.string(), nullable=False),
    pa.field("name", pa.string()),
    pa.field("user_id", pa.string()),
    pa.field("anonymous_id", pa.string()),
    pa.field("timestamp", TS, nullable=False),
    pa.field("original_timestamp", TS),
    pa.field("sent_at", TS),
    pa.field("received_at", TS, nullable=False),
    pa.field("source", pa.string()),
    pa.field("locale", pa.string()),
    pa.field("device", pa.string()),
    pa.field("app_version", pa.string()),
    pa.field("os", pa.string()),
    pa.field("session_id", pa.string()),
    pa.field("properties", pa.string()),
    pa.field("context", pa.string()),
    pa.field("traits", pa.string()),
]
ENVELOPE_SCHEMA = pa.schema(ENVELOPE_FIELDS)
ENVELOPE_COLUMNS = [f.name for f in ENVELOPE_FIELDS]

PROPERTY_PREFIX = "prop_"
TRAIT_PREFIX = "trait_"
_FLATTENABLE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_TYPE_NAMES = {"double": pa.float64(), "boolean": pa.bool_(), "string": pa.string()}
PROPERTY_TYPES_FILE = "_property_types.json"

NON_TRACK_EVENT_NAMES = {
    "identify": "$identify",
    "page": "$page",
    "screen": "$screen",
    "group": "$group",
    "alias": "$alias",
}


def event_name_of(envelope: Mapping[str, Any]) -> str:
    """The lake's ``event`` value: the track name, or ``$<type>`` for other calls."""
    kind = envelope.get("type", "track")
    if kind == "track":
        return str(envelope.get("event") or "")
    return NON_TRACK_EVENT_NAMES.get(kind, f"${kind}")


def _scalar_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "double"
    if isinstance(value, str):
        return "string"
    return None


def _parse_ts(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _device_of(context: Mapping[str, Any]) -> str | None:
    device = context.get("device")
    if isinstance(device, Mapping):
        return device.get("model") or device.get("type")
    return None


def _nested(context: Mapping[str, Any], section: str, key: str) -> Any:
    part = context.get(section)
    return part.get(key) if isinstance(part, Mapping) else None


def _json(value: Any) -> str:
    return orjson.dumps(value if value is not None else {}, default=str).decode()


class PropertyTypes:
    """The lake's registry of flattened column types (first type seen wins)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.types: dict[str, str] = {}
        if path.exists():
            self.types = json.loads(path.read_text())

    def observe(self, column: str, value: Any) -> bool:
        """Record ``column``'s type if new; True when ``value`` fits the column."""
        kind = _scalar_type(value)
        if kind is None:
            return False
        known = self.types.setdefault(column, kind)
        return known == kind

    def arrow_type(self, column: str) -> pa.DataType:
        return _TYPE_NAMES[self.types[column]]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.types, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def envelopes_to_table(envelopes: Iterable[Mapping[str, Any]], types: PropertyTypes) -> pa.Table:
    """Convert normalized envelopes (see docs/world.md) to one Arrow table of lake rows."""
    columns: dict[str, list[Any]] = {name: [] for name in ENVELOPE_COLUMNS}
    flat: dict[str, dict[int, Any]] = defaultdict(dict)
    count = 0
    for envelope in envelopes:
        context = envelope.get("context") or {}
        properties = envelope.get("properties") or {}
        traits = dict(context.get("traits") or {}) if isinstance(context, Mapping) else {}
        traits.update(envelope.get("traits") or {})
        row = columns
        row["message_id"].append(str(envelope["messageId"]))
        row["type"].append(str(envelope.get("type", "track")))
        row["event"].append(event_name_of(envelope))
        row["name"].append(envelope.get("name"))
        row["user_id"].append(envelope.get("userId"))
        row["anonymous_id"].append(envelope.get("anonymousId"))
        row["timestamp"].append(_parse_ts(envelope["timestamp"]))
        row["original_timestamp"].append(_parse_ts(envelope.get("originalTimestamp")))
        row["sent_at"].append(_parse_ts(envelope.get("sentAt")))
        row["received_at"].append(_parse_ts(envelope.get("receivedAt") or envelope["timestamp"]))
        row["source"].append(envelope.get("source"))
        row["locale"].append(context.get("locale") if isinstance(context, Mapping) else None)
        row["device"].append(_device_of(context) if isinstance(context, Mapping) else None)
        row["app_version"].append(_nested(context, "app", "version"))
        row["os"].append(_nested(context, "os", "name"))
        session = properties.get("session_id", properties.get("$session_id"))
        row["session_id"].append(None if session is None else str(session))
        row["properties"].append(_json(properties))
        row["context"].append(_json(context))
        row["traits"].append(_json(envelope.get("traits")))
        for prefix, values in ((PROPERTY_PREFIX, properties), (TRAIT_PREFIX, traits)):
            for key, value in values.items():
                if value is None or not _FLATTENABLE_KEY.match(key):
                    continue
                column = prefix + key
                if types.observe(column, value):
                    flat[column][count] = float(value) if types.types[column] == "double" else value
        count += 1
    arrays: list[pa.Array] = [
        pa.array(columns[f.name], type=f.type) for f in ENVELOPE_FIELDS
    ]
    fields = list(ENVELOPE_FIELDS)
    for column in sorted(flat):
        values = flat[column]
        fields.append(pa.field(column, types.arrow_type(column)))
        arrays.append(pa.array([values.get(i) for i in range(count)], type=types.arrow_type(column)))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def events_dir(lake_dir: Path) -> Path:
    return Path(lake_dir) / "events"


def partition_dir(lake_dir: Path, day: date, event: str) -> Path:
    return events_dir(lake_dir) / f"date={day.isoformat()}" / f"event={quote(event, safe='')}"


def write_events(
    lake_dir: Path, envelopes: Iterable[Mapping[str, Any]], *, file_id: str | None = None
) -> list[Path]:
    """Write envelopes into date × event partitions; returns the files written.

    Files are written to a temporary name and renamed, so a reader never sees half a file.
    ``file_id`` makes the names deterministic (the archiver passes its offset range so that a
    re-run after a crash overwrites instead of duplicating).
    """
    types = PropertyTypes(events_dir(lake_dir) / PROPERTY_TYPES_FILE)
    table = envelopes_to_table(envelopes, types)
    types.save()
    if table.num_rows == 0:
        return []
    file_id = file_id or uuid.uuid4().hex
    days = pc.cast(table["timestamp"], pa.date32()).to_pylist()
    events = table["event"].to_pylist()
    groups: dict[tuple[date, str], list[int]] = defaultdict(list)
    for index, key in enumerate(zip(days, events, strict=True)):
        groups[key].append(index)
    written = []
    for (day, event), rows in sorted(groups.items()):
        part = table.take(pa.array(rows))
        part = part.select([c for c in part.column_names if c in ENVELOPE_COLUMNS or part[c].null_count < part.num_rows])
        target_dir = partition_dir(lake_dir, day, event)
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / f"part-{file_id}.parquet"
        tmp = target.with_suffix(".parquet.tmp")
        pq.write_table(part, tmp, compression="zstd")
        os.replace(tmp, target)
        written.append(target)
    return written


def events_relation_sql(lake_dir: Path) -> str:
    """A DuckDB relation over every lake file with the same columns whatever exists.

    Flattened columns that no file has yet are absent; the envelope columns are always there.
    """
    root = events_dir(lake_dir)
    files = list(root.glob("date=*/event=*/*.parquet")) if root.exists() else []
    if not files:
        cols = ", ".join(
            f"CAST(NULL AS {_duck_type(f.type)}) AS \"{f.name}\"" for f in ENVELOPE_FIELDS
        )
        return f"(SELECT {cols} WHERE false)"
    pattern = str(root / "date=*" / "event=*" / "*.parquet").replace("'", "''")
    return f"read_parquet('{pattern}', union_by_name=true, hive_partitioning=false)"


def _duck_type(kind: pa.DataType) -> str:
    if pa.types.is_timestamp(kind):
        return "TIMESTAMPTZ"
    if pa.types.is_boolean(kind):
        return "BOOLEAN"
    if pa.types.is_floating(kind):
        return "DOUBLE"
    return "VARCHAR"


def create_events_view(connection: Any, lake_dir: Path, name: str = "events") -> None:
    """Create (or replace) the ``events`` view on a DuckDB connection."""
    connection.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {events_relation_sql(lake_dir)}")
