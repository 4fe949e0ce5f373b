"""The FileStore lock across processes: a SIGKILLed holder frees it at once (flock is the kernel's), and concurrent
read-merge-write savers lose no entries. Pure cache-file entries with fake fingerprints: no OpenCL needed.

The children are this file run as a script (``python test_lock.py MODE PATH ...``).
"""

from __future__ import annotations

import importlib.util
import os
import random
import select
import signal
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

RELEASE_BOUND_SECONDS = 3.0  # filelock polls every 0.05 s: a freed lock is taken well within this


def import_parsers_only() -> None:
    """Make ``import mace.cachefiles.stores`` skip mace/__init__ (converter, onnx: 0.3 s a start)."""
    if "mace" not in sys.modules:
        package = types.ModuleType("mace")
        package.__path__ = list(importlib.util.find_spec("mace").submodule_search_locations)
        sys.modules["mace"] = package


def fingerprint(owner: str):  # -> DeviceFingerprint
    from mace.cachefiles.fingerprint import DeviceFingerprint

    return DeviceFingerprint("lock-test", "mace tests", "OpenCL 3.0", f"fake device of {owner}", "none", "OpenCL 3.0",
                             "1.0", 64, True, "0.1.0")  # fmt: skip


def entry(owner: str, number: int):  # -> CacheEntry
    from mace.cachefiles.program_cache import CacheEntry

    source = f"__kernel void k_{owner}_{number}() {{}}"
    return CacheEntry.for_program(source, f"-DN={number}", fingerprint(owner), f"{owner}/{number}".encode() * 64,
                                  float(number))  # fmt: skip


def add_entry(owner: str, number: int):  # -> the merge function for FileStore.update
    from mace.cachefiles import program_cache

    def merge(current: bytes | None) -> bytes:
        base = program_cache.decode(current) if current is not None else program_cache.CacheFile()
        time.sleep(random.uniform(0, 0.002))  # widen the read-to-write window a lost update would need
        return program_cache.encode(base.merged(program_cache.CacheFile({fingerprint(owner).id(): fingerprint(owner)},
                                                                [entry(owner, number)])))  # fmt: skip

    return merge


def keys(path: Path) -> set[tuple[str, str]]:
    from mace.cachefiles import program_cache

    return {(e.fingerprint_id, e.program_key) for e in program_cache.decode(path.read_bytes()).entries}


def expected_keys(owner: str, numbers: range) -> set[tuple[str, str]]:
    return {(fingerprint(owner).id(), entry(owner, n).program_key) for n in numbers}


# ---------------------------------------------------------------------------------------------------------------------
# Children


def child(mode: str, path: str, owner: str, count: int) -> None:
    import_parsers_only()
    from mace.cachefiles.stores import FileStore

    def say(text: str) -> None:
        os.write(1, f"{text}\n".encode())

    store = FileStore(path, lock_timeout=30)
    if mode == "hold":  # take the lock and keep it until killed

        def hold(current: bytes | None) -> bytes:
            say("locked")
            sys.stdin.readline()  # returns only when the parent is gone
            raise AssertionError("the holder was not killed")

        store.update(hold)
    elif mode == "add":  # wait for "go", then add entries 0..count-1 of owner, one update each
        say("ready")
        if not sys.stdin.readline():
            return  # the parent is gone
        for number in range(count):
            store.update(add_entry(owner, number))
        say("done")


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start a child: spawn(mode, path, owner="", count=0). Children still running at the end are killed."""
    started: list[subprocess.Popen[bytes]] = []

    def start(mode: str, path: Path, owner: str = "", count: int = 0) -> subprocess.Popen[bytes]:
        started.append(subprocess.Popen([sys.executable, __file__, mode, str(path), owner, str(count)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        bufsize=0))  # fmt: skip
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()


def expect_line(proc: subprocess.Popen[bytes], text: str, timeout: float) -> float:
    """Wait for the child to print ``text``; returns when it was read."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no {text!r} from the child within {timeout} s"
    line = proc.stdout.readline().decode().strip()
    assert line == text, f"expected {text!r}, got {line!r}; stderr: {proc.stderr.read().decode()}"
    return time.monotonic()


def finish(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    try:
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr = proc.stderr.read().decode()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()
    assert proc.returncode in (0, -signal.SIGKILL), stderr
    return proc.returncode


# ---------------------------------------------------------------------------------------------------------------------
# Tests


def test_a_killed_lock_holder_frees_the_lock(tmp_path: Path, spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    import_parsers_only()
    from mace.cachefiles.stores import FileStore, StoreError

    path = tmp_path / "mace_cl_compiled_program.bin"
    FileStore(path).update(add_entry("parent", 0))
    before = path.read_bytes()

    holder = spawn("hold", path)
    expect_line(holder, "locked", timeout=30)
    with pytest.raises(StoreError, match="lock not acquired"):  # the lock is really held
        FileStore(path, lock_timeout=0.2).update(add_entry("parent", 1))
    waiter = spawn("add", path, "waiter", 1)
    expect_line(waiter, "ready", timeout=30)
    waiter.stdin.write(b"go\n")
    waiter.stdin.flush()
    time.sleep(0.3)
    assert waiter.poll() is None and not select.select([waiter.stdout], [], [], 0)[0], "the waiter did not wait"

    killed_at = time.monotonic()
    holder.send_signal(signal.SIGKILL)
    assert finish(holder) == -signal.SIGKILL
    waited = expect_line(waiter, "done", timeout=30) - killed_at
    assert finish(waiter) == 0
    started = time.monotonic()
    FileStore(path, lock_timeout=RELEASE_BOUND_SECONDS).update(add_entry("parent", 2))
    parent_waited = time.monotonic() - started

    print(f"\nlock: a waiter got the lock {1000 * waited:.0f} ms after its holder was SIGKILLed; "
          f"a later update took {1000 * parent_waited:.0f} ms")  # fmt: skip
    assert waited < RELEASE_BOUND_SECONDS
    assert before != path.read_bytes()
    assert keys(path) == expected_keys("parent", range(0, 3, 2)) | expected_keys("waiter", range(1))


@pytest.mark.parametrize(("processes", "updates"), [(2, 40), (8, 12)])
def test_concurrent_updates_lose_no_entries(
    tmp_path: Path, spawn: Callable[..., subprocess.Popen[bytes]], processes: int, updates: int
) -> None:
    import_parsers_only()

    path = tmp_path / "mace_cl_compiled_program.bin"
    owners = [f"p{i}" for i in range(processes)]
    children = [spawn("add", path, owner, updates) for owner in owners]
    for proc in children:
        expect_line(proc, "ready", timeout=60)
    started = time.monotonic()
    for proc in children:  # all start together
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
    for proc in children:
        expect_line(proc, "done", timeout=120)
        assert finish(proc) == 0
    elapsed = time.monotonic() - started

    found = keys(path)
    expected = set().union(*(expected_keys(owner, range(updates)) for owner in owners))
    print(f"\nlock: {processes} processes made {processes * updates} merging updates in {elapsed:.1f} s; "
          f"{len(found)} of {len(expected)} entries on disk")  # fmt: skip
    assert found == expected, f"lost {len(expected - found)} entries"


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
