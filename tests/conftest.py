"""Plugins shared by the test suites (fixtures of the root conftest.py stay there)."""

pytest_plugins = ["tests.support.engines", "tests.support.perf_options"]
