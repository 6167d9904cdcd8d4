"""Evaluating monitors: backfill/replay over the lake, and streaming from the buffer.

Both modes share one evaluator (:class:`MonitorEvaluator`): a detector bank and a rule bank
over a monitor's series, fed one grain bucket (tick) at a time.

1. **Prepare** (:func:`prepare`): over a calibration window (``detector.calibration``,
   default 3 days) find the watched segments, replay the history through the detector and
   calibrate each series' threshold from the false-alarm target
   (:func:`tripwire.monitor.calibration.calibrate`). The bank leaves the window warm.
2. **Evaluate** every later bucket: detector verdicts → rules → triggers and clears →
   the alert store (:class:`~tripwire.monitor.alerts.AlertStore`).

*Backfill* (:func:`run_backfill`, ``tripwire monitor run --since 14d``) reads the buckets
from the lake. *Streaming* (:class:`StreamingMonitor`, inside ``tripwire serve``) consumes
the durable buffer as the named consumer ``monitor``: events are held per bucket and a
bucket is evaluated once the watermark (latest event time seen) has passed its end by the
lateness window (``monitor.lateness``, default 5 minutes); when the buffer is idle, the wall
clock closes buckets too. Events later than that are counted and skipped. Each closed range
is computed by the same metric queries over an in-memory table of the buffered events, so on
the same data both modes give the same alerts (tested).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from ibis.backends import BaseBackend

from tripwire.metrics.definitions import MetricBase
from tripwire.metrics.loader import MetricCatalog, load_metrics
from tripwire.monitor.alerts import AlertDraft, AlertStore
from tripwire.monitor.baselines import BaselineSettings
from tripwire.monitor.calibration import calibrate
from tripwire.monitor.changes import ChangeLog, changes_from_envelopes
from tripwire.monitor.definitions import MonitorSpec
from tripwire.monitor.detectors import DetectorBank, DetectorConfig, TickResult
from tripwire.monitor.loader import MonitorSet, load_monitors
from tripwire.monitor.rules import Clear, RuleBank, Trigger
from tripwire.monitor.series import (
    Segment,
    Ticks,
    clip_shares,
    counts_numerator,
    detector_kind,
    discover_and_fetch,
    fetch_ticks,
    segment_label,
    split,
)
from tripwire.store.workspace import Workspace

log = logging.getLogger(__name__)

#: The streaming evaluator's buffer consumer.
CONSUMER = "monitor"
DEFAULT_LATENESS = timedelta(minutes=5)


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def floor_to(moment: datetime, step_seconds: int) -> datetime:
    """``moment`` rounded down to a multiple of ``step_seconds`` since the epoch."""
    seconds = int(moment.timestamp())
    return _utc(seconds - seconds % step_seconds)


def detector_config(monitor: MonitorSpec, metric: MetricBase) -> DetectorConfig:
    """The :class:`DetectorConfig` of a monitor (kind inferred from the metric if unset)."""
    spec = monitor.detector
    step = monitor.step_seconds
    return DetectorConfig(
        method=spec.method,
        kind=spec.kind or detector_kind(metric),  # type: ignore[arg-type]
        k=spec.k,
        h=spec.threshold or DetectorConfig.h,
        lam=spec.lam,
        limit=spec.threshold or DetectorConfig.limit,
        baseline=BaselineSettings(step_seconds=step, daily_bins=max(1, min(288, 86_400 // step))),
        warmup_seconds=int(spec.warmup.total_seconds()),
        min_denominator=spec.min_denominator,
        resolution=1.0 if counts_numerator(metric) else 0.0,
        effects=tuple(spec.effects),
    )


@dataclass(frozen=True)
class Event:
    """A trigger or a clear of one monitor, with the series' segment (for the store)."""

    monitor: MonitorSpec
    metric: str
    segment: Segment
    item: Trigger | Clear

    @property
    def timestamp(self) -> int:
        return self.item.timestamp

    def draft(self) -> AlertDraft:
        t = self.item
        assert isinstance(t, Trigger)
        step = self.monitor.step_seconds
        return AlertDraft(
            monitor=self.monitor.name,
            rule=t.rule.name,
            metric=self.metric,
            severity=t.rule.severity,
            segment=self.segment,
            at=_utc(t.timestamp + step),  # the bucket closes (is known) at its end
            onset=_utc(t.onset),
            observed=t.observed,
            expected=t.expected,
            lower=t.lower,
            upper=t.upper,
            direction=t.direction,
            condition=t.rule.condition,
        )

    def key(self) -> tuple[Any, ...]:
        """What identifies the event across modes (for comparisons and sorting)."""
        t = self.item
        kind = "trigger" if isinstance(t, Trigger) else "clear"
        return (t.timestamp, self.monitor.name, t.rule.name, t.series, kind)


