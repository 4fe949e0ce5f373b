"""Environment variables: defined once (mace/settings.py), listed in the README, bad values are errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mace import settings
from mace.errors import SettingError

REPO = Path(__file__).resolve().parents[1]


def test_only_the_settings_module_reads_the_environment() -> None:
    readers = []
    for path in sorted((REPO / "src" / "mace").rglob("*.py")):
        if path.name == "settings.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"os\.environ\b|os\.getenv\(|environ\.get\(", line) and "{**os.environ" not in line:
                readers.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert readers == [], "read environment variables through mace.settings:\n" + "\n".join(readers)


def test_the_readme_lists_every_setting_with_its_default() -> None:
    readme = (REPO / "README.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([A-Z0-9_]+)` \|.*$", readme, re.M)}
    assert set(rows) == {s.name for s in settings.SETTINGS}
    for s in settings.SETTINGS:
        assert s.default in rows[s.name], f"README row of {s.name} lacks its default {s.default!r}"


@pytest.mark.parametrize("value", ["abc", "-1", "1e9", "0", "12.5"])
def test_a_bad_cache_cap_is_an_error_naming_variable_and_value(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MACE_MAX_CACHE_BYTES", value)
    with pytest.raises(SettingError, match=rf"MACE_MAX_CACHE_BYTES={re.escape(repr(value))} is not a positive"):
        settings.max_cache_bytes()


def test_a_good_cache_cap_and_no_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MACE_MAX_CACHE_BYTES", " 4096 ")
    assert settings.max_cache_bytes() == 4096
    monkeypatch.setenv("MACE_MAX_CACHE_BYTES", "")
    assert settings.max_cache_bytes() is None


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("on", True), ("TRUE", True), ("yes", True),
                                                 ("0", False), ("off", False), ("false", False), ("", False)])
def test_tuning_flag_words(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("MACE_TUNING", value)
    assert settings.tuning_at_start() is expected


def test_an_unknown_tuning_word_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MACE_TUNING", "abc")
    with pytest.raises(SettingError, match="MACE_TUNING='abc' is not a yes/no value"):
        settings.tuning_at_start()


def test_storage_dir_rules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MACE_STORAGE_PATH", "off")
    assert settings.storage_dir() is None
    monkeypatch.setenv("MACE_STORAGE_PATH", str(tmp_path))
    assert settings.storage_dir() == tmp_path
    monkeypatch.delenv("MACE_STORAGE_PATH")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert settings.storage_dir() == tmp_path / "xdg" / "mace"
