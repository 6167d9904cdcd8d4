"""Write keys: creation, hashing at rest, authentication, permissions and revocation."""

from __future__ import annotations

import sqlite3

import pytest

from tripwire.store.keys import (
    AuthenticationError,
    KeyManagementError,
    KeyStore,
    hash_key,
)


@pytest.fixture
def store(tmp_path):
    with KeyStore(tmp_path / "state.db") as keys:
        yield keys


def test_keys_are_stored_only_as_hashes(store, tmp_path):
    new = store.create("app")
    assert new.secret.startswith("tw_") and len(new.secret) == 35
    raw = sqlite3.connect(tmp_path / "state.db").execute("SELECT * FROM api_keys").fetchall()
    assert new.secret not in repr(raw)
    assert hash_key(new.secret) in repr(raw)
    assert new.key.key_id == new.secret[:11]


def test_authenticate_returns_source_and_checks_permission(store):
    writer = store.create("app")
    reader = store.create("dashboard", ["read"])
    both = store.create("ops", ["read", "write"])
    assert store.authenticate(writer.secret).source == "app"
    assert store.authenticate(both.secret, "read").source == "ops"
    with pytest.raises(AuthenticationError) as info:
        store.authenticate(reader.secret, "write")
    assert info.value.status == 403 and "write" in info.value.reason


@pytest.mark.parametrize("secret", [None, "", "tw_unknown-key-value", "x" * 1000])
def test_missing_or_unknown_keys_are_401(store, secret):
    store.create("app")
    with pytest.raises(AuthenticationError) as info:
        store.authenticate(secret)
    assert info.value.status == 401


def test_revocation_by_id_or_secret_is_immediate_and_listed(store, tmp_path):
    first, second = store.create("app"), store.create("deploy-bot")
    store.revoke(first.key.key_id)
    store.revoke(second.secret)
    with KeyStore(tmp_path / "state.db") as other_process_view:
        for new in (first, second):
            with pytest.raises(AuthenticationError, match="revoked"):
                other_process_view.authenticate(new.secret)
    listed = {k.key_id: k for k in store.list()}
    assert not listed[first.key.key_id].active and not listed[second.key.key_id].active
    assert store.revoke(first.key.key_id).revoked_at == listed[first.key.key_id].revoked_at
    with pytest.raises(KeyManagementError, match="no key with id"):
        store.revoke("tw_nothing")


def test_existing_segment_key_can_be_registered(store):
    store.create("app", secret="SEGMENT_WRITE_KEY_abc123")
    assert store.authenticate("SEGMENT_WRITE_KEY_abc123").source == "app"
    with pytest.raises(KeyManagementError, match="already exists"):
        store.create("app", secret="SEGMENT_WRITE_KEY_abc123")


@pytest.mark.parametrize(
    ("source", "permissions", "secret", "message"),
    [
        ("", ["write"], None, "source name"),
        ("has space", ["write"], None, "source name"),
        ("app", ["admin"], None, "permissions"),
        ("app", [], None, "permissions"),
        ("app", ["write"], "short", "printable characters"),
    ],
)
def test_bad_key_requests(store, source, permissions, secret, message):
    with pytest.raises(KeyManagementError, match=message):
        store.create(source, permissions, secret=secret)
