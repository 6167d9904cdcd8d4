"""Pre-registration locks, the decision log and the finished-experiment registry.

Everything lives in the workspace's state database (:func:`tripwire.store.state.connect_state`)
in tables this module owns:

=========================  ==================================================================
table                      one row per
=========================  ==================================================================
``experiment_locks``       lock: content hash of the canonical spec, the spec, time, author
``experiment_amendments``  change of a locked spec: old and new hash, reason, who, when
``experiment_looks``       analysis look: index, data cutoff, spec hash, summary numbers
``experiment_verdicts``    mechanical verdict of a look and the rule that produced it
``experiment_overrides``   human override of a verdict: to what, why, who
``experiment_rollouts``    current rollout state: stage, status (running/paused/killed), why
``experiment_registry``    finished experiment: verdict, online effect (CI), offline effect
``decision_log``           every one of the above, in order, as one queryable log
=========================  ==================================================================

Pre-registration contract: an analysis runs only against the spec that was locked, or
against a later version whose change was recorded as an amendment with a reason
(:meth:`Registry.ensure_current`). Hashes are of :meth:`ExperimentSpec.canonical`, so
reformatting or comments never count as a change.
"""

from __future__ import annotations

import getpass
import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from tripwire.experiments.spec import LoadedSpec
from tripwire.store.state import connect_state
from tripwire.store.workspace import Workspace