@dataclass
class MonitorEvaluator:
    """One monitor's series, detector bank and rules; consumes ticks in time order."""

    monitor: MonitorSpec
    metric: MetricBase
    segments: list[Segment]
    bank: DetectorBank
    rules: RuleBank
    next_timestamp: int
    notes: list[str] = field(default_factory=list)
    last_tick: TickResult | None = None

    def feed(self, ticks: Ticks) -> list[Event]:
        """Evaluate consecutive buckets (must start at :attr:`next_timestamp`)."""
        if len(ticks) and int(ticks.timestamps[0]) != self.next_timestamp:
            raise ValueError(
                f"{self.monitor.name}: ticks start at {_utc(int(ticks.timestamps[0]))},"
                f" expected {_utc(self.next_timestamp)}"
            )
        kind = self.bank.config.kind
        if kind == "proportion":
            ticks = clip_shares(ticks)
        out: list[Event] = []
        if kind == "value":
            results = self.bank.ticks_of(ticks.timestamps, ticks.values)
        else:
            results = self.bank.ticks_of(
                ticks.timestamps, None, ticks.numerators, ticks.denominators
            )
        # rules take counts without NaN (0 = nothing counted): cleaned once for the block
        volumes = np.nan_to_num(ticks.volumes)
        nums = np.nan_to_num(ticks.numerators)
        dens = np.nan_to_num(ticks.denominators)
        for t, tick in enumerate(results):
            self.last_tick = tick
            for item in self.rules.update(tick, self.bank, volumes[t], nums[t], dens[t]):
                out.append(Event(self.monitor, self.metric.name, self.segments[item.series], item))
            self.next_timestamp = tick.timestamp + self.monitor.step_seconds
        return out


def prepare(
    backend: BaseBackend,
    monitor: MonitorSpec,
    metric: MetricBase,
    history_end: datetime,
    *,
    seed: int = 0,
    segments: list[Segment] | None = None,
    history: Ticks | None = None,
) -> MonitorEvaluator:
    """Segments, calibrated thresholds and a warm bank from ``[history_end − calibration, history_end)``.

    ``segments``/``history`` may be passed in when the caller already fetched them.
    """
    step = monitor.step_seconds
    end = floor_to(history_end, step)
    start = floor_to(end - monitor.detector.calibration, step)
    if segments is None or history is None:
        segments, history = discover_and_fetch(backend, monitor, metric, start, end, end)
    config = detector_config(monitor, metric)
    notes: list[str] = []
    kind = config.kind
    if kind == "proportion":
        history = clip_shares(history)
    values = history.values if kind == "value" else None
    nums = None if kind == "value" else history.numerators
    dens = None if kind == "value" else history.denominators
    bank: DetectorBank | None = None
    # thresholds only matter to detector rules: a monitor of static thresholds keeps the
    # detector for its expected values and intervals, and skips the bootstrap
    detects = any(rule.kind == "detector" for rule in monitor.rules)
    if monitor.detector.threshold is None and detects and len(history):
        rate = monitor.detector.false_alarms_per_30_days / 30.0 / len(segments)
        try:
            run = calibrate(
                config,
                history.timestamps,
                values,
                nums,
                dens,
                false_alarms_per_day=rate,
                seed=seed,
            )
            bank = run.bank
        except ValueError as error:
            notes.append(f"calibration skipped ({error}); default threshold")
    if bank is None:
        bank = DetectorBank(config, len(segments))
        if len(history):
            for _ in bank.ticks_of(history.timestamps, values, nums, dens):
                pass
            bank.reset_statistics()
    rules = RuleBank(monitor.rules, len(segments), step)
    return MonitorEvaluator(monitor, metric, segments, bank, rules, int(end.timestamp()), notes)


