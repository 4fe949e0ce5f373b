"""Fixtures for every test. Helpers live in support.py (importable as `support`: pytest puts this folder on
sys.path)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def converted_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("converted")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Print, per ONNX test-data kind, how many cases passed and which were skipped and why."""
    kinds: dict[str, dict[str, list[str]]] = {}
    for outcome in ("passed", "skipped", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if "test_onnx_suites" not in nodeid.split("::")[0]:
                continue
            # classes are OnnxBackend<Kind>ModelTest_<device> (tests/test_onnx_suites.py)
            kind, _, runtime = nodeid.split("::")[1].replace("OnnxBackend", "").replace("ModelTest", "").partition("_")
            kind += f" ({runtime or 'cpu'})"
            entry = kinds.setdefault(kind, {"passed": [], "skipped": [], "failed": []})
            reason = ""
            if outcome == "skipped" and isinstance(report.longrepr, tuple):
                reason = report.longrepr[2].removeprefix("Skipped: ")
            entry[outcome].append(f"{nodeid.split('::')[-1]}: {reason}" if reason else nodeid.split("::")[-1])
    if not kinds:
        return
    terminalreporter.section("ONNX backend test data (onnx wheel)")
    for kind, entry in sorted(kinds.items()):
        terminalreporter.write_line(f"{kind}: {len(entry['passed'])} passed, {len(entry['skipped'])} skipped, "
                                    f"{len(entry['failed'])} failed")
        for line in entry["skipped"]:
            terminalreporter.write_line(f"    skipped {line}")
