"""Property tests against the live endpoint: whatever the client sends, never a 5xx.

Random and adversarial bodies (random bytes, bad UTF-8, bad gzip, deep nesting, huge
strings, wrong types, bad timestamps) go to every capture path, with and without a valid
key; the answer is always a 2xx or 4xx with a JSON body.
"""

from __future__ import annotations

import gzip

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PATHS = ["/v1/batch", "/v1/track", "/v1/identify", "/v1/alias", "/v1/group", "/batch/", "/e/"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)
messages = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["track", "identify", "page", "group", "alias"]) | json_values,
        "event": st.sampled_from(["$exposure", "$change", "$latency", "A"]) | json_values,
        "userId": st.text(max_size=4) | json_values,
        "anonymousId": json_values,
        "messageId": st.text(max_size=4) | json_values,
        "timestamp": st.sampled_from(["2026-01-01T00:00:00Z", "0001-01-01", "nope"]) | json_values,
        "sentAt": st.sampled_from(["2026-01-01T00:00:01Z", "9999-12-31T23:59:59Z"]) | json_values,
        "properties": json_values,
        "context": json_values,
        "distinct_id": json_values,
        "api_key": json_values,
    },
)


def _deep(depth: int) -> bytes:
    return b'{"batch": [{"properties": ' + b"[" * depth + b"]" * depth + b"}]}"


bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(lambda m: orjson.dumps({"batch": m}), st.lists(messages, max_size=5)),
    st.builds(lambda m: orjson.dumps(m), messages),
    st.builds(
        lambda m: orjson.dumps({"batch": m, "sentAt": "2026-01-01T00:00:00Z"}),
        st.lists(messages, max_size=3),
    ),
    st.integers(min_value=200, max_value=1500).map(_deep),
    st.sampled_from(
        [b"", b"null", b"[]", b'{"batch": null}', b"\xff\xfe{}", b'{"a": "\\ud800"}', b"1e999"]
    ),
    st.integers(0, 40).map(lambda n: b'{"batch": [{"event": "' + b"x" * (n * 1000) + b'"}]}'),
)


@pytest.fixture(scope="module")
def client(shared_live):
    with httpx.Client(base_url=shared_live.url, timeout=30) as http:
        yield http


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    path=st.sampled_from(PATHS),
    body=bodies,
    compress=st.sampled_from(["none", "gzip", "broken-gzip", "header-only"]),
    with_key=st.booleans(),
)
def test_endpoint_never_answers_5xx(shared_live, client, path, body, compress, with_key):
    headers = {"Content-Type": "application/json"}
    if compress == "gzip":
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    elif compress == "broken-gzip":
        body = gzip.compress(body)[:-5]
        headers["Content-Encoding"] = "gzip"
    elif compress == "header-only":
        headers["Content-Encoding"] = "gzip"
    auth = (shared_live.key, "") if with_key else None
    response = client.post(path, content=body, headers=headers, auth=auth)
    assert response.status_code < 500, response.text
    assert response.status_code in (200, 400, 401, 413, 415), response.text
    payload = response.json()
    assert isinstance(payload, dict) and "success" in payload
    if response.status_code >= 400:
        assert payload["success"] is False and payload["message"]


def test_junk_after_a_flood_of_bad_requests_the_server_still_stores(shared_live, client):
    response = client.post(
        "/v1/track",
        json={"event": "Still Alive", "userId": "u"},
        auth=(shared_live.key, ""),
    )
    assert response.status_code == 200 and response.json()["stored"] == 1
