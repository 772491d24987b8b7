"""Benchmark helpers: power, temperature and load readers for edge devices."""
