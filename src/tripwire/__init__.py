"""tripwire."""
