"""tripwire.report."""
