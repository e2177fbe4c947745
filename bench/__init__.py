"""Load benchmarks of TaskQL and their baselines (see bench/README.md)."""
