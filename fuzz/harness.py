"""What the fuzz harnesses share: importing the parsers alone, instrumented, and starting libFuzzer."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import atheris


def import_instrumented(*modules: str) -> list[Any]:
    """The ``modules`` (dotted names under mace), imported with coverage instrumentation. A bare ``mace`` package
    keeps mace/__init__ (converter, onnx) out of the process."""
    if "mace" not in sys.modules:
        package = types.ModuleType("mace")
        package.__path__ = list(importlib.util.find_spec("mace").submodule_search_locations)
        sys.modules["mace"] = package
    with atheris.instrument_imports(include=["mace"]):
        return [importlib.import_module(name) for name in modules]


def fuzz(test_one_input: Callable[[bytes], None], dictionary: str) -> None:
    """Run libFuzzer on ``test_one_input`` with sys.argv, adding ``-dict=`` the dictionary beside the harnesses."""
    argv = list(sys.argv)
    path = Path(__file__).with_name(dictionary)
    if path.exists() and not any(a.startswith("-dict=") for a in argv):
        argv.append(f"-dict={path}")
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
