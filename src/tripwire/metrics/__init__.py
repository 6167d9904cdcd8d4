"""tripwire.metrics."""
