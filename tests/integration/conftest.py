import os

import pytest


def pytest_sessionstart(session):
    # Scenario tests run on the real kernel: without root they cannot run at all, and a
    # skipped scenario must never pass for a green run.
    if os.geteuid() != 0:
        raise pytest.UsageError("tests/integration needs root (it builds network namespaces); run scripts/test as root")


_REPORT = []


@pytest.fixture
def report():
    """Record a measured figure; all of them are printed in the terminal summary."""
    return _REPORT.append


def pytest_terminal_summary(terminalreporter):
    if _REPORT:
        terminalreporter.section("measured")
        for line in _REPORT:
            terminalreporter.write_line(line)
