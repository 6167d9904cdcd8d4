"""tripwire.stats."""
