"""What the fuzz harnesses share: importing the parsers alone, instrumented, and starting libFuzzer.

Without atheris (not installable everywhere) the harnesses still run: ``fuzz`` then mutates the seed corpus with a
plain random mutator (``-runs=N``, default 10,000, and ``-seed=S``), which finds the shallow bugs and checks the
contracts, only without coverage guidance.
"""

from __future__ import annotations

import importlib
import importlib.util
import random
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import atheris
except ImportError:  # the stub: see fuzz() below
    atheris = None


def import_instrumented(*modules: str) -> list[Any]:
    """The ``modules`` (dotted names under mace), imported with coverage instrumentation. A bare ``mace`` package
    keeps mace/__init__ (converter, onnx) out of the process."""
    if "mace" not in sys.modules:
        package = types.ModuleType("mace")
        package.__path__ = list(importlib.util.find_spec("mace").submodule_search_locations)
        sys.modules["mace"] = package
    if atheris is None:
        return [importlib.import_module(name) for name in modules]
    with atheris.instrument_imports(include=["mace"]):
        return [importlib.import_module(name) for name in modules]


def mutate(data: bytes, rng: random.Random, dictionary: list[bytes]) -> bytes:
    """A few random edits of ``data``: byte flips, inserts, deletes, cuts, repeats, dictionary tokens, u32 edits."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(8)
        at = rng.randrange(len(out) + 1)
        if op == 0 and out:
            out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2:
            del out[at : at + rng.randint(1, 16)]
        elif op == 3:
            del out[at:]
        elif op == 4 and out:
            end = min(len(out), at + rng.randint(1, 64))
            out[at:at] = out[at:end] * rng.randint(1, 4)
        elif op == 5 and dictionary:
            out[at:at] = rng.choice(dictionary)
        elif op == 6 and len(out) >= 4:
            at = min(at, len(out) - 4)
            value = rng.choice([0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 32)])
            out[at : at + 4] = value.to_bytes(4, "little")
        elif op == 7 and out:
            out[min(at, len(out) - 1)] = rng.randrange(256)
    return bytes(out)


def _dictionary(path: Path) -> list[bytes]:
    tokens = []
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line.startswith(("#", '"')) and '="' in line:
                line = line.split("=", 1)[1]  # name="value"
            if len(line) >= 2 and line.startswith('"') and line.endswith('"'):
                tokens.append(line[1:-1].encode("latin-1").decode("unicode_escape").encode("latin-1"))
    return tokens


def run_without_atheris(test_one_input: Callable[[bytes], None], argv: list[str], dictionary: Path) -> int:
    """The stub: mutate the seeds (files or folders in argv) ``-runs=N`` times; a failure raises (the input is
    written to crash-<n> first). Returns the number of inputs run."""
    runs, seed, deadline = 10_000, 0, None
    seeds: list[bytes] = []
    for arg in argv[1:]:
        if arg.startswith("-runs="):
            runs = int(arg.split("=", 1)[1])
        elif arg.startswith("-seed="):
            seed = int(arg.split("=", 1)[1])
        elif arg.startswith("-max_total_time="):
            deadline = time.monotonic() + float(arg.split("=", 1)[1])
        elif not arg.startswith("-"):
            path = Path(arg)
            files = sorted(path.iterdir()) if path.is_dir() else [path]
            seeds += [f.read_bytes() for f in files if f.is_file()]
    seeds = seeds or [b""]
    tokens = _dictionary(dictionary)
    rng = random.Random(seed)
    done = 0
    for data in seeds:  # the seeds themselves first
        test_one_input(data)
        done += 1
    while done < runs and (deadline is None or time.monotonic() < deadline):
        data = mutate(rng.choice(seeds), rng, tokens)
        try:
            test_one_input(data)
        except BaseException:
            Path(f"crash-{done}").write_bytes(data)
            raise
        done += 1
    print(f"#{done} inputs run without atheris (random mutation of {len(seeds)} seeds), no finding")
    return done


def fuzz(test_one_input: Callable[[bytes], None], dictionary: str) -> None:
    """Run libFuzzer on ``test_one_input`` with sys.argv, adding ``-dict=`` the dictionary beside the harnesses
    (without atheris: the random-mutation stub)."""
    argv = list(sys.argv)
    path = Path(__file__).with_name(dictionary)
    if atheris is None:
        run_without_atheris(test_one_input, argv, path)
        return
    if path.exists() and not any(a.startswith("-dict=") for a in argv):
        argv.append(f"-dict={path}")
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