def apply_events(store: AlertStore, events: Iterable[Event]) -> list[tuple[Event, int | None]]:
    """Apply triggers and clears to the alert store in time order; returns (event, alert id)."""
    out: list[tuple[Event, int | None]] = []
    for event in sorted(events, key=Event.key):
        item = event.item
        if isinstance(item, Trigger):
            out.append((event, store.fire(event.draft()).alert_id))
        else:
            at = _utc(item.timestamp + event.monitor.step_seconds)
            out.append((event, store.clear(event.monitor.name, item.rule.name, event.segment, at)))
    return out


# --------------------------------------------------------------------------- backfill


@dataclass(frozen=True)
class BackfillResult:
    """What a backfill evaluated and the triggers/clears it produced (time order)."""

    start: datetime
    end: datetime
    evaluators: list[MonitorEvaluator]
    events: list[Event]

    @property
    def triggers(self) -> list[Event]:
        return [e for e in self.events if isinstance(e.item, Trigger)]


def lake_range(backend: BaseBackend) -> tuple[datetime, datetime] | None:
    """First and just-after-last event time in the lake (None when empty)."""
    from tripwire.store.engine import events_table

    table = events_table(backend)
    row = backend.to_pyarrow(
        table.aggregate(lo=table.timestamp.min(), hi=table.timestamp.max())
    ).to_pylist()[0]
    if row["lo"] is None:
        return None
    return row["lo"], row["hi"] + timedelta(microseconds=1)


