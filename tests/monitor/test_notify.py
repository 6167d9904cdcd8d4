"""Webhook delivery against a real HTTP receiver on loopback: payloads, retries, restarts."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tripwire.monitor.alerts import AlertDraft, AlertStore
from tripwire.monitor.notify import Dispatcher, NotifierConfigError, notifiers_from_config

T0 = datetime(2026, 11, 7, 18, 20, tzinfo=UTC)


class Receiver:
    """A loopback HTTP server recording every POST; ``fail_next`` answers 503 that many times."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], dict]] = []
        self.fail_next = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.fail_next:
                    receiver.fail_next -= 1
                    self.send_response(503)
                else:
                    receiver.requests.append((dict(self.headers), json.loads(body)))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def draft(segment: dict[str, str], severity: str, minutes: int) -> AlertDraft:
    at = T0 + timedelta(minutes=minutes)
    return AlertDraft(
        "conv",
        f"r{severity}",
        "voice_checkout_conversion",
        severity,
        segment,
        at,
        at - timedelta(minutes=8),
        0.4,
        0.62,
        0.5,
        0.74,
        -1,
        "detector down",
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_exactly_the_expected_alerts_survive_restarts(receiver: Receiver, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    config = [
        {"name": "slack", "url": receiver.url, "format": "slack", "min_severity": "P2"},
        {"name": "generic", "url": receiver.url, "format": "json", "events": ["firing"]},
    ]
    notifiers = notifiers_from_config(config)
    clock = Clock()
    with AlertStore(sqlite3.connect(db, isolation_level=None)) as store:
        p1 = store.fire(draft({"locale": "en-GB"}, "P1", 0)).alert_id
        store.fire(draft({"locale": "en-GB", "device": "Echo Show"}, "P1", 1))  # grouped: no page
        p3 = store.fire(draft({"locale": "de-DE"}, "P3", 2)).alert_id
        report = Dispatcher(store, notifiers, clock=clock).deliver_due()
    assert report.delivered == 3 and report.failed == 0
    got = sorted(
        (h["X-Tripwire-Delivery"].split(":")[0], body.get("event", "slack"))
        for h, body in receiver.requests
    )
    assert got == [("generic", "firing"), ("generic", "firing"), ("slack", "slack")]
    slack = next(b for h, b in receiver.requests if h["X-Tripwire-Delivery"].startswith("slack"))
    assert slack["text"].startswith("[P1 firing] voice_checkout_conversion (locale=en-GB)")
    assert slack["blocks"][0]["type"] == "section"
    generic = [b for h, b in receiver.requests if h["X-Tripwire-Delivery"].startswith("generic")]
    assert sorted(b["alert"]["id"] for b in generic) == [p1, p3]
    assert generic[0]["alert"]["interval"] == [0.5, 0.74] and generic[0]["alert"]["onset_at"]

    # restart: a new process, a new dispatcher; nothing is re-sent
    with AlertStore(sqlite3.connect(db, isolation_level=None)) as store:
        assert Dispatcher(store, notifiers, clock=clock).deliver_due().delivered == 0
        assert len(receiver.requests) == 3
        # an alert resolved and one opened while no dispatcher runs are not lost
        store.resolve(p1, by="oncall", at=T0 + timedelta(hours=1))
        store.fire(draft({"locale": "fr-FR"}, "P2", 90))
    with AlertStore(sqlite3.connect(db, isolation_level=None)) as store:
        report = Dispatcher(store, notifiers, clock=clock).deliver_due()
    new = [
        (h["X-Tripwire-Delivery"].split(":")[0], b.get("event") or b["text"][:14])
        for h, b in receiver.requests[3:]
    ]
    assert sorted(new) == [
        ("generic", "firing"),
        ("slack", "[P1 RESOLVED] "),
        ("slack", "[P2 firing] vo"),
    ]
    assert report.delivered == 3


def test_retries_with_backoff_then_delivers(receiver: Receiver, tmp_path: Path) -> None:
    notifiers = notifiers_from_config(
        [{"name": "hook", "url": receiver.url, "backoff_seconds": 10}]
    )
    clock = Clock()
    receiver.fail_next = 2
    with AlertStore(sqlite3.connect(tmp_path / "s.db", isolation_level=None)) as store:
        store.fire(draft({}, "P1", 0))
        dispatcher = Dispatcher(store, notifiers, clock=clock)
        assert dispatcher.deliver_due().retrying == 1
        assert dispatcher.deliver_due().retrying == 0  # not due yet: backoff 10 s
        clock.now += 10
        assert dispatcher.deliver_due().retrying == 1  # second failure: backoff 20 s
        clock.now += 19
        assert dispatcher.deliver_due().delivered == 0
        clock.now += 1
        assert dispatcher.deliver_due().delivered == 1
        log = dispatcher.log()
    assert [entry["http_status"] for entry in reversed(log)] == [503, 503, 200]
    assert len(receiver.requests) == 1


def test_unreachable_receiver_gives_up_and_logs(tmp_path: Path) -> None:
    notifiers = notifiers_from_config(
        [
            {
                "name": "dead",
                "url": "http://127.0.0.1:9/x",
                "max_attempts": 2,
                "backoff_seconds": 1,
                "timeout_seconds": 1,
            }
        ]
    )
    clock = Clock()
    with AlertStore(sqlite3.connect(tmp_path / "s.db", isolation_level=None)) as store:
        store.fire(draft({}, "P1", 0))
        dispatcher = Dispatcher(store, notifiers, clock=clock)
        dispatcher.deliver_due()
        clock.now += 5
        assert dispatcher.deliver_due().failed == 1
        assert all(entry["error"] for entry in dispatcher.log())


def test_notifier_config_errors() -> None:
    with pytest.raises(NotifierConfigError, match=r"notifiers\[0\]\.url"):
        notifiers_from_config([{"name": "x", "url": "ftp://nope"}])
    with pytest.raises(NotifierConfigError, match=r"notifiers\[0\]\.format"):
        notifiers_from_config([{"url": "http://x", "format": "xml"}])
    with pytest.raises(NotifierConfigError, match="duplicate name"):
        notifiers_from_config([{"name": "a", "url": "http://x"}, {"name": "a", "url": "http://y"}])
