"""Benchmarks: scripts that print figures against targets (run with `python -m bench.<name>`)."""
