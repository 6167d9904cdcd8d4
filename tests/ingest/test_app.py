"""The capture endpoints over real HTTP on loopback (uvicorn + httpx)."""

from __future__ import annotations

import base64
import gzip
import time
import uuid

import orjson
import pytest

from tripwire.events import MAX_EVENT_BYTES


def track(i: int = 0, **fields):
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": f"u{i}",
        "messageId": fields.pop("messageId", str(uuid.uuid4())),
        "timestamp": "2026-03-01T11:59:00Z",
        "properties": {"revenue": i},
        **fields,
    }


def post(live, path: str, body, *, auth: bool = True, **kwargs):
    with live.client() as client:
        return client.post(path, json=body, auth=(live.key, "") if auth else None, **kwargs)


def test_batch_is_acknowledged_200_after_storing(live):
    response = post(
        live, "/v1/batch", {"batch": [track(1), track(2)], "sentAt": "2026-03-01T11:59:05Z"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert (body["accepted"], body["stored"], body["duplicates"], body["rejected"]) == (2, 2, 0, [])
    stored = live.stored()
    assert [e["userId"] for e in stored] == ["u1", "u2"]
    assert all(e["source"] == "app" and e["receivedAt"] for e in stored)
    assert stored[0]["originalTimestamp"] == "2026-03-01T11:59:00Z"


def test_write_key_in_body_or_basic_auth(live):
    with live.client() as client:
        in_body = client.post("/v1/batch", json={"batch": [track()], "writeKey": live.key})
        both = client.post(
            "/v1/batch", json={"batch": [track()], "writeKey": live.key}, auth=(live.key, "")
        )
        bearer = client.post(
            "/v1/batch", json={"batch": [track()]}, headers={"Authorization": f"Bearer {live.key}"}
        )
    assert (in_body.status_code, both.status_code, bearer.status_code) == (200, 200, 200)


@pytest.mark.parametrize(
    ("auth", "body_key", "reason"),
    [
        (None, None, "missing write key"),
        (("tw_not-a-key-at-all", ""), None, "invalid write key"),
        (None, "tw_not-a-key-at-all", "invalid write key"),
        ("other", "KEY", "name different keys"),
    ],
)
def test_missing_invalid_or_conflicting_keys_get_401(live, auth, body_key, reason):
    if auth == "other":
        auth = ("tw_some-other-key-123", "")
    body = {"batch": [track()]}
    if body_key is not None:
        body["writeKey"] = live.key if body_key == "KEY" else body_key
    with live.client() as client:
        response = client.post("/v1/batch", json=body, auth=auth)
    assert response.status_code == 401
    assert reason in response.json()["message"]
    assert live.stored() == []


def test_revoked_key_gets_401_immediately_and_read_key_403(live):
    assert post(live, "/v1/track", track()).status_code == 200
    live.keys.revoke(live.key)
    revoked = post(live, "/v1/track", track())
    assert revoked.status_code == 401 and "revoked" in revoked.json()["message"]
    reader = live.keys.create("dashboard", ["read"]).secret
    with live.client() as client:
        forbidden = client.post("/v1/track", json=track(), auth=(reader, ""))
    assert forbidden.status_code == 403
    assert len(live.stored()) == 1


def test_gzip_bodies(live):
    body = gzip.compress(orjson.dumps({"batch": [track(i) for i in range(50)]}))
    with live.client() as client:
        ok = client.post(
            "/v1/batch",
            content=body,
            auth=(live.key, ""),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
        bad = client.post(
            "/v1/batch",
            content=b"\x1f\x8bnot gzip at all",
            auth=(live.key, ""),
            headers={"Content-Encoding": "gzip"},
        )
        truncated = client.post(
            "/v1/batch",
            content=body[: len(body) // 2],
            auth=(live.key, ""),
            headers={"Content-Encoding": "gzip"},
        )
        bomb = client.post(
            "/v1/batch",
            content=gzip.compress(b" " * 5_000_000),
            auth=(live.key, ""),
            headers={"Content-Encoding": "gzip"},
        )
        brotli = client.post(
            "/v1/batch", content=b"{}", auth=(live.key, ""), headers={"Content-Encoding": "br"}
        )
    assert ok.status_code == 200 and ok.json()["stored"] == 50
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_gzip"
    assert truncated.status_code == 400 and "truncated" in truncated.json()["message"]
    assert bomb.status_code == 413
    assert brotli.status_code == 415


def test_malformed_json_gets_400_with_position(live):
    with live.client() as client:
        response = client.post(
            "/v1/batch", content=b'{"batch": [\n  {"type": "track",}\n]}', auth=(live.key, "")
        )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_json"
    assert (body["line"], body["column"]) == (2, 19)
    assert "line 2, column 19" in body["message"]


def test_partial_batch_stores_good_events_and_lists_rejected(live):
    batch = [track(0), track(1, userId=None), "junk", track(3, event=""), track(4)]
    response = post(live, "/v1/batch", {"batch": batch})
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 2 and body["stored"] == 2
    assert body["rejected"] == [
        {"index": 1, "field": "userId", "reason": "one of userId or anonymousId is required"},
        {"index": 2, "field": "", "reason": "an event must be a JSON object, got str"},
        {"index": 3, "field": "event", "reason": "must not be empty"},
    ]
    stored = live.stored()
    assert [e["userId"] for e in stored if e["event"] != "$rejected"] == ["u0", "u4"]
    # each rejected message is recorded (source, write key id, field, reason, position)
    records = [e for e in stored if e["event"] == "$rejected"]
    assert [(r["properties"]["index"], r["properties"]["field"]) for r in records] == [
        (1, "userId"),
        (2, ""),
        (3, "event"),
    ]
    assert {r["source"] for r in records} == {"app"}
    assert all(r["properties"]["write_key"] and r["receivedAt"] for r in records)
    assert records[0]["properties"]["rejected_message_id"] == batch[1]["messageId"]


def test_all_rejected_batch_is_400_and_bad_shapes_are_400(live):
    response = post(live, "/v1/batch", {"batch": [{"type": "track"}]})
    assert response.status_code == 400 and response.json()["rejected"][0]["index"] == 0
    assert post(live, "/v1/batch", {"batch": {"not": "a list"}}).status_code == 400
    assert post(live, "/v1/batch", [track()]).status_code == 400
    bad_sent_at = post(live, "/v1/batch", {"batch": [track()], "sentAt": "later"})
    assert bad_sent_at.status_code == 400 and bad_sent_at.json()["field"] == "sentAt"
    assert post(live, "/v1/batch", {"batch": []}).status_code == 200


def test_size_limits(live):
    big_event = track(properties={"blob": "x" * (MAX_EVENT_BYTES + 10)})
    single = post(live, "/v1/track", big_event)
    assert single.status_code == 413
    in_batch = post(live, "/v1/batch", {"batch": [track(1), big_event]})
    assert in_batch.status_code == 200
    assert in_batch.json()["rejected"][0]["index"] == 1
    assert "over the 32768-byte limit" in in_batch.json()["rejected"][0]["reason"]
    too_big = {"batch": [track(i, properties={"blob": "y" * 20_000}) for i in range(30)]}
    assert post(live, "/v1/batch", too_big).status_code == 413


def test_single_call_endpoints(live):
    calls = {
        "track": {"event": "Signed Up", "userId": "u"},
        "identify": {"userId": "u", "traits": {"locale": "de-DE"}},
        "page": {"anonymousId": "a", "name": "Home"},
        "screen": {"userId": "u", "name": "Cart"},
        "group": {"userId": "u", "groupId": "g1"},
        "alias": {"userId": "u", "previousId": "a"},
    }
    for call, body in calls.items():
        response = post(live, f"/v1/{call}", body)
        assert response.status_code == 200, (call, response.text)
    events = [e["event"] for e in live.stored()]
    assert events == ["Signed Up", "$identify", "$page", "$screen", "$group", "$alias"]
    invalid = post(live, "/v1/track", {"userId": "u"})
    assert invalid.status_code == 400
    assert (invalid.json()["field"], invalid.json()["reason"]) == (
        "event",
        "required for a track call",
    )


def test_retried_batches_are_stored_once(live):
    batch = {"batch": [track(i, messageId=f"m{i}") for i in range(5)]}
    first = post(live, "/v1/batch", batch).json()
    retry = post(live, "/v1/batch", batch).json()
    overlap = post(
        live, "/v1/batch", {"batch": [track(9, messageId="m4"), track(10, messageId="m10")]}
    ).json()
    assert (first["stored"], retry["stored"], retry["duplicates"]) == (5, 0, 5)
    assert (overlap["stored"], overlap["duplicates"]) == (1, 1)
    assert sorted(e["messageId"] for e in live.stored()) == sorted(
        [f"m{i}" for i in range(5)] + ["m10"]
    )


def test_unknown_fields_are_kept(live):
    post(
        live,
        "/v1/batch",
        {
            "batch": [track(0, channel="server", integrations={"All": True})],
            "context": {"library": {"name": "curl"}},
        },
    )
    (stored,) = live.stored()
    assert stored["context"]["$extra"] == {"channel": "server", "integrations": {"All": True}}
    assert stored["context"]["library"] == {"name": "curl"}


def test_posthog_batch_capture_and_form(live):
    events = [
        {
            "event": "Turn Completed",
            "distinct_id": "p1",
            "uuid": str(uuid.uuid4()),
            "timestamp": "2026-03-01T11:00:00Z",
            "properties": {"intent": "returns", "$os": "iOS"},
        },
        {
            "event": "$pageview",
            "distinct_id": "p1",
            "uuid": str(uuid.uuid4()),
            "properties": {"$pathname": "/cart"},
        },
        {"event": "$identify", "distinct_id": "p1", "properties": {"$set": {"prime": True}}},
        {"event": "bad: no distinct id", "properties": {}},
    ]
    with live.client() as client:
        batch = client.post(
            "/batch/",
            json={"api_key": live.key, "batch": events, "sent_at": "2026-03-01T11:00:01Z"},
        )
        capture = client.post(
            "/capture/", json={"api_key": live.key, "event": "Clicked", "distinct_id": "p2"}
        )
        form_data = base64.b64encode(
            orjson.dumps(
                [{"event": "Tapped", "distinct_id": "p3", "properties": {"token": live.key}}]
            )
        )
        form = client.post(
            "/e/",
            content=b"data=" + form_data.replace(b"+", b"%2B"),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        unauthorized = client.post("/batch/", json={"batch": events[:1]})
    assert batch.status_code == 200 and batch.json()["status"] == 1
    assert batch.json()["accepted"] == 3 and batch.json()["rejected"][0]["index"] == 3
    assert capture.status_code == 200 and form.status_code == 200, form.text
    assert unauthorized.status_code == 401
    stored = [e for e in live.stored() if e["event"] != "$rejected"]
    assert [e["event"] for e in stored] == [
        "Turn Completed",
        "$page",
        "$identify",
        "Clicked",
        "Tapped",
    ]
    assert stored[0]["context"]["os"] == {"name": "iOS"} and stored[0]["userId"] == "p1"
    assert stored[1]["name"] == "/cart" and stored[2]["traits"] == {"prime": True}
    assert stored[0]["messageId"] == events[0]["uuid"]


def test_healthz(live):
    with live.client() as client:
        body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["buffer_depth"] == 0


def test_backpressure_answers_429_with_retry_after(make_server):
    live = make_server(high_water_mark=3, retry_after_seconds=7)
    assert post(live, "/v1/batch", {"batch": [track(i) for i in range(5)]}).status_code == 200
    deadline = time.monotonic() + 10
    while True:  # the buffer caches its depth for a fraction of a second
        response = post(live, "/v1/track", track(9))
        if response.status_code != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json()["code"] == "buffer_full"
    live.buffer.commit("archiver", live.buffer.last_offset())  # the consumer caught up
    time.sleep(0.3)
    assert post(live, "/v1/track", track(10)).status_code == 200
