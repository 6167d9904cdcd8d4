"""The registry: locks, amendments, looks, verdicts, overrides, rollout state, decision log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tripwire.experiments.registry import (
    AlreadyLocked,
    NotLocked,
    Registry,
    RegistryError,
    SpecChangedAfterLock,
    default_author,
    normalize_verdict,
)
from tripwire.experiments.spec import LoadedSpec, parse_spec, spec_hash
from tripwire.store.workspace import Workspace, init_workspace

T0 = datetime(2026, 11, 5, 10, tzinfo=UTC)


def loaded(mde: float = 0.05) -> LoadedSpec:
    spec = parse_spec({
        "name": "exp", "arms": [{"name": "control", "weight": 1}, {"name": "t", "weight": 1}],
        "primary": {"metric": "m", "mde": mde},
    })  # fmt: skip
    return LoadedSpec(spec, Path("experiments/exp.yaml"), spec_hash(spec))


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return init_workspace(tmp_path / "ws")


def test_lock_is_idempotent_and_refuses_another_spec(ws: Workspace) -> None:
    first, changed = loaded(), loaded(0.07)
    with Registry.open(ws) as reg:
        lock = reg.lock("exp", first.hash, {"name": "exp"}, author="ana", at=T0)
        assert (lock.hash, lock.author, lock.locked_at) == (first.hash, "ana", T0)
        assert reg.lock("exp", first.hash, {}, author="bob") == lock
        with pytest.raises(AlreadyLocked, match="already locked.*--amend"):
            reg.lock("exp", changed.hash, {}, author="bob")
        assert [d.kind for d in reg.decisions("exp")] == ["lock"]
    with Registry.open(ws) as reopened:  # durable across connections
        assert reopened.lock_of("exp") == lock


def test_analysis_needs_the_locked_spec_or_an_amendment(ws: Workspace) -> None:
    first, changed = loaded(), loaded(0.07)
    with Registry.open(ws) as reg:
        with pytest.raises(NotLocked, match="tripwire experiment lock exp"):
            reg.ensure_current(first)
        reg.lock("exp", first.hash, first.spec.model_dump(mode="json"), author="ana")
        assert reg.ensure_current(first) == first.hash
        with pytest.raises(SpecChangedAfterLock, match='--amend "reason"'):
            reg.ensure_current(changed)
        assert reg.ensure_current(changed, amend="MDE was a typo", author="bob") == changed.hash
        (amendment,) = reg.amendments("exp")
        assert (amendment.from_hash, amendment.to_hash) == (first.hash, changed.hash)
        assert amendment.reason == "MDE was a typo" and amendment.author == "bob"
        assert amendment.spec["primary"]["mde"] == 0.07
        assert reg.effective_hash("exp") == changed.hash
        assert reg.ensure_current(changed) == changed.hash  # no second amendment needed
        with pytest.raises(SpecChangedAfterLock):
            reg.ensure_current(first)  # going back is a change too
        with pytest.raises(RegistryError, match="needs a reason"):
            reg.amend("exp", first.hash, {}, "  ")
        with pytest.raises(RegistryError, match="nothing to amend"):
            reg.amend("exp", changed.hash, {}, "again")
        kinds = [d.kind for d in reg.decisions("exp")]
        assert kinds == ["lock", "amendment"]


def test_looks_verdicts_overrides_and_status(ws: Workspace) -> None:
    spec = loaded()
    with Registry.open(ws) as reg:
        assert reg.status("exp") == "draft"
        reg.lock("exp", spec.hash, {}, author="ana", at=T0)
        assert reg.status("exp") == "locked"
        look = reg.record_look("exp", 1, T0 + timedelta(days=3), spec.hash, {"n": [10, 11]},
                               at=T0 + timedelta(days=3))  # fmt: skip
        assert look.look == 1 and look.summary == {"n": [10, 11]}
        with pytest.raises(ValueError, match="start at 1"):
            reg.record_look("exp", 0, T0, spec.hash, {})
        v = reg.record_verdict("exp", "continue", "not yet at a boundary", look_id=look.id,
                               at=T0 + timedelta(days=3))  # fmt: skip
        assert v.verdict == "CONTINUE" and reg.status("exp") == "running"
        veto = reg.record_verdict("exp", "VETO", "guardrail breached: ja-JP",
                                  details={"vetoes": ["add_to_cart_by_locale[ja-JP]"]},
                                  at=T0 + timedelta(days=7))  # fmt: skip
        assert reg.final_decision("exp") == "VETO" and reg.status("exp") == "decided"
        with pytest.raises(RegistryError, match="needs a reason"):
            reg.override("exp", "SHIP", "")
        with pytest.raises(RegistryError, match="no verdict #999"):
            reg.override("exp", "SHIP", "x", verdict_id=999)
        o = reg.override("exp", "ship", "JP launch is gated separately", author="vp",
                         at=T0 + timedelta(days=8))  # fmt: skip
        assert (o.from_verdict, o.to_verdict, o.verdict_id) == ("VETO", "SHIP", veto.id)
        assert reg.final_decision("exp") == "SHIP"
        later = reg.record_verdict("exp", "INVALID", "SRM", at=T0 + timedelta(days=9))
        assert later.verdict == "INVALID" and reg.final_decision("exp") == "INVALID"
        assert reg.status("exp") == "running"
        log = reg.decisions("exp")
        assert [d.kind for d in log] == [
            "lock",
            "look",
            "verdict",
            "verdict",
            "override",
            "verdict",
        ]
        assert log[4].author == "vp" and "JP launch" in log[4].summary


def test_finished_registry_with_offline_effect(ws: Workspace) -> None:
    with Registry.open(ws) as reg:
        with pytest.raises(RegistryError, match="not in the registry"):
            reg.set_offline_effect("exp", "ndcg_at_10", 0.04)
        entry = reg.finish("exp", "ship", "adds", online_effect=0.052, online_ci=(0.01, 0.09),
                           spec_hash="ab" * 32)  # fmt: skip
        assert entry.verdict == "SHIP" and entry.offline_effect is None
        entry = reg.set_offline_effect("exp", "ndcg_at_10", 0.041)
        assert (entry.offline_metric, entry.offline_effect) == ("ndcg_at_10", 0.041)
        assert (entry.online_ci_low, entry.online_ci_high) == (0.01, 0.09)
        reg.finish("other", "VETO", "csat", online_effect=None)
        assert [e.experiment for e in reg.finished()] == ["exp", "other"]
        assert [d.kind for d in reg.decisions("exp")] == ["finished", "finished"]


def test_decisions_filters(ws: Workspace) -> None:
    with Registry.open(ws) as reg:
        for i in range(5):
            reg.log(f"e{i % 2}", "check", f"check {i}", {"i": i}, author="bot",
                    at=T0 + timedelta(hours=i))  # fmt: skip
        reg.lock("e0", "cd" * 32, {}, at=T0 + timedelta(hours=9))
        assert len(reg.decisions()) == 6
        assert [d.summary for d in reg.decisions("e1")] == ["check 1", "check 3"]
        assert [d.kind for d in reg.decisions(kind="lock")] == ["lock"]
        since = reg.decisions(since=T0 + timedelta(hours=3))
        assert [d.summary for d in since] == ["check 3", "check 4", "locked spec cdcdcdcdcdcd"]
        assert [d.details.get("i") for d in reg.decisions(limit=2)] == [4, None]


def test_rollout_state_roundtrip(ws: Workspace) -> None:
    with Registry.open(ws) as reg:
        assert reg.rollout_state("exp") is None
        reg.set_rollout_state("exp", 0, "running", "started", author="ana")
        state = reg.set_rollout_state("exp", 1, "paused", "p99 breach", details={"p99": 1800})
        assert (state.stage, state.status, state.reason) == (1, "paused", "p99 breach")
        with pytest.raises(ValueError, match="unknown rollout status"):
            reg.set_rollout_state("exp", 1, "exploded", "x")  # type: ignore[arg-type]
        log = reg.decisions("exp", kind="rollout")
        assert [d.details["status"] for d in log] == ["running", "paused"]
        assert log[1].details["p99"] == 1800


def test_verdict_names_and_author(monkeypatch: pytest.MonkeyPatch) -> None:
    assert normalize_verdict("stop-for-futility") == "STOP-FOR-FUTILITY"
    with pytest.raises(ValueError, match="unknown verdict 'MAYBE'"):
        normalize_verdict("MAYBE")
    monkeypatch.setenv("TRIPWIRE_AUTHOR", "ci-bot")
    assert default_author() == "ci-bot"
