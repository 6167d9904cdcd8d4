"""tripwire.ingest: the HTTP capture API (Segment and PostHog formats) and the archiver.

:func:`tripwire.ingest.app.create_app` builds the capture app of a workspace;
``tripwire serve`` composes it with the other areas' routes and runs it
(:mod:`tripwire.web.server`).
"""
