"""`just bench`: our data plane against Caddy, nginx and HAProxy, with nginx as the backend, all on loopback.

A benchmark, not a test: it reports numbers and ratios measured in the same run and never passes or fails on
timings. `python -m tests.bench.run --help` lists the knobs; results are saved as JSON under
tests/bench/results/.
"""
