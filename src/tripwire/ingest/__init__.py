"""tripwire.ingest: the HTTP capture API (Segment and PostHog formats) and the archiver.

:func:`tripwire.ingest.app.create_app` builds the capture app of a workspace;
:func:`tripwire.ingest.server.serve` runs it under uvicorn (``tripwire serve``).
"""
