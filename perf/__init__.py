"""Performance harness (not part of the installed package): see perf/README.md."""
