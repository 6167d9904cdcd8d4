"""The in-process API: validate, queue, group-commit, flush = durable, query the lake."""

from __future__ import annotations

import threading
import time

import pytest

import tripwire
from tripwire.api import FlushResult
from tripwire.events import EventValidationError
from tripwire.store.buffer import Buffer
from tripwire.store.workspace import init_workspace


@pytest.fixture
def workspace(tmp_path):
    return init_workspace(tmp_path / "ws")


def stored_envelopes(workspace):
    with Buffer(workspace.buffer_path) as buffer:
        return [row.envelope() for row in buffer.read_after(0, 100_000)]


def test_calls_are_validated_queued_and_durable_after_flush(workspace):
    with tripwire.open(workspace.root) as tw:
        track_id = tw.track(
            "Order Completed",
            {"revenue": 12.5},
            user_id="u1",
            context={"locale": "en-GB"},
            timestamp="2026-11-01T10:00:00Z",
            message_id="m-1",
        )
        identify_id = tw.identify("u1", {"prime": True})
        page_id = tw.page("Home", {"path": "/"}, anonymous_id="a1", category="Docs")
        result = tw.flush()
        assert (result.stored, result.duplicates) == (3, 0)
        stored = {e["messageId"]: e for e in stored_envelopes(workspace)}
    assert track_id == "m-1" and set(stored) == {track_id, identify_id, page_id}
    assert stored["m-1"]["timestamp"] == "2026-11-01T10:00:00Z"
    assert stored["m-1"]["source"] == "in-process"
    assert stored["m-1"]["context"]["locale"] == "en-GB"
    assert stored[identify_id]["traits"] == {"prime": True}
    assert stored[page_id]["event"] == "$page" and stored[page_id]["name"] == "Home"


def test_invalid_calls_raise_and_queue_nothing(workspace):
    with tripwire.open(workspace.root) as tw:
        with pytest.raises(EventValidationError, match="userId"):
            tw.track("Order Completed", {"revenue": 1})
        assert tw.flush().stored == 0


def test_track_many_reports_rejections_and_dedupes_retries(workspace):
    messages = [
        {"type": "track", "event": "A", "userId": "u", "messageId": "x1"},
        {"type": "track", "userId": "u"},
        {"type": "identify", "userId": "u", "traits": {"tenure": "new"}, "messageId": "x2"},
    ]
    with tripwire.open(workspace.root) as tw:
        first = tw.track_many(messages)
        assert first.queued == 2
        assert [(r.index, r.field) for r in first.rejected] == [(1, "event")]
        tw.flush()
        tw.track_many(messages)  # a retry of the same batch
        assert tw.flush() == FlushResult(stored=2, duplicates=2)
    stored = stored_envelopes(workspace)
    assert len([e for e in stored if e["event"] != "$rejected"]) == 2
    # each call's rejection is recorded (not counted as a stored event of the caller)
    assert [e["properties"]["field"] for e in stored if e["event"] == "$rejected"] == ["event"] * 2


def test_a_large_track_many_batch_is_built_by_the_caller_and_stored_as_sent(workspace):
    """Batches of _BUILD_ARROW_MIN_ROWS events or more are Arrow batches before they are
    queued (the buffer's writer only joins them); what is stored is the same."""
    from tripwire.api import _BUILD_ARROW_MIN_ROWS

    n = _BUILD_ARROW_MIN_ROWS
    messages = [
        {
            "type": "track",
            "event": "E",
            "userId": f"u{i}",
            "messageId": f"m{i}",
            "properties": {"i": i},
        }
        for i in range(n)
    ]
    with tripwire.open(workspace.root) as tw:
        enqueue, queued = tw._enqueue, []

        def recording(item, events, **kwargs):
            queued.append(item._batch is not None)
            enqueue(item, events, **kwargs)

        tw._enqueue = recording
        assert tw.track_many(messages).queued == n
        assert queued == [True]
        assert tw.flush() == FlushResult(stored=n, duplicates=0)
    stored = stored_envelopes(workspace)
    assert [(e["messageId"], e["properties"]) for e in stored] == [
        (f"m{i}", {"i": i}) for i in range(n)
    ]


def test_background_flush_makes_events_durable_without_flush(workspace):
    tw = tripwire.open(workspace.root)
    try:
        tw.track("A", user_id="u")
        deadline = time.monotonic() + 30
        while not stored_envelopes(workspace) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(stored_envelopes(workspace)) == 1
    finally:
        tw.close()


def test_concurrent_senders_share_commits_and_close_flushes(workspace):
    tw = tripwire.open(workspace.root)

    def send(thread: int) -> None:
        for i in range(200):
            tw.track("Tick", {"i": i}, user_id=f"u{thread}", message_id=f"{thread}-{i}")

    threads = [threading.Thread(target=send, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tw.close()
    assert len(stored_envelopes(workspace)) == 800
    stats = tw.buffer.writer_stats()
    assert stats.events == 800 and stats.commits < 800
    with pytest.raises(RuntimeError, match="closed"):
        tw.track("Late", user_id="u")


def test_sql_sees_everything_sent_so_far(workspace):
    with tripwire.open(workspace.root) as tw:
        tw.track_many(
            [
                {"type": "track", "event": "A", "userId": "u", "timestamp": "2026-11-01T10:00:00Z"},
                {"type": "track", "event": "A", "userId": "v", "timestamp": "2026-11-02T10:00:00Z"},
                {"type": "identify", "userId": "u", "traits": {"prime": True}},
            ]
        )
        table = tw.sql("SELECT event, count(*) AS n FROM events GROUP BY 1 ORDER BY 1")
    assert table.to_pylist() == [{"event": "$identify", "n": 1}, {"event": "A", "n": 2}]
