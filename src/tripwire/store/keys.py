"""Write keys: who may send events (and read), under which source name; stored hashed.

A key is ``tw_`` followed by 32 URL-safe random characters (192 bits). Only its SHA-256
is stored, in the ``api_keys`` table of the workspace's state database: a key that random
cannot be guessed from its hash, so a slow password hash (bcrypt, scrypt) would only add
latency to every request without adding safety. A team moving from Segment can register
its existing write key unchanged (``tripwire keys create --source app --key ...``), so
SDK configuration does not change.

The ``key_id`` (the first 11 characters, e.g. ``tw_3kq9Zx1a``) identifies a key in listings
and revocation without revealing it. Revocation is immediate: every request looks the key
up (one indexed SQLite read).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tripwire.store.state import connect_sqlite
from tripwire.store.workspace import Workspace

PERMISSIONS = ("write", "read")
KEY_PREFIX = "tw_"
KEY_ID_CHARS = 11
MIN_KEY_CHARS = 16
MAX_KEY_CHARS = 256
_SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    permissions TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
)
"""


class KeyManagementError(ValueError):
    """A key operation that cannot be done as asked (bad source name, unknown key id)."""


class AuthenticationError(PermissionError):
    """A presented key does not authorize the request; ``reason`` is safe to show the client.

    ``status`` is the HTTP status it maps to: 401 for a missing, unknown or revoked key,
    403 for a valid key without the needed permission.
    """

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class ApiKey:
    """A stored key (never the secret itself)."""

    key_id: str
    source: str
    permissions: frozenset[str]
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class NewKey:
    """A key just created: ``secret`` is shown once and never stored."""

    secret: str
    key: ApiKey


def hash_key(secret: str) -> str:
    """The stored form of a key (SHA-256, hex).

    >>> hash_key("tw_example")[:16]
    '33c93cc83e933437'
    """
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _key_id(secret: str) -> str:
    if secret.startswith(KEY_PREFIX):
        return secret[:KEY_ID_CHARS]
    return "k_" + hash_key(secret)[:8]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _row_to_key(row: tuple[str, str, str, str, str | None]) -> ApiKey:
    key_id, source, permissions, created, revoked = row
    return ApiKey(
        key_id=key_id,
        source=source,
        permissions=frozenset(p for p in permissions.split(",") if p),
        created_at=datetime.fromisoformat(created),
        revoked_at=datetime.fromisoformat(revoked) if revoked else None,
    )


def _permissions(values: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(values)
    unknown = chosen - set(PERMISSIONS)
    if unknown or not chosen:
        raise KeyManagementError(
            f"permissions must be a non-empty subset of {', '.join(PERMISSIONS)};"
            f" got {', '.join(sorted(chosen)) or 'none'}"
        )
    return chosen


class KeyStore:
    """The workspace's keys (thread-safe; one SQLite connection guarded by a lock).

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     store = KeyStore(pathlib.Path(tmp) / "state.db")
    ...     new = store.create("app")
    ...     source = store.authenticate(new.secret).source
    ...     _ = store.revoke(new.key.key_id)
    ...     try:
    ...         store.authenticate(new.secret)
    ...     except AuthenticationError as error:
    ...         reason = error.reason
    ...     store.close()
    >>> source, reason
    ('app', 'write key has been revoked')
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._connection = connect_sqlite(self.path, check_same_thread=False)
        with self._lock:
            self._connection.execute(_SCHEMA)

    @classmethod
    def for_workspace(cls, workspace: Workspace) -> KeyStore:
        return cls(workspace.state_path)

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(
        self,
        source: str,
        permissions: Iterable[str] = ("write",),
        *,
        secret: str | None = None,
    ) -> NewKey:
        """Create a key for ``source``; ``secret`` registers an existing key (e.g. Segment's)."""
        if not _SOURCE_NAME.match(source):
            raise KeyManagementError(
                f"source name {source!r} must be 1-64 letters, digits, '_', '.' or '-'"
                " and start with a letter or digit"
            )
        chosen = _permissions(permissions)
        if secret is None:
            secret = KEY_PREFIX + secrets.token_urlsafe(24)
        elif not MIN_KEY_CHARS <= len(secret) <= MAX_KEY_CHARS or not secret.isprintable():
            raise KeyManagementError(
                f"a key must be {MIN_KEY_CHARS}-{MAX_KEY_CHARS} printable characters"
            )
        created = _now()
        row = (_key_id(secret), hash_key(secret), source, ",".join(sorted(chosen)), created, None)
        with self._lock:
            try:
                self._connection.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?)", row)
            except sqlite3.IntegrityError:
                raise KeyManagementError(
                    "this key (or one with the same key id) already exists"
                ) from None
        return NewKey(secret=secret, key=_row_to_key((row[0], source, row[3], created, None)))

    def list(self) -> list[ApiKey]:
        """Every key, active and revoked, oldest first."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT key_id, source, permissions, created_at, revoked_at FROM api_keys"
                " ORDER BY created_at, key_id"
            ).fetchall()
        return [_row_to_key(row) for row in rows]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key by its id (or by the key itself); revoking twice is harmless."""
        with self._lock:
            self._connection.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE (key_id = ? OR key_hash = ?)"
                " AND revoked_at IS NULL",
                (_now(), key_id, hash_key(key_id)),
            )
            row = self._connection.execute(
                "SELECT key_id, source, permissions, created_at, revoked_at FROM api_keys"
                " WHERE key_id = ? OR key_hash = ?",
                (key_id, hash_key(key_id)),
            ).fetchone()
        if row is None:
            raise KeyManagementError(f"no key with id {key_id!r} (see `tripwire keys list`)")
        return _row_to_key(row)

    def authenticate(self, secret: str | None, permission: str = "write") -> ApiKey:
        """The active key ``secret`` if it has ``permission``; else :class:`AuthenticationError`."""
        if not secret:
            raise AuthenticationError("missing write key (HTTP Basic username or writeKey)")
        if len(secret) > MAX_KEY_CHARS:
            raise AuthenticationError("invalid write key")
        with self._lock:
            row = self._connection.execute(
                "SELECT key_id, source, permissions, created_at, revoked_at FROM api_keys"
                " WHERE key_hash = ?",
                (hash_key(secret),),
            ).fetchone()
        if row is None:
            raise AuthenticationError("invalid write key")
        key = _row_to_key(row)
        if not key.active:
            raise AuthenticationError("write key has been revoked")
        if permission not in key.permissions:
            raise AuthenticationError(f"key lacks the {permission!r} permission", status=403)
        return key
