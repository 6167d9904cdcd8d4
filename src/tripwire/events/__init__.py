"""tripwire.events."""
