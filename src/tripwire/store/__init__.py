"""tripwire.store."""
