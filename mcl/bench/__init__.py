"""Benchmarks behind `mcl bench ...`: figures measured side by side in one run, never timed tests."""
