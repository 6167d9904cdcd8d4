"""Who may see and change what on the dashboard: keys, login sessions and CSRF tokens.

* **Reading**: a request from the loopback interface reads freely unless the dashboard was
  created with ``require_login=True``; any other client (the server listens beyond
  loopback) needs a key with ``read`` or ``write`` permission, given as
  ``Authorization: Bearer KEY`` or through the login form (a random session cookie, kept
  in memory; the key itself never goes into a cookie).
* **Writing** (ack, resolve, silence, record a change, run an RCA, override a verdict)
  always needs a key with ``write`` permission, and the actor recorded with the action is
  ``source:key_id`` of that key (plus the name typed into the form, when given).
* **CSRF**: double-submit token. Every page sets a random ``tw_csrf`` cookie
  (``SameSite=Strict``) and puts the same value in a hidden ``csrf`` field of its forms;
  a POST is accepted only when field and cookie match (constant-time comparison).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
from dataclasses import dataclass

from starlette.requests import Request

from tripwire.store.keys import ApiKey, AuthenticationError, KeyStore

SESSION_COOKIE = "tw_session"
CSRF_COOKIE = "tw_csrf"
CSRF_FIELD = "csrf"


@dataclass(frozen=True)
class Viewer:
    """The authenticated user of a request (``key`` None: anonymous loopback reader)."""

    key: ApiKey | None

    @property
    def can_write(self) -> bool:
        return self.key is not None and "write" in self.key.permissions

    @property
    def actor(self) -> str:
        """``source:key_id`` recorded with write actions."""
        return "anonymous" if self.key is None else f"{self.key.source}:{self.key.key_id}"


class AccessDenied(Exception):
    """Raised by :meth:`Gate.viewer`/:meth:`Gate.writer`; ``status`` 401 or 403."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and the test client's ``testclient`` host.

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("10.0.0.2"), is_loopback(None)
    (True, True, False, False)
    """
    if host is None:
        return False
    if host in ("localhost", "testclient"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


class Gate:
    """Authentication and sessions of one dashboard (in-memory session table)."""

    def __init__(self, keys: KeyStore, *, require_login: bool = False) -> None:
        self.keys = keys
        self.require_login = require_login
        self._sessions: dict[str, ApiKey] = {}
        self._lock = threading.Lock()

    def check_key(self, secret: str | None) -> ApiKey:
        """The active key ``secret`` if it may read (``read`` or ``write``); else raises."""
        try:
            return self.keys.authenticate(secret, "read")
        except AuthenticationError as error:
            if error.status != 403:
                raise AccessDenied(error.status, error.reason) from None
        try:
            return self.keys.authenticate(secret, "write")
        except AuthenticationError as error:
            raise AccessDenied(error.status, error.reason) from None

    def login(self, secret: str) -> str:
        """A new session token for the key ``secret`` (raises :class:`AccessDenied`)."""
        key = self.check_key(secret)
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[token] = key
        return token

    def logout(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)

    def _key_of(self, request: Request) -> ApiKey | None:
        secret = bearer(request)
        if secret is not None:
            return self.check_key(secret)
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            with self._lock:
                key = self._sessions.get(token)
            if key is not None:
                # re-check: a key revoked since login stops working at once
                return self.check_key_id(key)
        return None

    def check_key_id(self, key: ApiKey) -> ApiKey:
        for current in self.keys.list():
            if current.key_id == key.key_id:
                if not current.active:
                    raise AccessDenied(401, "the key of this session was revoked")
                return current
        raise AccessDenied(401, "the key of this session no longer exists")

    def viewer(self, request: Request) -> Viewer:
        """Who reads; raises 401 when a key is needed and none (or a bad one) was given."""
        key = self._key_of(request)
        if key is None and (self.require_login or not is_loopback(_client(request))):
            raise AccessDenied(401, "log in with a read or write key")
        return Viewer(key)

    def writer(self, request: Request) -> Viewer:
        """Who writes; raises 401 (no key) or 403 (a key without ``write``)."""
        viewer = self.viewer(request)
        if viewer.key is None:
            raise AccessDenied(401, "this action needs a key with write permission: log in")
        if not viewer.can_write:
            raise AccessDenied(403, "this key lacks the 'write' permission")
        return viewer


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def csrf_token(request: Request) -> str:
    """The request's CSRF token (its cookie, or a fresh one the response must set)."""
    token = request.cookies.get(CSRF_COOKIE)
    if token and len(token) >= 32:
        return token
    state_token = getattr(request.state, "new_csrf", None)
    if state_token is None:
        state_token = secrets.token_urlsafe(32)
        request.state.new_csrf = state_token
    return str(state_token)


def csrf_ok(request: Request, submitted: str | None) -> bool:
    """Double-submit check: the form field equals the cookie (both present)."""
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not submitted:
        return False
    return hmac.compare_digest(cookie.encode(), submitted.encode())
