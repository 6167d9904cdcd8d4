"""The `tripwire` command: one Typer app; each capability adds its commands from its own module.

Each ``tripwire.cli.<area>`` module exposes ``register(app)`` and adds its commands or
sub-apps there, so the areas stay independent and this file only lists them.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="tripwire",
    help="Turn product events into decisions: capture, metrics, experiments, monitors, root cause.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)



@app.callback()
def main() -> None:
    """tripwire: one tool for the loop from product events to decisions."""


AREAS = ("workspace", "ingest", "store", "sim", "metrics", "experiments", "monitor", "rca", "web", "demo")

for _area in AREAS:
    importlib.import_module(f"tripwire.cli.{_area}").register(app)


if __name__ == "__main__":  # pragma: no cover
    app()
