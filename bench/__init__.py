"""tripwire benchmarks: `make bench` runs every module; each also runs alone (`python -m bench.<area>`)."""
