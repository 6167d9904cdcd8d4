"""Assign units to arms in-process and log their first exposure as a ``$exposure`` event.

``tw.assign(experiment, unit_id, attributes)`` (wired onto :class:`tripwire.api.Tripwire`
with :func:`assign`) does, in order:

1. loads the experiment's spec (cached, reloaded when the file changes) and its rollout
   state from the registry (cached for ``state_ttl_s``, default 1 s);
2. checks the population: the spec's ``population.where`` predicates against
   ``attributes`` (e.g. ``{"locale": "ja-JP"}``); an ineligible unit gets no arm;
3. returns the unit's **sticky** arm if it was assigned before (so pausing a rollout stops
   new units only, and an arm never changes under a unit); the kill switch overrides it;
4. otherwise hashes the unit (:func:`tripwire.experiments.assignment.assign`) under the
   allocation of the current rollout stage; a newly assigned unit is remembered and its
   ``$exposure`` event is sent (``experiment``, ``variant``, ``unit_id``; attributes go
   to ``context``: ``locale``, ``device`` → ``context.device.model``, ``app_version``,
   ``os`` → ``context.os.name``, anything else → ``context.traits``), so cohort
   dimensions of the analysis read them from the first exposure.

The exposure's ``messageId`` is derived from (experiment, unit), so the same first
exposure sent by two processes, or retried, is stored once (the buffer deduplicates).
Sticky assignments live in the state database (``experiment_assignments``).
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tripwire.experiments.assignment import Allocation, Assignment
from tripwire.experiments.assignment import assign as hash_assign
from tripwire.experiments.registry import Registry, RolloutState
from tripwire.experiments.rollout import allocation
from tripwire.experiments.spec import ExperimentSpec, LoadedSpec, load_spec_file, spec_path
from tripwire.metrics.definitions import Predicate
from tripwire.store.state import connect_sqlite
from tripwire.store.workspace import Workspace

if TYPE_CHECKING:
    from tripwire.api import Tripwire

EXPOSURE_EVENT = "$exposure"
_CONTEXT_PATHS: dict[str, tuple[str, ...]] = {
    "locale": ("locale",),
    "device": ("device", "model"),
    "app_version": ("app", "version"),
    "os": ("os", "name"),
    "timezone": ("timezone",),
}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiment_assignments (
    experiment TEXT NOT NULL,
    unit_id TEXT NOT NULL,
    arm TEXT NOT NULL,
    assigned_at REAL NOT NULL,
    PRIMARY KEY (experiment, unit_id)
) WITHOUT ROWID;
"""

#: Sends one raw Segment message (``type``, ``event``, ``properties``, ``context``, …).
Sender = Callable[[dict[str, Any]], None]


def exposure_message_id(experiment: str, unit_id: str) -> str:
    """Deterministic messageId of a unit's first exposure (deduplicated downstream).

    >>> exposure_message_id("ranker_v2", "user-1")
    'exp-40a65b1d326f4b11ed62a286fd8a03b5'
    """
    digest = hashlib.sha256(f"$exposure:{experiment}:{unit_id}".encode()).hexdigest()
    return f"exp-{digest[:32]}"