def run_backfill(
    backend: BaseBackend,
    monitors: Sequence[MonitorSpec],
    catalog: MetricCatalog,
    *,
    start: datetime,
    end: datetime,
    seed: int = 0,
) -> BackfillResult:
    """Replay ``[start, end)``: calibrate each monitor on its first ``calibration`` of the
    range, then evaluate the rest bucket by bucket. Returns the triggers and clears."""
    evaluators: list[MonitorEvaluator] = []
    events: list[Event] = []
    for monitor in monitors:
        if not monitor.enabled:
            continue
        step = monitor.step_seconds
        first = _utc(-(-int(start.timestamp()) // step) * step)
        history_end = first + monitor.detector.calibration
        last = floor_to(end, step)
        if history_end >= last:
            raise ValueError(
                f"monitor {monitor.name}: the range {start} → {end} is shorter than its"
                f" calibration window ({monitor.detector.calibration}); use a longer --since"
            )
        metric = catalog[monitor.metric]
        segments, ticks = discover_and_fetch(backend, monitor, metric, first, last, history_end)
        n_history = int((history_end - first).total_seconds()) // step
        history, rest = split(ticks, n_history)
        evaluator = prepare(
            backend, monitor, metric, history_end, seed=seed, segments=segments, history=history
        )
        events += evaluator.feed(rest)
        evaluators.append(evaluator)
    return BackfillResult(start, end, evaluators, sorted(events, key=Event.key))


# --------------------------------------------------------------------------- streaming


def _memory_backend(events: pa.Table) -> BaseBackend:
    import ibis

    from tripwire.store.engine import EVENTS_TABLE, configure_duckdb

    backend = ibis.duckdb.connect()
    configure_duckdb(backend)
    backend.con.register("__buffered", events)  # type: ignore[attr-defined]
    backend.raw_sql(f"CREATE OR REPLACE VIEW {EVENTS_TABLE} AS SELECT * FROM __buffered")  # type: ignore[attr-defined]
    return backend


class StreamingEvaluator:
    """Evaluates monitors from buffered events as buckets close (no I/O of its own).

    :meth:`add` takes an Arrow table of events in the lake's layout
    (:func:`tripwire.store.lake.envelope_batch_to_table`); :meth:`close_until` evaluates every
    bucket ending at or before a time and returns the triggers and clears.
    """

    def __init__(
        self, evaluators: Sequence[MonitorEvaluator], lateness: timedelta = DEFAULT_LATENESS
    ) -> None:
        if not evaluators:
            raise ValueError("nothing to evaluate: no monitors")
        self.evaluators = list(evaluators)
        self.lateness = lateness
        self.pending: list[pa.Table] = []
        self.watermark: datetime | None = None
        self.late_events = 0

    @property
    def evaluated_until(self) -> datetime:
        """Every bucket before this time has been evaluated (by every monitor)."""
        return _utc(min(e.next_timestamp for e in self.evaluators))

    def add(self, events: pa.Table) -> None:
        if events.num_rows == 0:
            return
        ts = events["timestamp"]
        since = self.evaluated_until
        late = pc.less(ts, pa.scalar(since, pa.timestamp("us", tz="UTC")))
        n_late = pc.sum(late).as_py() or 0
        # events older than the evaluated range are late only if the range was evaluated
        # live; on start the range begins at the calibration end and older ones are history
        self.late_events += int(n_late) if self.watermark is not None else 0
        events = events.filter(pc.invert(late))
        if events.num_rows == 0:
            return
        newest = pc.max(events["timestamp"]).as_py()
        self.watermark = newest if self.watermark is None else max(self.watermark, newest)
        self.pending.append(events)

    def closable(self, now: datetime | None = None) -> datetime | None:
        """The time up to which buckets may close: watermark (or ``now``) − lateness."""
        marks = [m for m in (self.watermark, now) if m is not None]
        return max(marks) - self.lateness if marks else None

    def close_until(self, until: datetime) -> list[Event]:
        """Evaluate all buckets ending at or before ``until``."""
        out: list[Event] = []
        table = (
            pa.concat_tables(self.pending, promote_options="permissive") if self.pending else None
        )
        backend = _memory_backend(table) if table is not None and table.num_rows else None
        for evaluator in self.evaluators:
            step = evaluator.monitor.step_seconds
            stop = floor_to(until, step)
            start = _utc(evaluator.next_timestamp)
            if stop <= start:
                continue
            if backend is None:
                n = int((stop - start).total_seconds()) // step
                s = len(evaluator.segments)
                additive = evaluator.metric.type in ("count", "sum", "distinct")
                empty = Ticks(
                    evaluator.next_timestamp + step * np.arange(n, dtype=np.int64),
                    np.zeros((n, s)),
                    np.zeros((n, s)),
                    np.zeros((n, s)) if additive else np.full((n, s), np.nan),
                    np.zeros((n, s)),
                )
                out += evaluator.feed(empty)
            else:
                ticks = fetch_ticks(
                    backend, evaluator.monitor, evaluator.metric, evaluator.segments, start, stop
                )
                out += evaluator.feed(ticks)
        if table is not None:
            done = pa.scalar(self.evaluated_until, pa.timestamp("us", tz="UTC"))
            rest = table.filter(pc.greater_equal(table["timestamp"], done))
            self.pending = [rest] if rest.num_rows else []
        return sorted(out, key=Event.key)


def load_definitions(workspace: Workspace) -> tuple[MonitorSet, MetricCatalog]:
    catalog = load_metrics(workspace, check_lake=False)
    return load_monitors(workspace, catalog), catalog


@dataclass
class StreamStats:
    events: int = 0
    evaluated_until: datetime | None = None
    triggers: int = 0
    late_events: int = 0
    errors: list[str] = field(default_factory=list)


class _Stopped(Exception):
    """Raised inside setup when ``stop()`` was requested between two monitors."""


class StreamingMonitor:
    """The buffer consumer that runs monitors continuously (start/stop from ``tripwire serve``).

    On start it prepares every monitor from the lake (calibration window ending at the
    lake's last full bucket), rewinds its consumer to the events received since, and then
    loops: read a chunk, record ``$change`` events in the change log, add the events, close
    the buckets the watermark allows, apply the triggers to the alert store and deliver
    notifications. ``poll_seconds`` is the idle sleep.
    """

    def __init__(
        self,
        workspace: Workspace,
        *,
        lateness: timedelta | None = None,
        poll_seconds: float = 1.0,
        chunk_events: int = 50_000,
        use_wall_clock: bool = True,
        history_end: datetime | None = None,
        notify: bool = True,
        post: Callable[..., int] | None = None,
    ) -> None:
        self.workspace = workspace
        setting = workspace.setting("monitor", "lateness", default=None)
        if lateness is None:
            from tripwire.metrics.definitions import parse_duration

            lateness = parse_duration(setting) if setting is not None else DEFAULT_LATENESS
        self.lateness = lateness
        self.poll_seconds = poll_seconds
        self.chunk_events = chunk_events
        self.use_wall_clock = use_wall_clock
        self.history_end = history_end
        self.notify = notify
        self.post = post
        self.stats = StreamStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._evaluator: StreamingEvaluator | None = None
        self._backend: BaseBackend | None = None

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> StreamingMonitor:
        self._thread = threading.Thread(target=self._run, name="tripwire-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the loop and wait for the thread (at most ``timeout`` seconds).

        Prompt even during setup: the flag is checked between monitors, and the lake query
        running at the time is interrupted (DuckDB's ``interrupt()``, repeated until the
        thread ends: an interrupt that lands between two queries does not carry over).
        """
        self._stop.set()
        thread = self._thread
        if thread is None:
            return
        deadline = time.monotonic() + timeout
        while thread.is_alive():
            self._interrupt()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            thread.join(min(0.2, remaining))

    def _interrupt(self) -> None:
        """Interrupt the running lake query, if the engine can (DuckDB; Spark cannot)."""
        con = getattr(self._backend, "con", None)
        interrupt = getattr(con, "interrupt", None)
        if interrupt is not None:
            with contextlib.suppress(Exception):
                interrupt()

    def _run(self) -> None:
        try:
            self.run(until_idle=False)
        except Exception as error:  # a monitor failure must not take the server down
            if self._stop.is_set():  # the interrupted query of a requested stop
                log.debug("streaming monitor stopped during a query: %s", error)
                return
            log.exception("streaming monitor stopped")
            self.stats.errors.append(f"{type(error).__name__}: {error}")

    # -- the loop -------------------------------------------------------------------------
    def setup(self, backend: BaseBackend) -> StreamingEvaluator:
        monitors, catalog = load_definitions(self.workspace)
        enabled = [m for m in monitors if m.enabled]
        if self.history_end is not None:
            end = self.history_end
        else:
            span = lake_range(backend)
            end = span[1] if span else datetime.now(UTC)
        evaluators = []
        for m in enabled:  # one lake query and a calibration each: stop() must not wait
            if self._stop.is_set():
                raise _Stopped
            evaluators.append(prepare(backend, m, catalog[m.metric], end))
        return StreamingEvaluator(evaluators, self.lateness)

    def run(self, *, until_idle: bool = True) -> StreamStats:
        """Consume the buffer; with ``until_idle``, return once it is drained (replays, tests)."""
        from tripwire.monitor.notify import Dispatcher
        from tripwire.store.buffer import Buffer
        from tripwire.store.engine import connect
        from tripwire.store.lake import PROPERTY_TYPES_FILE, PropertyTypes, events_dir

        backend = connect(self.workspace)
        self._backend = backend
        store = AlertStore.for_workspace(self.workspace)
        buffer = Buffer.for_workspace(self.workspace)
        try:
            if self._stop.is_set():
                return self.stats
            ChangeLog(store.connection).sync_lake(backend)
            try:
                evaluator = self.setup(backend)
            except _Stopped:
                return self.stats
            self._evaluator = evaluator
            # the lake's column types, read only (never saved: the archiver owns that file)
            types = PropertyTypes(events_dir(self.workspace.lake_dir) / PROPERTY_TYPES_FILE)
            rewind_to = evaluator.evaluated_until - self.lateness - timedelta(hours=1)
            try:
                after = buffer.offset_at(rewind_to) - 1
            except Exception:
                after = buffer.first_offset() or 0
                after = max(after - 1, 0)
            dispatcher = (
                Dispatcher.for_workspace(
                    self.workspace, store, **({"post": self.post} if self.post else {})
                )
                if self.notify
                else None
            )
            while not self._stop.is_set():
                chunk = buffer.read_chunk(after, self.chunk_events)
                now = datetime.now(UTC) if self.use_wall_clock else None
                if chunk is not None:
                    from tripwire.store.lake import envelope_batch_to_table

                    table = envelope_batch_to_table(chunk.table, types)
                    self._record_changes(store, table)
                    evaluator.add(table)
                    after = chunk.last_offset
                    self.stats.events += table.num_rows
                    buffer.commit(CONSUMER, after)
                until = evaluator.closable(now if chunk is None else None)
                if until is not None and until > evaluator.evaluated_until:
                    events = evaluator.close_until(until)
                    apply_events(store, events)
                    self.stats.triggers += sum(isinstance(e.item, Trigger) for e in events)
                self.stats.evaluated_until = evaluator.evaluated_until
                self.stats.late_events = evaluator.late_events
                if dispatcher is not None:
                    dispatcher.deliver_due()
                if chunk is None:
                    if until_idle:
                        break
                    self._stop.wait(self.poll_seconds)
        finally:
            buffer.close()
            store.close()
        return self.stats

    def latest(self) -> list[dict[str, Any]]:
        """The last evaluated tick of every watched series (for ``GET /metrics``)."""
        evaluator = self._evaluator
        if evaluator is None:
            return []
        rows = []
        for ev in evaluator.evaluators:
            tick = ev.last_tick
            if tick is None:
                continue
            for index, segment in enumerate(ev.segments):
                rows.append(
                    {
                        "monitor": ev.monitor.name,
                        "metric": ev.metric.name,
                        "segment": segment_label(segment),
                        "value": float(tick.observed[index]),
                        "expected": float(tick.expected[index]),
                        "lower": float(tick.lower[index]),
                        "upper": float(tick.upper[index]),
                    }
                )
        return rows

    @staticmethod
    def _record_changes(store: AlertStore, table: pa.Table) -> None:
        import orjson

        mask = pc.equal(table["event"], "$change")
        if not pc.any(mask).as_py():
            return
        rows = table.filter(mask).select(["message_id", "timestamp", "properties"]).to_pylist()
        envelopes = [
            {
                "event": "$change",
                "messageId": r["message_id"],
                "timestamp": r["timestamp"].isoformat(),
                "properties": orjson.loads(r["properties"] or "{}"),
            }
            for r in rows
        ]
        store.changes.record(changes_from_envelopes(envelopes))


def start_streaming_monitor(workspace: Workspace, **kwargs: Any) -> StreamingMonitor:
    """Start the streaming monitor of ``workspace`` in a background thread (``.stop()`` it).

    For ``tripwire serve``: does nothing harmful when the workspace has no monitors (the
    thread records the error in ``.stats.errors`` and exits).
    """
    return StreamingMonitor(workspace, **kwargs).start()
