"""Benchmarks: every figure beside its ceiling, measured in the same run."""
