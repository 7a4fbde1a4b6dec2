"""A simulated Zuora tenant for local runs, the demo, tests and benchmarks."""
