"""tripwire.monitor."""
