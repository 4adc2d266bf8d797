"""Benchmarks behind ``hive bench``: each measures one part of the hive and returns a JSON-ready report."""
