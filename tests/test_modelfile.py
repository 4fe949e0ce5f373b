"""The .mace file: round trip, and every kind of damage reported with its byte offset."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

import mace
from mace.errors import ModelFormatError
from mace.model import modelfile

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("m") / "sq.mace"
    mace.convert(REPO / "examples" / "models" / "squeezenet1_1.onnx", path)
    return path.read_bytes()


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "m.mace"
    path.write_bytes(data)
    return path


def _reseal(data: bytearray) -> bytes:
    """Recompute the sha256 trailer so that checks behind it are reached."""
    import hashlib

    body = bytes(data[:-32])
    return body + hashlib.sha256(body).digest()


def test_round_trip_is_byte_exact_and_aligned(model_bytes: bytes, tmp_path: Path) -> None:
    graph = modelfile.load(_write(tmp_path, model_bytes))
    assert modelfile.encode(graph) == model_bytes
    magic, version, header_size, json_off, json_len, w_off, _, total, _ = modelfile.HEADER.unpack_from(model_bytes)
    assert (magic, version, header_size, total) == (b"MACEMDL\0", 0x00010000, 64, len(model_bytes))
    assert w_off % 64 == 0
    description = json.loads(model_bytes[json_off:json_off + json_len])
    assert all(c["offset"] % 64 == 0 for c in description["constants"])
    first = description["constants"][0]
    raw = np.frombuffer(model_bytes, first["dtype"], offset=w_off + first["offset"],
                        count=int(np.prod(first["shape"])))
    np.testing.assert_array_equal(raw.reshape(first["shape"]), graph.constants[first["name"]])


def test_truncation_names_the_offset(model_bytes: bytes, tmp_path: Path) -> None:
    for cut in (0, 10, 63, 64, 1000, len(model_bytes) - 1):
        with pytest.raises(ModelFormatError) as info:
            modelfile.load(_write(tmp_path, model_bytes[:cut]))
        assert (info.value.offset is not None and info.value.offset <= max(cut, 0) + 1) or cut == 0
        assert str(tmp_path / "m.mace") in str(info.value)


def test_bit_flip_is_a_hash_mismatch(model_bytes: bytes, tmp_path: Path) -> None:
    damaged = bytearray(model_bytes)
    damaged[len(damaged) // 2] ^= 0x10
    with pytest.raises(ModelFormatError, match="sha256 mismatch") as info:
        modelfile.load(_write(tmp_path, bytes(damaged)))
    assert info.value.offset == len(model_bytes) - 32


def test_bad_magic_and_future_version(model_bytes: bytes, tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="bad magic") as info:
        modelfile.load(_write(tmp_path, b"ONNX" + model_bytes[4:]))
    assert info.value.offset == 0
    future = bytearray(model_bytes)
    struct.pack_into("<I", future, 8, 0x00020000)
    with pytest.raises(ModelFormatError, match="unsupported format version 0x00020000") as info:
        modelfile.load(_write(tmp_path, _reseal(future)))
    assert info.value.offset == 8


def test_broken_json_names_its_offset(model_bytes: bytes, tmp_path: Path) -> None:
    damaged = bytearray(model_bytes)
    json_off = modelfile.HEADER.unpack_from(model_bytes)[3]
    damaged[json_off] = ord("x")
    with pytest.raises(ModelFormatError, match="not valid JSON") as info:
        modelfile.load(_write(tmp_path, _reseal(damaged)))
    assert json_off <= info.value.offset <= json_off + 10


def test_constant_out_of_range_is_named(model_bytes: bytes, tmp_path: Path) -> None:
    graph = modelfile.load(_write(tmp_path, model_bytes))
    data = bytearray(modelfile.encode(graph))
    _, _, _, json_off, json_len, _, w_len, _, _ = modelfile.HEADER.unpack_from(data)
    text = data[json_off:json_off + json_len].decode()
    description = json.loads(text)
    victim = description["constants"][-1]
    old = f'"offset":{victim["offset"]},'
    new = f'"offset":{w_len + 64:<{len(old) - 11}},'
    assert len(new) == len(old)
    patched = text.replace(old, new).encode()
    data[json_off:json_off + json_len] = patched
    with pytest.raises(ModelFormatError, match=f"constant '{victim['name']}'.*outside the weights"):
        modelfile.load(_write(tmp_path, _reseal(data)))


def test_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="the file is empty"):
        modelfile.load(_write(tmp_path, b""))
    with pytest.raises(ModelFormatError, match="cannot read"):
        modelfile.load(tmp_path / "absent.mace")


def _sealed_model(text: bytes) -> bytes:
    """A .mace file around an arbitrary graph description, every header field and the sha256 consistent."""
    import hashlib

    w_off = modelfile._align(modelfile.HEADER_SIZE + len(text))
    body = modelfile.HEADER.pack(modelfile.MAGIC, modelfile.FORMAT_VERSION, modelfile.HEADER_SIZE,
                                 modelfile.HEADER_SIZE, len(text), w_off, 0, w_off + 32, 0)
    body = (body.ljust(modelfile.HEADER_SIZE, b"\0") + text).ljust(w_off, b"\0")
    return body + hashlib.sha256(body).digest()


# Found by the atheris harness in fuzz/ and by review: each once escaped as another exception type.
@pytest.mark.parametrize("text", [
    b'{"constants":[{"name":"a","dtype":"float32","shape":[Infinity],"offset":0,"nbytes":0}]}',
    b'{"constants":[],"tensors":[{"name":"t","shape":[Infinity],"dtype":"f"}]}',
    b'{"constants":[{"name":"a","dtype":"uint8","shape":[99999999999999999999],"offset":0,"nbytes":0}]}',
    b"1" * 4301,
    b"[" * 100000,
    b'{"constants":[],"tensors":[{"name":5,"shape":[1],"dtype":"float32"}],'
    b'"inputs":[{"name":"x","shape":[1],"dtype":"float32"}],"outputs":[{"name":"x","shape":[1],"dtype":"float32"}],'
    b'"nodes":[{"op":"Relu","name":"r","inputs":["x"],"outputs":[5]}],"name":"g"}',
], ids=["inf-constant-shape", "inf-tensor-shape", "huge-dim", "long-int", "deep-nesting", "int-tensor-name"])
def test_fuzz_findings_raise_format_errors(text: bytes) -> None:
    with pytest.raises(ModelFormatError):
        modelfile.decode(_sealed_model(text))
