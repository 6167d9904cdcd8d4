"""tripwire.ingest."""
