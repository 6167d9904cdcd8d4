"""tripwire.web."""
