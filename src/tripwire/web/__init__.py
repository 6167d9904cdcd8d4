"""The web dashboard served by ``tripwire serve`` (see :mod:`tripwire.web.app`)."""

from tripwire.web.app import create_dashboard

__all__ = ["create_dashboard"]
