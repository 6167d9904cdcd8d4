"""The dashboard cache: fresh hits, stale values served while one refresh runs."""

from __future__ import annotations

import threading
import time

from tripwire.web.cache import TTLCache


def test_fresh_values_are_not_recomputed() -> None:
    cache = TTLCache(ttl=60)
    calls: list[int] = []
    for _ in range(3):
        assert cache.get("k", lambda: calls.append(1) or len(calls)) == 1
    assert calls == [1]


def test_stale_value_is_served_while_a_single_refresh_runs() -> None:
    cache = TTLCache(ttl=0.01)
    assert cache.get("k", lambda: "old") == "old"
    time.sleep(0.02)
    release = threading.Event()
    started: list[int] = []

    def slow() -> str:
        started.append(1)
        release.wait(5)
        return "new"

    # expired: both calls answer at once with the old value; only one refresh starts
    assert cache.get("k", slow) == "old"
    assert cache.get("k", slow) == "old"
    release.set()
    deadline = time.monotonic() + 5
    while cache._values["k"][1] != "new" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache._values["k"][1] == "new"
    assert len(started) == 1


def test_failed_refresh_keeps_the_old_value() -> None:
    cache = TTLCache(ttl=0.01)
    cache.get("k", lambda: 1)
    time.sleep(0.02)

    def broken() -> int:
        raise RuntimeError("lake unavailable")

    assert cache.get("k", broken) == 1
    time.sleep(0.05)
    assert cache.get("k", broken) == 1


def test_size_is_bounded() -> None:
    cache = TTLCache(ttl=60, max_entries=3)
    for i in range(10):
        cache.get(i, lambda i=i: i)
    assert len(cache._values) == 3
