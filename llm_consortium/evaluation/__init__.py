"""Is the consortium worth it: `eval`, `rejudge`, and the simulated provider that tests, benchmarks and demos run against."""
