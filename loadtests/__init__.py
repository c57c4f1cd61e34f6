"""Load tests (locust), the benchmark harness (`make bench`) and their shared helpers."""
