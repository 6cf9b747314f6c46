"""The `serve` fixture (a `tcpstack serve` subprocess, cleaned up whatever happens) for every CLI test."""

from tests.cli.test_serve_ss_stats import serve  # noqa: F401 -- a fixture, found by pytest by its name
