"""Write the seed corpora: small valid inputs of each kind into fuzz/corpus/<target>/ (cachefile, modelfile,
tunedparams, binary).

Small on purpose (a few KB each, well under 200 KB in all): libFuzzer mutates small inputs best, and the seeds are
committed. Deterministic, so rerunning it rewrites the same files.

    python fuzz/make_corpus.py
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
from binary_samples import pocl_binary, ptx_text

from mace.cachefiles import program_cache, tuned_params
from mace.cachefiles.fingerprint import DeviceFingerprint
from mace.cachefiles.program_cache import CacheEntry, CacheFile
from mace.cachefiles.tuned_params import TunedEntry, TunedParams
from mace.model import modelfile
from mace.model.ir import Graph, Node, TensorInfo

CORPUS = Path(__file__).resolve().parent / "corpus"
KEY = b"fuzz-key"  # the key fuzz_cachefile.py signs and checks with

CPU = DeviceFingerprint("Portable Computing Language", "The pocl project", "OpenCL 3.0 PoCL 5.0", "cpu-haswell",
                        "GenuineIntel", "OpenCL 3.0 PoCL HSTR", "5.0", 64, True, "0.1.0")  # fmt: skip
GPU = DeviceFingerprint("ARM Platform", "ARM", "OpenCL 2.1 v1.r40p0", "Mali-G710 r0p0", "ARM", "OpenCL 2.1", "2.1", 32,
                        False, "0.1.0")  # fmt: skip
CONV = "__kernel void conv2d(__global float *x) { x[get_global_id(0)] *= 2.0f; }"
POOL = "__kernel void pool(__global float *x) {}"


def reseal_cache(data: bytes, version: int | None = None, flags: int | None = None) -> bytes:
    """Change the header's version or flags of an unsigned cache file and recompute its sha256 trailer."""
    header = bytearray(data[:80])
    if version is not None:
        struct.pack_into("<I", header, 4, version)
    if flags is not None:
        struct.pack_into("<I", header, 8, flags)
    body = bytes(header) + data[80:-32]
    return body + hashlib.sha256(body).digest()


def cache_seeds() -> dict[str, bytes]:
    two_devices = CacheFile(
        {CPU.id(): CPU, GPU.id(): GPU},
        [
            CacheEntry.for_program(CONV, "-cl-mad-enable -DBLOCK=4", CPU, b"\x7fELF" + bytes(range(60)), 1000.0),
            CacheEntry.for_program(POOL, "", CPU, b"", 1001.5),
            CacheEntry.for_program(CONV, "-DBLOCK=8", GPU, b"mali" * 24, 1002.25),
            CacheEntry.for_program("// ünïcödé\n" + POOL, '-DNAME="é"', GPU, b"x" * 17, 1003.0),
        ],
    )
    one = CacheFile({CPU.id(): CPU}, [CacheEntry.for_program(POOL, "-DN=1", CPU, b"BINARY", 5.0)])
    plain = program_cache.encode(one)
    return {
        "empty.bin": program_cache.encode(CacheFile()),
        "one_entry.bin": plain,
        "two_devices.bin": program_cache.encode(two_devices),
        "signed.bin": program_cache.encode(two_devices, key=KEY),
        "newer_minor.bin": reseal_cache(plain, version=program_cache.FORMAT_VERSION + 1),
        "optional_flag.bin": reseal_cache(plain, flags=1 << 16),
    }


def tuned_seeds() -> dict[str, bytes]:
    entries = [
        TunedEntry.for_launch("conv_0", "#define KERNEL_NAME conv_0", (64, 56, 56), CPU, (4, 8, 8), 812.5, 1.0),
        TunedEntry.for_launch("pool_0", "#define KERNEL_NAME pool_0", (1000,), CPU, None, 3.25, 2.0),
        TunedEntry.for_launch("gemm_1", "", (16, 16), GPU, (8, 8), 40.0, 3.0, variant=(2, -1)),
    ]
    both = TunedParams({CPU.id(): CPU, GPU.id(): GPU}, entries)
    return {
        "empty.bin": tuned_params.encode(TunedParams()),
        "one_entry.bin": tuned_params.encode(TunedParams({CPU.id(): CPU}, entries[:1])),
        "two_devices.bin": tuned_params.encode(both),
        "signed.bin": tuned_params.encode(both, key=KEY),
    }


def binary_seeds() -> dict[str, bytes]:
    """fuzz_binary.py's inputs: a mode byte (0 raw binary, 1 pocl parameters, 2 PTX parameters), then its data."""
    return {
        "raw_pocl.bin": b"\x00" + pocl_binary(["conv_0", "pool_0"], file_size=8),
        "raw_ptx.bin": b"\x00" + ptx_text(["conv_0", "gemm_1"]),
        "raw_cut_pocl.bin": b"\x00" + pocl_binary(["conv_0"], file_size=8)[:150],
        "pocl_params.bin": bytes([1, 0, 1, 2, 3, 17, 9, 0, 0, 0, 2, 5, 100, 0, 0, 0, 7]),
        "ptx_params.bin": bytes([2, 3, 2, 1, 2, 3, 40, 0, 0, 0, 1, 20, 0, 0, 0, 123]),
    }


def model_seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    conv = Graph(
        name="conv_relu",
        inputs=[TensorInfo("x", (1, 2, 4, 4), "float32")],
        outputs=[TensorInfo("y", (1, 3, 4, 4), "float32")],
        nodes=[
            Node(
                "Conv",
                "conv0",
                ["x", "w", "b"],
                ["y"],
                {
                    "kernel_shape": [3, 3],
                    "strides": [1, 1],
                    "pads": [1, 1, 1, 1],
                    "dilations": [1, 1],
                    "group": 1,
                    "activation": "Relu",
                },
            )
        ],
        constants={"w": rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "b": np.zeros(3, np.float32)},
        tensors={"y": TensorInfo("y", (1, 3, 4, 4), "float32")},
    )
    dtypes = Graph(
        name="dtypes",
        inputs=[TensorInfo("x", (2, 3), "float16")],
        outputs=[TensorInfo("z", (2, 3), "float16")],
        nodes=[
            Node("Reshape", "r", ["x", "shape"], ["t"]),
            Node("Add", "a", ["t", "c"], ["z"]),
        ],
        constants={
            "shape": np.array([2, 3], np.int64),
            "c": np.arange(6, dtype=np.float16).reshape(2, 3),
            "mask": np.array([True, False, True]),
            "bytes": np.arange(5, dtype=np.uint8),
            "i32": np.array([-1, 7], np.int32),
        },
        tensors={"t": TensorInfo("t", (2, 3), "float16"), "z": TensorInfo("z", (2, 3), "float16")},
        data_type="fp16_fp32",
        metadata={"producer": "make_corpus", "opset": 17},
    )
    identity = Graph(name="identity", inputs=[TensorInfo("x", (1,), "float32")],
                     outputs=[TensorInfo("x", (1,), "float32")], nodes=[], constants={}, tensors={})  # fmt: skip
    return {name: modelfile.encode(graph) for name, graph in
            (("conv_relu.mace", conv), ("dtypes.mace", dtypes), ("identity.mace", identity))}  # fmt: skip


def main() -> None:
    total = 0
    targets = (("cachefile", cache_seeds()), ("modelfile", model_seeds()), ("tunedparams", tuned_seeds()),
               ("binary", binary_seeds()))  # fmt: skip
    for target, seeds in targets:
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (folder / name).write_bytes(data)
            total += len(data)
        print(f"{folder}: {len(seeds)} seeds")
    print(f"{total} bytes in all")


if __name__ == "__main__":
    main()
