"""Models and benchmarks run by hand (not tests): `python -m benchmarks.<name>`."""