#: Verdicts the decision rule produces (``STOP-FOR-FUTILITY`` may be written with ``_``).
VERDICTS = ("SHIP", "VETO", "CONTINUE", "INCONCLUSIVE", "STOP-FOR-FUTILITY", "INVALID")
#: Verdicts that end an experiment.
FINAL_VERDICTS = ("SHIP", "VETO", "INCONCLUSIVE", "STOP-FOR-FUTILITY")
DecisionKind = Literal[
    "lock", "amendment", "look", "verdict", "override", "rollout", "check", "finished"
]
RolloutStatus = Literal["running", "paused", "killed", "completed"]
ExperimentStatus = Literal["draft", "locked", "running", "decided"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiment_locks (
    experiment TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    spec TEXT NOT NULL,
    locked_at TEXT NOT NULL,
    author TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS experiment_amendments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment TEXT NOT NULL REFERENCES experiment_locks(experiment),
    from_hash TEXT NOT NULL,
    to_hash TEXT NOT NULL,
    spec TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL,
    author TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS experiment_looks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment TEXT NOT NULL,
    look INTEGER NOT NULL,
    data_until TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    summary TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS experiment_verdicts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment TEXT NOT NULL,
    look_id INTEGER REFERENCES experiment_looks(id),
    verdict TEXT NOT NULL,
    rule TEXT NOT NULL,
    details TEXT NOT NULL,
    at TEXT NOT NULL,
    author TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS experiment_overrides (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment TEXT NOT NULL,
    verdict_id INTEGER REFERENCES experiment_verdicts(id),
    from_verdict TEXT,
    to_verdict TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL,
    author TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS experiment_rollouts (
    experiment TEXT PRIMARY KEY,
    stage INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    author TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS experiment_registry (
    experiment TEXT PRIMARY KEY,
    verdict TEXT NOT NULL,
    metric TEXT NOT NULL,
    online_effect REAL,
    online_ci_low REAL,
    online_ci_high REAL,
    offline_metric TEXT,
    offline_effect REAL,
    spec_hash TEXT,
    finished_at TEXT NOT NULL,
    notes TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS decision_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment TEXT NOT NULL,
    kind TEXT NOT NULL,
    summary TEXT NOT NULL,
    details TEXT NOT NULL,
    at TEXT NOT NULL,
    author TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decision_log_experiment ON decision_log(experiment, id);
"""


class RegistryError(RuntimeError):
    """A registry operation that the pre-registration contract does not allow."""


class NotLocked(RegistryError):
    """The experiment has no lock yet (run ``tripwire experiment lock NAME``)."""


class AlreadyLocked(RegistryError):
    """Locking again with a different spec: changes after lock are amendments."""


class SpecChangedAfterLock(RegistryError):
    """The spec on disk differs from the locked (or last amended) one, and no amendment
    reason was given."""

    def __init__(self, experiment: str, locked_hash: str, current_hash: str) -> None:
        self.experiment, self.locked_hash, self.current_hash = (
            experiment,
            locked_hash,
            current_hash,
        )
        super().__init__(
            f"experiment {experiment!r}: the spec changed after it was locked "
            f"(locked {locked_hash[:12]}, now {current_hash[:12]}); analysis refuses to run. "
            f'Revert the change, or record it with --amend "reason".'
        )


def default_author() -> str:
    """Who is acting: ``$TRIPWIRE_AUTHOR``, else the OS user name."""
    name = os.environ.get("TRIPWIRE_AUTHOR")
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


def normalize_verdict(verdict: str) -> str:
    """``"stop_for_futility"`` → ``"STOP-FOR-FUTILITY"``; unknown verdicts raise.

    >>> normalize_verdict("ship"), normalize_verdict("STOP_FOR_FUTILITY")
    ('SHIP', 'STOP-FOR-FUTILITY')
    """
    value = str(verdict).strip().upper().replace("_", "-")
    if value not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r}; expected one of {', '.join(VERDICTS)}")
    return value


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str:
    moment = moment or _now()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Lock:
    """A pre-registration: the spec's hash, the canonical spec, when and by whom."""

    experiment: str
    hash: str
    spec: dict[str, Any]
    locked_at: datetime
    author: str


@dataclass(frozen=True)
class Amendment:
    """A recorded change of a locked spec."""

    id: int
    experiment: str
    from_hash: str
    to_hash: str
    spec: dict[str, Any]
    reason: str
    at: datetime
    author: str


@dataclass(frozen=True)
class Look:
    """One analysis look (``look`` is 1-based) and the numbers it saw."""

    id: int
    experiment: str
    look: int
    data_until: datetime
    spec_hash: str
    summary: dict[str, Any]
    at: datetime


@dataclass(frozen=True)
class Verdict:
    """A mechanical verdict and the rule that produced it."""

    id: int
    experiment: str
    look_id: int | None
    verdict: str
    rule: str
    details: dict[str, Any]
    at: datetime
    author: str


@dataclass(frozen=True)
class Override:
    """A human decision that replaces a mechanical verdict, with the reason."""

    id: int
    experiment: str
    verdict_id: int | None
    from_verdict: str | None
    to_verdict: str
    reason: str
    at: datetime
    author: str


@dataclass(frozen=True)
class RolloutState:
    """Where a staged rollout stands: stage index (0-based) and status."""

    experiment: str
    stage: int
    status: RolloutStatus
    reason: str
    updated_at: datetime
    author: str


@dataclass(frozen=True)
class FinishedExperiment:
    """Registry entry of a decided experiment: online effect (relative, with CI) of the
    primary metric and, when known, the offline effect that predicted it (e.g. NDCG Δ)."""

    experiment: str
    verdict: str
    metric: str
    online_effect: float | None
    online_ci_low: float | None
    online_ci_high: float | None
    offline_metric: str | None
    offline_effect: float | None
    spec_hash: str | None
    finished_at: datetime
    notes: str


@dataclass(frozen=True)
class Decision:
    """One entry of the decision log."""

    id: int
    experiment: str
    kind: str
    summary: str
    details: dict[str, Any]
    at: datetime
    author: str


# --------------------------------------------------------------------------- the registry


class Registry:
    """The experiments' tables in a workspace's state database.

    >>> import tempfile, pathlib
    >>> from tripwire.store.workspace import init_workspace
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with Registry.open(init_workspace(pathlib.Path(folder))) as reg:
    ...         _ = reg.lock("exp", "ab" * 32, {"name": "exp"}, author="ana")
    ...         kinds = [d.kind for d in reg.decisions("exp")]
    ...         status = reg.status("exp")
    >>> kinds, status
    (['lock'], 'locked')
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.connection.executescript(_SCHEMA)

    @classmethod
    def open(cls, workspace: Workspace) -> Registry:
        return cls(connect_state(workspace))

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield self.connection
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    def _log(
        self,
        experiment: str,
        kind: DecisionKind,
        summary: str,
        details: Mapping[str, Any],
        at: str,
        author: str,
    ) -> None:
        self.connection.execute(
            "INSERT INTO decision_log (experiment, kind, summary, details, at, author) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (experiment, kind, summary, json.dumps(details, default=str), at, author),
        )

    def log(
        self,
        experiment: str,
        kind: DecisionKind,
        summary: str,
        details: Mapping[str, Any] | None = None,
        *,
        author: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Append a free entry to the decision log (e.g. a rollout check that passed)."""
        with self._transaction():
            self._log(
                experiment, kind, summary, details or {}, _iso(at), author or default_author()
            )

    # -- locks and amendments --------------------------------------------------------------

    def lock(
        self,
        experiment: str,
        spec_hash: str,
        spec: Mapping[str, Any],
        *,
        author: str | None = None,
        at: datetime | None = None,
    ) -> Lock:
        """Pre-register ``experiment``. Locking again with the same hash returns the
        existing lock; with another hash raises :class:`AlreadyLocked`."""
        existing = self.lock_of(experiment)
        if existing is not None:
            if self.effective_hash(experiment) == spec_hash or existing.hash == spec_hash:
                return existing
            raise AlreadyLocked(
                f"experiment {experiment!r} is already locked (hash {existing.hash[:12]}, "
                f"{existing.locked_at:%Y-%m-%d %H:%M} UTC by {existing.author}); "
                f'a changed spec is recorded with --amend "reason"'
            )
        who, when = author or default_author(), _iso(at)
        with self._transaction() as con:
            con.execute(
                "INSERT INTO experiment_locks VALUES (?, ?, ?, ?, ?)",
                (experiment, spec_hash, json.dumps(spec, sort_keys=True), when, who),
            )
            self._log(
                experiment, "lock", f"locked spec {spec_hash[:12]}", {"hash": spec_hash}, when, who
            )
        lock = self.lock_of(experiment)
        assert lock is not None
        return lock

    def lock_of(self, experiment: str) -> Lock | None:
        row = self.connection.execute(
            "SELECT experiment, hash, spec, locked_at, author FROM experiment_locks "
            "WHERE experiment = ?",
            (experiment,),
        ).fetchone()
        if row is None:
            return None
        return Lock(row[0], row[1], json.loads(row[2]), _time(row[3]), row[4])

    def amend(
        self,
        experiment: str,
        spec_hash: str,
        spec: Mapping[str, Any],
        reason: str,
        *,
        author: str | None = None,
        at: datetime | None = None,
    ) -> Amendment:
        """Record that the locked spec changed to ``spec_hash``, and why."""
        if not reason or not reason.strip():
            raise RegistryError("an amendment needs a reason")
        if self.lock_of(experiment) is None:
            raise NotLocked(f"experiment {experiment!r} is not locked: nothing to amend")
        previous = self.effective_hash(experiment)
        assert previous is not None
        if previous == spec_hash:
            raise RegistryError(
                f"experiment {experiment!r}: the spec equals the locked one; nothing to amend"
            )
        who, when = author or default_author(), _iso(at)
        with self._transaction() as con:
            con.execute(
                "INSERT INTO experiment_amendments "
                "(experiment, from_hash, to_hash, spec, reason, at, author) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    experiment,
                    previous,
                    spec_hash,
                    json.dumps(spec, sort_keys=True),
                    reason,
                    when,
                    who,
                ),
            )
            self._log(
                experiment,
                "amendment",
                f"amended {previous[:12]} → {spec_hash[:12]}: {reason}",
                {"from_hash": previous, "to_hash": spec_hash, "reason": reason},
                when,
                who,
            )
        return self.amendments(experiment)[-1]

    def amendments(self, experiment: str) -> list[Amendment]:
        rows = self.connection.execute(
            "SELECT id, experiment, from_hash, to_hash, spec, reason, at, author "
            "FROM experiment_amendments WHERE experiment = ? ORDER BY id",
            (experiment,),
        ).fetchall()
        return [
            Amendment(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], _time(r[6]), r[7])
            for r in rows
        ]

    def effective_hash(self, experiment: str) -> str | None:
        """The hash analyses must match: the last amendment's, else the lock's."""
        row = self.connection.execute(
            "SELECT to_hash FROM experiment_amendments WHERE experiment = ? ORDER BY id DESC LIMIT 1",
            (experiment,),
        ).fetchone()
        if row is not None:
            return str(row[0])
        lock = self.lock_of(experiment)
        return lock.hash if lock else None

    def ensure_current(
        self, loaded: LoadedSpec, *, amend: str | None = None, author: str | None = None
    ) -> str:
        """Check the spec on disk against the pre-registration before an analysis.

        Returns the hash to analyse under. Raises :class:`NotLocked` if never locked, and
        :class:`SpecChangedAfterLock` if it changed and no ``amend`` reason is given; with
        a reason, the change is recorded as an amendment first.
        """
        name = loaded.spec.name
        locked = self.effective_hash(name)
        if locked is None:
            raise NotLocked(
                f"experiment {name!r} is not locked: run `tripwire experiment lock {name}` "
                "before analysing it (pre-registration)"
            )
        if locked == loaded.hash:
            return locked
        if not amend:
            raise SpecChangedAfterLock(name, locked, loaded.hash)
        self.amend(name, loaded.hash, loaded.spec.model_dump(mode="json"), amend, author=author)
        return loaded.hash

    # -- looks, verdicts, overrides --------------------------------------------------------

    def record_look(
        self,
        experiment: str,
        look: int,
        data_until: datetime,
        spec_hash: str,
        summary: Mapping[str, Any],
        *,
        author: str | None = None,
        at: datetime | None = None,
    ) -> Look:
        """Record an analysis look and the numbers it saw."""
        if look < 1:
            raise ValueError(f"look numbers start at 1, got {look}")
        who, when = author or default_author(), _iso(at)
        with self._transaction() as con:
            cursor = con.execute(
                "INSERT INTO experiment_looks (experiment, look, data_until, spec_hash, summary, at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    experiment,
                    look,
                    _iso(data_until),
                    spec_hash,
                    json.dumps(summary, default=str),
                    when,
                ),
            )
            self._log(
                experiment,
                "look",
                f"look {look} on data until {data_until:%Y-%m-%d %H:%M}",
                {"look": look, "data_until": _iso(data_until), "spec_hash": spec_hash, **summary},
                when,
                who,
            )
        look_id = int(cursor.lastrowid or 0)
        return next(x for x in self.looks(experiment) if x.id == look_id)

    def looks(self, experiment: str) -> list[Look]:
        rows = self.connection.execute(
            "SELECT id, experiment, look, data_until, spec_hash, summary, at FROM experiment_looks "
            "WHERE experiment = ? ORDER BY id",
            (experiment,),
        ).fetchall()
        return [
            Look(r[0], r[1], r[2], _time(r[3]), r[4], json.loads(r[5]), _time(r[6])) for r in rows
        ]

    def record_verdict(
        self,
        experiment: str,
        verdict: str,
        rule: str,
        *,
        look_id: int | None = None,
        details: Mapping[str, Any] | None = None,
        author: str | None = None,
        at: datetime | None = None,
    ) -> Verdict:
        """Record a mechanical verdict (one of :data:`VERDICTS`) and its rule."""
        value = normalize_verdict(verdict)
        who, when = author or default_author(), _iso(at)
        with self._transaction() as con:
            cursor = con.execute(
                "INSERT INTO experiment_verdicts (experiment, look_id, verdict, rule, details, at, author) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    experiment,
                    look_id,
                    value,
                    rule,
                    json.dumps(details or {}, default=str),
                    when,
                    who,
                ),
            )
            self._log(
                experiment,
                "verdict",
                f"{value}: {rule}",
                {"verdict": value, "rule": rule, "look_id": look_id, **(details or {})},
                when,
                who,
            )
        verdict_id = int(cursor.lastrowid or 0)
        return next(v for v in self.verdicts(experiment) if v.id == verdict_id)

    def verdicts(self, experiment: str) -> list[Verdict]:
        rows = self.connection.execute(
            "SELECT id, experiment, look_id, verdict, rule, details, at, author "
            "FROM experiment_verdicts WHERE experiment = ? ORDER BY id",
            (experiment,),
        ).fetchall()
        return [
            Verdict(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), _time(r[6]), r[7]) for r in rows
        ]

    def latest_verdict(self, experiment: str) -> Verdict | None:
        found = self.verdicts(experiment)
        return found[-1] if found else None

    def override(
        self,
        experiment: str,
        to_verdict: str,
        reason: str,
        *,
        verdict_id: int | None = None,
        author: str | None = None,
        at: datetime | None = None,
    ) -> Override:
        """Replace a mechanical verdict (default: the latest) by a human decision, with why."""
        if not reason or not reason.strip():
            raise RegistryError("an override needs a reason")
        value = normalize_verdict(to_verdict)
        target = (
            next((v for v in self.verdicts(experiment) if v.id == verdict_id), None)
            if verdict_id is not None
            else self.latest_verdict(experiment)
        )
        if verdict_id is not None and target is None:
            raise RegistryError(f"experiment {experiment!r} has no verdict #{verdict_id}")
        from_verdict = target.verdict if target else None
        who, when = author or default_author(), _iso(at)
        with self._transaction() as con:
            cursor = con.execute(
                "INSERT INTO experiment_overrides "
                "(experiment, verdict_id, from_verdict, to_verdict, reason, at, author) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (experiment, target.id if target else None, from_verdict, value, reason, when, who),
            )
            self._log(
                experiment,
                "override",
                f"override {from_verdict or '(none)'} → {value}: {reason}",
                {
                    "from": from_verdict,
                    "to": value,
                    "reason": reason,
                    "verdict_id": target and target.id,
                },
                when,
                who,
            )
        override_id = int(cursor.lastrowid or 0)
        return next(o for o in self.overrides(experiment) if o.id == override_id)

    def overrides(self, experiment: str) -> list[Override]:
        rows = self.connection.execute(
            "SELECT id, experiment, verdict_id, from_verdict, to_verdict, reason, at, author "
            "FROM experiment_overrides WHERE experiment = ? ORDER BY id",
            (experiment,),
        ).fetchall()
        return [Override(r[0], r[1], r[2], r[3], r[4], r[5], _time(r[6]), r[7]) for r in rows]

    def final_decision(self, experiment: str) -> str | None:
        """The decision in force: the latest override if newer than the latest verdict,
        else the latest verdict."""
        verdict = self.latest_verdict(experiment)
        overrides = self.overrides(experiment)
        if overrides and (verdict is None or overrides[-1].at >= verdict.at):
            return overrides[-1].to_verdict
        return verdict.verdict if verdict else None

    # -- rollout state ---------------------------------------------------------------------

    def rollout_state(self, experiment: str) -> RolloutState | None:
        row = self.connection.execute(
            "SELECT experiment, stage, status, reason, updated_at, author "
            "FROM experiment_rollouts WHERE experiment = ?",
            (experiment,),
        ).fetchone()
        if row is None:
            return None
        return RolloutState(row[0], row[1], row[2], row[3], _time(row[4]), row[5])

    def set_rollout_state(
        self,
        experiment: str,
        stage: int,
        status: RolloutStatus,
        reason: str,
        *,
        details: Mapping[str, Any] | None = None,
        author: str | None = None,
        at: datetime | None = None,
    ) -> RolloutState:
        """Move the rollout to ``stage``/``status`` and log why."""
        if status not in ("running", "paused", "killed", "completed"):
            raise ValueError(f"unknown rollout status {status!r}")
        who, when = author or default_author(), _iso(at)
        with self._transaction() as con:
            con.execute(
                "INSERT INTO experiment_rollouts VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(experiment) DO UPDATE SET stage = excluded.stage, "
                "status = excluded.status, reason = excluded.reason, "
                "updated_at = excluded.updated_at, author = excluded.author",
                (experiment, stage, status, reason, when, who),
            )
            self._log(
                experiment,
                "rollout",
                f"rollout stage {stage + 1} {status}: {reason}",
                {"stage": stage, "status": status, "reason": reason, **(details or {})},
                when,
                who,
            )
        state = self.rollout_state(experiment)
        assert state is not None
        return state

    # -- finished experiments --------------------------------------------------------------

    def finish(
        self,
        experiment: str,
        verdict: str,
        metric: str,
        *,
        online_effect: float | None,
        online_ci: tuple[float, float] | None = None,
        offline_metric: str | None = None,
        offline_effect: float | None = None,
        spec_hash: str | None = None,
        notes: str = "",
        author: str | None = None,
        at: datetime | None = None,
    ) -> FinishedExperiment:
        """Enter a decided experiment in the registry (replacing an earlier entry)."""
        value = normalize_verdict(verdict)
        low, high = online_ci if online_ci is not None else (None, None)
        who, when = author or default_author(), _iso(at)
        with self._transaction() as con:
            con.execute(
                "INSERT OR REPLACE INTO experiment_registry VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (experiment, value, metric, online_effect, low, high, offline_metric,
                 offline_effect, spec_hash, when, notes),
            )  # fmt: skip
            self._log(
                experiment,
                "finished",
                f"finished: {value}, {metric} online effect "
                + ("n/a" if online_effect is None else f"{online_effect:+.4g}"),
                {"verdict": value, "metric": metric, "online_effect": online_effect,
                 "online_ci": online_ci, "offline_metric": offline_metric,
                 "offline_effect": offline_effect},
                when,
                who,
            )  # fmt: skip
        entry = self.finished(experiment)
        return entry[0]

    def set_offline_effect(
        self, experiment: str, metric: str, effect: float, *, author: str | None = None
    ) -> FinishedExperiment:
        """Attach the offline effect (e.g. NDCG@10 delta) to a finished experiment."""
        if not self.finished(experiment):
            raise RegistryError(
                f"experiment {experiment!r} is not in the registry of finished ones"
            )
        who, when = author or default_author(), _iso(None)
        with self._transaction() as con:
            con.execute(
                "UPDATE experiment_registry SET offline_metric = ?, offline_effect = ? "
                "WHERE experiment = ?",
                (metric, effect, experiment),
            )
            self._log(
                experiment, "finished", f"offline effect {metric} {effect:+.4g}",
                {"offline_metric": metric, "offline_effect": effect}, when, who,
            )  # fmt: skip
        return self.finished(experiment)[0]

    def finished(self, experiment: str | None = None) -> list[FinishedExperiment]:
        """Finished experiments (all, or the one named), oldest first."""
        query = (
            "SELECT experiment, verdict, metric, online_effect, online_ci_low, online_ci_high, "
            "offline_metric, offline_effect, spec_hash, finished_at, notes FROM experiment_registry"
        )
        params: tuple[Any, ...] = ()
        if experiment is not None:
            query += " WHERE experiment = ?"
            params = (experiment,)
        rows = self.connection.execute(query + " ORDER BY finished_at", params).fetchall()
        return [
            FinishedExperiment(*r[:9], finished_at=_time(r[9]), notes=r[10])  # type: ignore[misc]
            for r in rows
        ]

    # -- the log ---------------------------------------------------------------------------

    def decisions(
        self,
        experiment: str | None = None,
        *,
        kind: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[Decision]:
        """The decision log, oldest first; filtered by experiment, kind and time. With
        ``limit``, the most recent ``limit`` entries (still oldest first)."""
        clauses, params = [], []
        if experiment is not None:
            clauses.append("experiment = ?")
            params.append(experiment)
        if kind is not None:
            clauses.append("kind = ?")
            params.append(kind)
        if since is not None:
            clauses.append("at >= ?")
            params.append(_iso(since))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        query = f"SELECT id, experiment, kind, summary, details, at, author FROM decision_log{where} ORDER BY id DESC"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        rows = self.connection.execute(query, params).fetchall()
        return [
            Decision(r[0], r[1], r[2], r[3], json.loads(r[4]), _time(r[5]), r[6])
            for r in reversed(rows)
        ]

    def status(self, experiment: str) -> ExperimentStatus:
        """draft (not locked), locked (no look yet), running (looks, no final verdict),
        decided (a final verdict or override in force)."""
        if self.lock_of(experiment) is None:
            return "draft"
        decision = self.final_decision(experiment)
        if decision in FINAL_VERDICTS:
            return "decided"
        return "running" if self.looks(experiment) else "locked"


def open_registry(workspace: Workspace) -> Registry:
    """The registry of ``workspace`` (close it, or use it as a context manager)."""
    return Registry.open(workspace)
