"""A small stale-while-revalidate cache for the dashboard's expensive queries.

Pages must load in well under a second; lake queries over a day of events take longer on a
loaded machine, so their aggregates are kept. A value older than ``ttl`` (default 30 s) is
still served at once while one background thread recomputes it (single flight per key), so
a page refreshed every minute shows data at most one refresh old and never waits for the
lake after the first computation. Thread-safe: FastAPI runs page handlers in a thread pool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class TTLCache:
    """``get(key, compute)`` returns a cached value younger than ``ttl`` seconds or computes it.

    >>> cache = TTLCache(ttl=60)
    >>> cache.get("a", lambda: 1), cache.get("a", lambda: 2)
    (1, 1)
    >>> cache.clear(); cache.get("a", lambda: 3)
    3
    """

    def __init__(self, ttl: float = 30.0, max_entries: int = 512) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._values: dict[Hashable, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._refreshing: dict[Hashable, threading.Thread] = {}
        self._closed = False

    def get(self, key: Hashable, compute: Callable[[], T], ttl: float | None = None) -> T:
        """The cached value (fresh, or stale while a refresh runs) or a new computation."""
        now = time.monotonic()
        with self._lock:
            hit = self._values.get(key)
            if hit is not None:
                if hit[0] <= now and key not in self._refreshing and not self._closed:
                    thread = threading.Thread(
                        target=self._refresh,
                        args=(key, compute, ttl),
                        name="dashboard-refresh",
                        daemon=True,
                    )
                    self._refreshing[key] = thread
                    thread.start()
                return hit[1]  # type: ignore[no-any-return]
        return self._store(key, compute(), ttl)

    def has(self, key: Hashable) -> bool:
        """Whether ``key`` has a value (fresh or stale): :meth:`get` answers at once."""
        with self._lock:
            return key in self._values

    def _refresh(self, key: Hashable, compute: Callable[[], Any], ttl: float | None) -> None:
        try:
            self._store(key, compute(), ttl)
        except Exception:  # keep serving the old value; the next expiry retries
            pass
        finally:
            with self._lock:
                self._refreshing.pop(key, None)

    def _store(self, key: Hashable, value: T, ttl: float | None) -> T:
        now = time.monotonic()
        with self._lock:
            if len(self._values) >= self.max_entries:
                oldest = min(self._values, key=lambda k: self._values[k][0])
                del self._values[oldest]
            self._values[key] = (now + (self.ttl if ttl is None else ttl), value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def close(self, timeout: float = 30.0) -> None:
        """Start no more refreshes and wait (up to ``timeout`` s) for the running ones."""
        with self._lock:
            self._closed = True
            running = list(self._refreshing.values())
        deadline = time.monotonic() + timeout
        for thread in running:
            thread.join(max(0.0, deadline - time.monotonic()))
