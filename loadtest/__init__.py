"""Load generators and benchmarks for hub."""
