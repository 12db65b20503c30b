"""Benchmarks: each hot path as a ratio against its physical floor measured in the same run."""
