"""tripwire.rca."""
