"""``tripwire dashboard`` is registered and documents its access rules."""

from __future__ import annotations

from typer.testing import CliRunner

from tripwire.cli.main import app
from tripwire.cli.web import dashboard_url


def test_dashboard_command_help() -> None:
    result = CliRunner().invoke(app, ["dashboard", "--help"])
    assert result.exit_code == 0, result.output
    assert "--open" in result.output and "loopback" in result.output


def test_dashboard_url_for_wildcard_hosts() -> None:
    assert dashboard_url("0.0.0.0", 8080) == "http://127.0.0.1:8080/"
    assert dashboard_url("::", 8080) == "http://127.0.0.1:8080/"
    assert dashboard_url("10.0.0.5", 80) == "http://10.0.0.5:80/"
