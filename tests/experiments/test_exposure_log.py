"""In-process assignment: sticky arms, first-exposure logging, rollout states, population."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tripwire
from tripwire.experiments import exposure_log
from tripwire.experiments.assignment import Allocation, assign
from tripwire.experiments.exposure_log import Assigner, exposure_context, exposure_message_id
from tripwire.experiments.registry import Registry
from tripwire.store.workspace import Workspace, init_workspace

SPEC = """\
name: exp
population:
  where: {locale: [en-US, de-DE]}
arms:
  - {name: control, weight: 1}
  - {name: treatment, weight: 1}
primary: {metric: m, mde: 5%}
rollout:
  stages:
    - share: 20%
    - share: 100%
"""


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    workspace = init_workspace(tmp_path / "ws")
    (workspace.experiments_dir / "exp.yaml").write_text(SPEC)
    return workspace


class Sent(list[dict[str, Any]]):
    def __call__(self, message: dict[str, Any]) -> None:
        self.append(message)


def test_first_assignment_logs_once_and_is_sticky(ws: Workspace) -> None:
    sent = Sent()
    assigner = Assigner(ws, sent, state_ttl_s=0)
    units = [f"u{i}" for i in range(400)]
    arms = {u: assigner.assign("exp", u, {"locale": "en-US", "device": "web"}).arm for u in units}
    enrolled = {u: a for u, a in arms.items() if a is not None}
    # the first stage enrols 20%, with the published hash (same arms as assignment.assign)
    expected = Allocation("exp", ("control", "treatment"), (1, 1), rollout=0.2)
    assert enrolled == {u: assign(expected, u).arm for u in units if assign(expected, u).arm}
    assert 40 < len(enrolled) < 120
    assert len(sent) == len(enrolled)
    first = sent[0]
    assert first["event"] == "$exposure" and first["userId"] == first["properties"]["unit_id"]
    assert first["properties"]["experiment"] == "exp"
    assert first["messageId"] == exposure_message_id("exp", first["userId"])
    assert first["context"] == {"locale": "en-US", "device": {"model": "web"}}
    again = [assigner.assign("exp", u, {"locale": "en-US"}) for u in enrolled]
    assert all(r.arm == enrolled[r.assignment.unit_id] and not r.logged for r in again)
    assert len(sent) == len(enrolled)  # no second exposure
    assigner.close()
    # another process (a new assigner) sees the same sticky arms and logs nothing
    other = Assigner(ws, Sent(), state_ttl_s=0)
    assert other.sticky.count("exp") == len(enrolled)
    unit = next(iter(enrolled))
    assert other.assign("exp", unit, {"locale": "en-US"}).logged is False
    other.close()


def test_rollout_states_and_population(ws: Workspace) -> None:
    sent = Sent()
    assigner = Assigner(ws, sent, state_ttl_s=0)
    outside = assigner.assign("exp", "u1", {"locale": "ja-JP"})
    assert outside.arm is None and outside.assignment.reason.startswith("not_eligible: locale in")
    missing = assigner.assign("exp", "u1", {})
    assert missing.arm is None and "got None" in missing.assignment.reason
    units = [f"u{i}" for i in range(300)]
    before = {u: assigner.assign("exp", u, {"locale": "de-DE"}).arm for u in units}
    with Registry.open(ws) as reg:
        reg.set_rollout_state("exp", 0, "paused", "p99 breach")
    paused = {u: assigner.assign("exp", u, {"locale": "de-DE"}) for u in units}
    for u in units:  # assigned units keep their arm; new ones get nothing
        if before[u] is not None:
            assert paused[u].arm == before[u]
        else:
            assert paused[u].arm is None and paused[u].assignment.reason == "paused"
    with Registry.open(ws) as reg:
        reg.set_rollout_state("exp", 1, "running", "advanced to 100%")
    grown = {u: assigner.assign("exp", u, {"locale": "de-DE"}).arm for u in units}
    assert all(grown[u] == before[u] for u in units if before[u] is not None)
    assert all(a is not None for a in grown.values())
    with Registry.open(ws) as reg:
        reg.set_rollout_state("exp", 1, "killed", "kill switch")
    killed = assigner.assign("exp", units[0], {"locale": "de-DE"})
    assert killed.arm is None and killed.assignment.reason == "killed"
    assigner.close()


def test_spec_changes_are_picked_up(ws: Workspace) -> None:
    assigner = Assigner(ws, Sent(), state_ttl_s=0)
    assert assigner.spec("exp").population.where
    path = ws.experiments_dir / "exp.yaml"
    path.write_text(SPEC.replace("population:\n  where: {locale: [en-US, de-DE]}\n", ""))
    import os

    os.utime(path, (1e9, 1e9))  # a different mtime even on coarse clocks
    assert assigner.spec("exp").population.where == []
    assigner.close()


def test_context_mapping() -> None:
    context = exposure_context(
        {"locale": "ja-JP", "device": "Echo Show", "app_version": "5.1", "os": "iOS",
         "tenure": "new", "user_id": "u1"}
    )  # fmt: skip
    assert context == {
        "locale": "ja-JP", "device": {"model": "Echo Show"}, "app": {"version": "5.1"},
        "os": {"name": "iOS"}, "traits": {"tenure": "new"},
    }  # fmt: skip


def test_tw_assign_lands_one_exposure_in_the_lake(ws: Workspace) -> None:
    without_rollout = SPEC.split("rollout:")[0]
    (ws.experiments_dir / "exp.yaml").write_text(without_rollout)
    with tripwire.open(ws.root) as tw:
        arm = tw.assign("exp", "u7", {"locale": "en-US"})
        assert arm in ("control", "treatment")
        assert tw.assign("exp", "u7", {"locale": "en-US"}) == arm
        assert exposure_log.assign(tw, "exp", "u7", {"locale": "en-US"}) == arm
        assert tw.assign("exp", "u8", {"locale": "ja-JP"}) is None  # outside the population
        # a retry of the same first exposure from elsewhere is deduplicated by messageId
        exposure_log.tripwire_sender(tw)(
            exposure_log.assigner_for(tw)._exposure(  # noqa: SLF001
                exposure_log.assigner_for(tw).spec("exp"), "u7", arm, {"locale": "en-US"}
            )
        )
        rows = tw.sql(
            "SELECT user_id, prop_experiment, prop_variant, locale FROM events "
            "WHERE event = '$exposure'"
        ).to_pylist()
    assert rows == [
        {"user_id": "u7", "prop_experiment": "exp", "prop_variant": arm, "locale": "en-US"}
    ]
    with tripwire.open(ws.root) as again:  # a new client (as another process): sticky, no re-log
        assert again.assign("exp", "u7", {"locale": "en-US"}) == arm
        assert (
            again.sql("SELECT count(*) AS n FROM events WHERE event = '$exposure'").to_pylist()[0][
                "n"
            ]
            == 1
        )
