"""Benchmarks (docs/BENCHMARKS.md). Each module is one ``make bench-*`` target; none is part of the test suite."""
