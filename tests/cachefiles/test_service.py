"""The stored-records service, without a device: read once, every problem warned once (naming the file and the
reason), bad files replaced at the next save, saves merged under the lock, unwritable stores only warned about."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from cachefile_samples import FP_CPU, FP_GPU, program_cache_records

from mace.cachefiles import program_cache
from mace.cachefiles.program_cache import CacheEntry, CacheFile, ProgramCacheFormat
from mace.cachefiles.service import StoredRecords, Warnings, Wording
from mace.cachefiles.stores import FileStore, MemoryStore, Store

WORDING = Wording(
    unreadable="{error}; unreadable",
    discarded="{where}: discarded ({error})",
    bad_record="{where}: {error}; dropped",
    not_saved="{error}; not saved",
)
log = logging.getLogger("mace.tests")


def stored(
    store: Store, messages: list[str], key: bytes | None = None, writable: bool = True
) -> StoredRecords[CacheEntry, CacheFile]:
    return StoredRecords(store, ProgramCacheFormat, FP_CPU, key, Warnings(log, messages), WORDING, writable)


def sample_file(tmp_path: Path, data: bytes | None = None) -> Path:
    """cache.bin holding ``data``, by default the sample records of both devices."""
    path = tmp_path / "cache.bin"
    path.write_bytes(program_cache.encode(program_cache_records()) if data is None else data)
    return path


def test_warnings_are_kept_logged_and_passed_on_once(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []
    warn = Warnings(log, on_warning=seen.append)
    with caplog.at_level(logging.WARNING, logger="mace.tests"):
        for message in ("a", "b", "a"):
            warn(message)
    assert warn.messages == seen == ["a", "b"] and caplog.messages == ["a", "b"]


def test_load_once_this_devices_entries(tmp_path: Path) -> None:
    path = sample_file(tmp_path)
    messages: list[str] = []
    records = stored(FileStore(path), messages)
    mine = records.load()
    assert list(mine.values()) == program_cache_records().entries_for(FP_CPU) and records.read
    path.unlink()
    assert records.load() is mine and messages == [] and not records.needs_rewrite  # read once
    assert records.file is not None and len(records.file.entries) == 4  # every device's, for the caller


def test_missing_file_is_empty_and_not_read(tmp_path: Path) -> None:
    records = stored(FileStore(tmp_path / "absent.bin"), [])
    assert records.load() == {} and not records.read and records.file is None


def test_a_bad_record_is_dropped_warned_once_and_the_file_rewritten(tmp_path: Path) -> None:
    data = bytearray(program_cache.encode(program_cache_records()))
    data[-40] ^= 1  # inside the last blob: only that entry is lost
    path = sample_file(tmp_path, bytes(data))
    messages: list[str] = []
    records = stored(FileStore(path), messages)
    assert len(records.load()) == 2  # both of FP_CPU's entries survive; one of FP_GPU's is dropped
    assert records.needs_rewrite and all(str(path) in m for m in messages)
    assert [m.endswith("; dropped") for m in messages] == [True]  # one warning per file read (first cause + "N more")
    assert records.save([])
    assert program_cache.validate(path.read_bytes()) == [] and not records.needs_rewrite


@pytest.mark.parametrize("writable", [True, False])
def test_an_invalid_file_is_discarded(writable: bool) -> None:
    messages: list[str] = []
    records = stored(MemoryStore(b"garbage", "<bundle>"), messages, writable=writable)
    assert records.load() == {} and records.read and records.file is None
    assert messages == [
        "<bundle>: discarded (byte offset 0: bad magic b'garb', expected b'MCLP': not a mace OpenCL program cache)"
    ]
    assert records.needs_rewrite == writable


def test_a_signed_store_refuses_unsigned_files(tmp_path: Path) -> None:
    path = sample_file(tmp_path)
    messages: list[str] = []
    assert stored(FileStore(path), messages, key=b"secret").load() == {}
    assert "not signed" in messages[0]


def test_save_merges_with_what_was_written_meanwhile_and_edits(tmp_path: Path) -> None:
    path = tmp_path / "cache.bin"
    records = stored(FileStore(path), [])
    records.load()
    theirs = program_cache_records()
    path.write_bytes(program_cache.encode(theirs))  # another process saved meanwhile
    mine = CacheEntry.for_program("__kernel void mine() {}", "", FP_CPU, b"mine", 3000.0)
    newer = dataclasses.replace(theirs.entries[2], fingerprint_id=FP_GPU.id(), last_used=9000.0)

    def edit(merged: CacheFile) -> None:
        merged.entries = [e for e in merged.entries if e.program_key != theirs.entries[1].program_key]

    assert records.save([mine, newer], edit)
    on_disk = program_cache.decode(path.read_bytes())
    keys = [e.program_key for e in on_disk.entries]
    assert keys == [e.program_key for e in theirs.entries if e is not theirs.entries[1]] + [mine.program_key]
    assert on_disk.entries[1].last_used == 9000.0  # the more recent entry of one key wins
    assert set(on_disk.fingerprints) == {FP_CPU.id(), FP_GPU.id()}


def test_unreadable_and_unwritable_stores_are_warnings(tmp_path: Path) -> None:
    messages: list[str] = []
    records = stored(FileStore(tmp_path), messages)  # a directory: cannot be read as a file
    assert records.load() == {} and messages[0].endswith("; unreadable")
    assert records.save([]) is False and messages[-1].endswith("; not saved")
    read_only = stored(MemoryStore(program_cache.encode(CacheFile())), messages)
    assert read_only.save([]) is False and "read-only" in messages[-1]
