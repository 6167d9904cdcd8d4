"""tripwire.sim."""
