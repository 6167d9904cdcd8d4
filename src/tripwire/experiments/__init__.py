"""tripwire.experiments."""
