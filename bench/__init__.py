"""Benchmarks: `./run bench --size small|district`."""
