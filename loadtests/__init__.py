"""Load tests (locust), the benchmark harness (`make bench`: the `bench` package), soak and
chaos tools, and the request bodies they share (`payloads`)."""
