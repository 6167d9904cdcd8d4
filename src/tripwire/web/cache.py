"""A small time-to-live cache for the dashboard's expensive queries.

Pages must load in well under a second; lake queries over a day of events take longer on a
loaded machine, so their aggregates are kept for a short while (default 30 s: a 3am page
refreshed every minute still shows data at most half a minute old). Thread-safe: FastAPI
runs the page handlers in a thread pool.
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

    def get(self, key: Hashable, compute: Callable[[], T], ttl: float | None = None) -> T:
        now = time.monotonic()
        with self._lock:
            hit = self._values.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]  # type: ignore[no-any-return]
        value = compute()
        with self._lock:
            if len(self._values) >= self.max_entries:
                oldest = min(self._values, key=lambda k: self._values[k][0])
                del self._values[oldest]
            self._values[key] = (now + (self.ttl if ttl is None else ttl), value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
