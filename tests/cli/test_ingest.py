"""`tripwire keys create|list|revoke` through the real CLI app."""

from __future__ import annotations

from typer.testing import CliRunner

from tripwire.cli.main import app
from tripwire.store.keys import AuthenticationError, KeyStore
from tripwire.store.workspace import init_workspace

runner = CliRunner()


def test_keys_create_list_revoke(tmp_path):
    workspace = init_workspace(tmp_path / "ws")
    ws = ["--workspace", str(workspace.root)]
    created = runner.invoke(app, ["keys", "create", "--source", "app", *ws])
    assert created.exit_code == 0, created.output
    secret = created.output.strip().splitlines()[-1]
    assert secret.startswith("tw_")
    with KeyStore.for_workspace(workspace) as store:
        assert store.authenticate(secret).source == "app"

    listed = runner.invoke(app, ["keys", "list", *ws])
    assert listed.exit_code == 0 and secret[:11] in listed.output and "active" in listed.output
    assert secret not in listed.output

    revoked = runner.invoke(app, ["keys", "revoke", secret[:11], *ws])
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    with KeyStore.for_workspace(workspace) as store:
        try:
            store.authenticate(secret)
        except AuthenticationError as error:
            assert "revoked" in error.reason
        else:
            raise AssertionError("revoked key still authenticates")
    assert "revoked" in runner.invoke(app, ["keys", "list", *ws]).output


def test_keys_errors_exit_2_with_a_message(tmp_path):
    workspace = init_workspace(tmp_path / "ws")
    ws = ["--workspace", str(workspace.root)]
    bad_source = runner.invoke(app, ["keys", "create", "--source", "bad name", *ws])
    assert bad_source.exit_code == 2 and "source name" in bad_source.output
    unknown = runner.invoke(app, ["keys", "revoke", "tw_missing", *ws])
    assert unknown.exit_code == 2 and "no key with id" in unknown.output
    read_only = runner.invoke(app, ["keys", "create", "-s", "dash", "-p", "read", *ws])
    assert read_only.exit_code == 0 and "read" in read_only.output