def exposure_context(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Segment ``context`` from assignment attributes (see the module docstring).

    >>> exposure_context({"locale": "ja-JP", "device": "Echo Show", "tenure": "new"})
    {'locale': 'ja-JP', 'device': {'model': 'Echo Show'}, 'traits': {'tenure': 'new'}}
    """
    context: dict[str, Any] = {}
    for key, value in attributes.items():
        if key in ("user_id", "anonymous_id"):
            continue
        path = _CONTEXT_PATHS.get(key, ("traits", key))
        node = context
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return context


def _lookup(attributes: Mapping[str, Any], ref: str) -> Any:
    """An attribute by field reference: exact key, else its last path component."""
    if ref in attributes:
        return attributes[ref]
    return attributes.get(ref.rsplit(".", 1)[-1])


def eligible(spec: ExperimentSpec, attributes: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether ``attributes`` satisfy the spec's ``population.where`` (and which fails)."""
    for predicate in spec.population.where:
        value = _lookup(attributes, predicate.field)
        if not _holds(predicate, value):
            return False, f"{predicate.field} {predicate.op} {predicate.value!r} (got {value!r})"
    return True, ""


def _holds(p: Predicate, value: Any) -> bool:
    if p.op == "is_null":
        return value is None
    if p.op == "not_null":
        return value is not None
    if value is None:
        return False
    if p.op == "eq":
        return bool(value == p.value)
    if p.op == "ne":
        return bool(value != p.value)
    if p.op in ("in", "not_in"):
        inside = value in (p.value if isinstance(p.value, list) else [p.value])
        return inside if p.op == "in" else not inside
    try:
        return {
            "gt": value > p.value,
            "ge": value >= p.value,
            "lt": value < p.value,
            "le": value <= p.value,
        }[p.op]
    except TypeError:
        return False


class StickyAssignments:
    """Units already assigned, per experiment: state DB table plus an in-memory cache.

    Written with ``synchronous=NORMAL`` (survives a process crash; the ``$exposure`` event
    in the durable buffer is the record of truth for analysis).
    """

    def __init__(self, path: Path) -> None:
        self._connection = connect_sqlite(path, synchronous="NORMAL", check_same_thread=False)
        self._connection.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._cache: dict[str, dict[str, str]] = {}

    def _loaded(self, experiment: str) -> dict[str, str]:
        cached = self._cache.get(experiment)
        if cached is None:
            rows = self._connection.execute(
                "SELECT unit_id, arm FROM experiment_assignments WHERE experiment = ?",
                (experiment,),
            ).fetchall()
            cached = self._cache[experiment] = {u: a for u, a in rows}
        return cached

    def get(self, experiment: str, unit_id: str) -> str | None:
        with self._lock:
            return self._loaded(experiment).get(unit_id)

    def remember(self, experiment: str, unit_id: str, arm: str) -> str:
        """Store the unit's arm unless another process did first; returns the stored arm."""
        with self._lock:
            self._connection.execute(
                "INSERT OR IGNORE INTO experiment_assignments VALUES (?, ?, ?, ?)",
                (experiment, unit_id, arm, time.time()),
            )
            row = self._connection.execute(
                "SELECT arm FROM experiment_assignments WHERE experiment = ? AND unit_id = ?",
                (experiment, unit_id),
            ).fetchone()
            stored = str(row[0]) if row else arm
            self._loaded(experiment)[unit_id] = stored
            return stored

    def count(self, experiment: str) -> int:
        with self._lock:
            return len(self._loaded(experiment))

    def close(self) -> None:
        with self._lock:
            self._connection.close()


@dataclass(frozen=True)
class _CachedSpec:
    mtime: float
    checked: float  # time.monotonic() of the last mtime check
    loaded: LoadedSpec


@dataclass(frozen=True)
class AssignResult:
    """The assignment and whether this call logged the unit's first exposure."""

    assignment: Assignment
    logged: bool

    @property
    def arm(self) -> str | None:
        return self.assignment.arm


class Assigner:
    """Assign units and log first exposures for one workspace (see the module docstring)."""

    def __init__(self, workspace: Workspace, send: Sender, *, state_ttl_s: float = 1.0) -> None:
        self.workspace = workspace
        self.send = send
        self.state_ttl_s = state_ttl_s
        self.sticky = StickyAssignments(workspace.state_path)
        self._specs: dict[str, _CachedSpec] = {}
        self._allocations: dict[
            tuple[int, RolloutState | None], tuple[ExperimentSpec, Allocation]
        ] = {}
        self._states: dict[str, tuple[float, RolloutState | None]] = {}
        self._registry = Registry(
            connect_sqlite(workspace.state_path, synchronous="FULL", check_same_thread=False)
        )
        self._lock = threading.Lock()

    def spec(self, experiment: str) -> ExperimentSpec:
        """The experiment's spec, reloaded when its file changes (metric names unchecked:
        assignment does not read metrics). The file's mtime is looked at most every
        ``state_ttl_s`` (like the rollout state), so a hot loop does no filesystem call."""
        now = time.monotonic()
        cached = self._specs.get(experiment)
        if cached is not None and now - cached.checked < self.state_ttl_s:
            return cached.loaded.spec
        path = spec_path(self.workspace, experiment)
        mtime = path.stat().st_mtime
        if cached is None or cached.mtime != mtime:
            cached = _CachedSpec(mtime, now, load_spec_file(path, root=self.workspace.root))
        else:
            cached = _CachedSpec(mtime, now, cached.loaded)
        self._specs[experiment] = cached
        return cached.loaded.spec

    def allocation(self, spec: ExperimentSpec, state: RolloutState | None) -> Allocation:
        """The hashing allocation of ``spec`` in rollout ``state`` (built once per pair)."""
        key = (id(spec), state)
        found = self._allocations.get(key)
        if found is None or found[0] is not spec:
            if len(self._allocations) > 256:
                self._allocations.clear()
            found = self._allocations[key] = (spec, allocation(spec, state))
        return found[1]

    def rollout_state(self, experiment: str) -> RolloutState | None:
        now = time.monotonic()
        cached = self._states.get(experiment)
        if cached is None or now - cached[0] >= self.state_ttl_s:
            with self._lock:
                state = self._registry.rollout_state(experiment)
            cached = self._states[experiment] = (now, state)
        return cached[1]

    def assign(
        self, experiment: str, unit_id: str, attributes: Mapping[str, Any] | None = None
    ) -> AssignResult:
        """The unit's arm (None when not enrolled, with the reason) and whether its first
        exposure was logged by this call."""
        attributes = dict(attributes or {})
        unit = str(unit_id)
        spec = self.spec(experiment)
        state = self.rollout_state(experiment)
        if state is not None and state.status == "killed":
            return AssignResult(Assignment(experiment, unit, None, "killed"), False)
        ok, why = eligible(spec, attributes)
        if not ok:
            return AssignResult(Assignment(experiment, unit, None, f"not_eligible: {why}"), False)
        previous = self.sticky.get(experiment, unit)
        if previous is not None:
            return AssignResult(Assignment(experiment, unit, previous, "assigned"), False)
        result = hash_assign(self.allocation(spec, state), unit)
        if result.arm is None:
            reason = "paused" if state is not None and state.status == "paused" else result.reason
            return AssignResult(Assignment(experiment, unit, None, reason), False)
        stored = self.sticky.remember(experiment, unit, result.arm)
        self.send(self._exposure(spec, unit, stored, attributes))
        return AssignResult(Assignment(experiment, unit, stored, "assigned"), True)

    def _exposure(
        self, spec: ExperimentSpec, unit: str, arm: str, attributes: Mapping[str, Any]
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "track",
            "event": EXPOSURE_EVENT,
            "messageId": exposure_message_id(spec.name, unit),
            "properties": {"experiment": spec.name, "variant": arm, "unit_id": unit},
            "context": exposure_context(attributes),
        }
        user = attributes.get("user_id") or (unit if spec.unit == "user" else None)
        if user:
            message["userId"] = str(user)
        else:
            message["anonymousId"] = str(attributes.get("anonymous_id") or unit)
        return message

    def close(self) -> None:
        self.sticky.close()
        self._registry.close()


def tripwire_sender(tw: Tripwire) -> Sender:
    """A :data:`Sender` that queues messages on an in-process client (same validation
    and durability as ``tw.track``)."""

    def send(message: dict[str, Any]) -> None:
        # one event: the single-event path (no batch machinery); raises
        # EventValidationError (a ValueError) if the message is invalid
        tw.track(
            message["event"],
            message.get("properties"),
            user_id=message.get("userId"),
            anonymous_id=message.get("anonymousId"),
            context=message.get("context"),
            message_id=message.get("messageId"),
        )

    return send


_ASSIGNERS: weakref.WeakKeyDictionary[Any, Assigner] = weakref.WeakKeyDictionary()
_ASSIGNERS_LOCK = threading.Lock()


def assigner_for(tw: Tripwire) -> Assigner:
    """The client's assigner (one per client, created on first use)."""
    with _ASSIGNERS_LOCK:
        found = _ASSIGNERS.get(tw)
        if found is None:
            found = _ASSIGNERS[tw] = Assigner(tw.workspace, tripwire_sender(tw))
        return found


def assign(
    tw: Tripwire, experiment: str, unit_id: str, attributes: Mapping[str, Any] | None = None
) -> str | None:
    """``tw.assign(...)``: the unit's arm (None when not enrolled); logs ``$exposure`` on
    first assignment. Wire it as ``Tripwire.assign = exposure_log.assign``."""
    return assigner_for(tw).assign(experiment, unit_id, attributes).arm
