"""tripwire: turn product events into decisions.

``tripwire.open(path)`` opens a workspace for sending events and querying the lake in
process (see :mod:`tripwire.api`); it is imported lazily so ``import tripwire`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tripwire.api import Tripwire, open

__all__ = ["Tripwire", "open"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tripwire import api

        return getattr(api, name)
    raise AttributeError(f"module 'tripwire' has no attribute {name!r}")
