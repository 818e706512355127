"""Benchmarks: each prints its figures (they are measurements, not tests; see RESULTS.md)."""
