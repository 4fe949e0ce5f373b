"""Coverage-guided fuzzing of the .mace model file parser: modelfile.decode on bytes.

Contract checked on every input (a violation is a finding; fuzz/README.md says how to run and triage):
- decode raises nothing but ModelFormatError;
- a graph decode accepts can be saved again: encode(graph) works and decodes to a graph that encodes to the same bytes.
Each input is tried as is and with its header's file size and sha256 trailer made right, so that mutations of the
graph description reach the JSON and graph checks instead of all stopping at the checksum.

    python fuzz/fuzz_modelfile.py -max_total_time=180 /tmp/fuzz-modelfile fuzz/corpus/modelfile
"""

from __future__ import annotations

import hashlib
import struct

from harness import fuzz, import_instrumented

modelfile, errors = import_instrumented("mace.model.modelfile", "mace.errors")
ModelFormatError = errors.ModelFormatError


def with_fixed_trailer(data: bytes) -> bytes | None:
    """``data`` with the header's file size and the sha256 trailer made right."""
    if len(data) < modelfile.HEADER_SIZE + modelfile.TRAILER_SIZE:
        return None
    body = data[:48] + struct.pack("<Q", len(data)) + data[56 : len(data) - modelfile.TRAILER_SIZE]
    return body + hashlib.sha256(body).digest()


def check(data: bytes) -> None:
    try:
        graph = modelfile.decode(data)
    except ModelFormatError:
        return
    saved = modelfile.encode(graph)
    assert modelfile.encode(modelfile.decode(saved)) == saved, "a decoded graph does not survive save and load"


def test_one_input(data: bytes) -> None:
    check(data)
    fixed = with_fixed_trailer(data)
    if fixed is not None and fixed != data:
        check(fixed)


if __name__ == "__main__":
    fuzz(test_one_input, "modelfile.dict")
