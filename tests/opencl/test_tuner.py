"""The tuner: candidates respect every limit, loaded values are re-checked, timing picks a launchable local size on a
real device, and the tuned-parameters store degrades to warnings."""

from __future__ import annotations

import doctest
import itertools
import math
import struct
import threading
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mace.opencl.tuning.local_sizes as tuner
from mace.cachefiles import tuned_params
from mace.cachefiles.fingerprint import DeviceFingerprint
from mace.cachefiles.stores import MemoryStore
from mace.cachefiles.tuned_params import TunedEntry, TunedParams, TunedParamsError
from mace.opencl.tuning.local_sizes import (
    KernelLimits,
    candidate_local_sizes,
    needs_uniform_work_groups,
    time_launch,
    tune_kernel,
    validate_local_size,
)
from mace.opencl.tuning.params import TunedParamsStore

FP = DeviceFingerprint("p", "v", "OpenCL 3.0", "dev", "v", "OpenCL 3.0", "1", 64, True, "0.1.0")
FP_OTHER = DeviceFingerprint("p", "v", "OpenCL 3.0", "other", "v", "OpenCL 3.0", "1", 64, True, "0.1.0")


def test_module_doctest() -> None:
    assert doctest.testmod(tuner).failed == 0


# --- candidates ------------------------------------------------------------------------------------------------------

limit_sets = st.fixed_dictionaries(
    {
        "global_size": st.lists(st.integers(1, 3000), min_size=1, max_size=3),
        "kernel_work_group_size": st.integers(0, 4096),
        "max_work_item_sizes": st.lists(st.integers(1, 4096), min_size=3, max_size=3),
        "local_mem_per_item": st.sampled_from([0, 0, 4, 16, 100]),
        "local_mem_size": st.integers(0, 65536),
        "needs_uniform": st.booleans(),
    }
)


def powers_up_to(n: int) -> list[int]:
    return [1 << k for k in range(n.bit_length()) if 1 << k <= n]


@settings(max_examples=400, deadline=timedelta(seconds=2))
@given(limit_sets)
def test_candidates_respect_every_limit(limits: dict[str, Any]) -> None:
    g, wg, items = limits["global_size"], limits["kernel_work_group_size"], limits["max_work_item_sizes"]
    per_item, lmem, uniform = limits["local_mem_per_item"], limits["local_mem_size"], limits["needs_uniform"]
    candidates = candidate_local_sizes(g, wg, items, per_item, lmem, needs_uniform=uniform)
    assert candidates[0] is None and candidates.count(None) == 1
    explicit = candidates[1:]
    assert len(set(explicit)) == len(explicit)
    for c in explicit:
        assert len(c) == len(g)
        assert all(v >= 1 and v & (v - 1) == 0 for v in c)  # powers of two
        assert math.prod(c) <= wg
        assert all(v <= items[d] and v <= g[d] for d, v in enumerate(c))
        assert not uniform or all(gd % v == 0 for gd, v in zip(g, c))
        assert math.prod(c) * per_item <= lmem or per_item == 0
        assert validate_local_size(c, g, wg, items, uniform, per_item, lmem) is None
    # complete: every power-of-two tuple that validates is offered
    if math.prod(len(powers_up_to(min(gd, items[d]))) for d, gd in enumerate(g)) <= 3000:
        expected = {
            c
            for c in itertools.product(*(powers_up_to(min(gd, items[d])) for d, gd in enumerate(g)))
            if validate_local_size(c, g, wg, items, uniform, per_item, lmem) is None
        }
        assert set(explicit) == expected
    # largest work-groups first
    sizes = [math.prod(c) for c in explicit]
    assert sizes == sorted(sizes, reverse=True)


def test_candidates_examples() -> None:
    assert candidate_local_sizes((7,), 256, (256, 1, 1), needs_uniform=True) == [None, (1,)]
    assert candidate_local_sizes((7,), 256, (256, 1, 1)) == [None, (4,), (2,), (1,)]
    assert candidate_local_sizes((8, 8), 4, (8, 8, 8)) == [None, (4, 1), (2, 2), (1, 4), (2, 1), (1, 2), (1, 1)]
    assert candidate_local_sizes((64,), 0, (64,)) == [None]  # a kernel that reports no work-group size
    assert candidate_local_sizes((64,), 256, (256,), local_mem_per_item=1024, local_mem_size=8192)[1] == (8,)
    for bad in [(), (0, 4), (1, 2, 3, 4)]:
        with pytest.raises(ValueError):
            candidate_local_sizes(bad, 64, (64, 64, 64))
    with pytest.raises(ValueError):
        candidate_local_sizes((4, 4, 4), 64, (64, 64))


# --- validation ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "global_size", "reason"),
    [
        (None, (32, 12), None),
        ((8, 4), (32, 12), None),
        ((8, 3), (32, 12), None),  # 3 divides 12: not only powers of two
        ((8,), (32, 12), "has 1 dims"),
        ((8, 4, 1), (32, 12), "has 3 dims"),
        ((0, 4), (32, 12), "local size 0 in dim 0 is below 1"),
        ((8, -4), (32, 12), "local size -4 in dim 1 is below 1"),
        ((128, 1), (256, 12), "exceeds CL_DEVICE_MAX_WORK_ITEM_SIZES[0] = 64"),
        ((1, 32), (32, 64), "exceeds CL_DEVICE_MAX_WORK_ITEM_SIZES[1] = 16"),
        ((32, 12), (32, 12), "work-group of 384 items exceeds CL_KERNEL_WORK_GROUP_SIZE = 256"),
        ((32, 4), (30, 12), "local size 32 in dim 0 exceeds the global size 30"),
        ((4, 5), (32, 12), "global size 12 in dim 1 is not a multiple of local size 5"),
        ("ab", (32, 12), "not a sequence of sizes"),
        ((4, 4), (0, 4), "not a sequence of sizes"),
    ],
)
def test_validate_local_size_names_each_violation(local: Any, global_size: tuple[int, ...], reason: str | None) -> None:
    got = validate_local_size(local, global_size, 256, (64, 16, 16), needs_uniform=True)
    if reason is None:
        assert got is None
    else:
        assert got is not None and reason in got, got


def test_validate_uniformity_and_local_memory() -> None:
    assert validate_local_size((8,), (30,), 256, (256,), needs_uniform=False) is None  # non-uniform devices
    assert "not a multiple" in validate_local_size((8,), (30,), 256, (256,), needs_uniform=True)
    got = validate_local_size((64,), (64,), 256, (256,), False, local_mem_per_item=256, local_mem_size=8192)
    assert got is not None and "16384 bytes of local memory" in got
    assert validate_local_size((32,), (64,), 256, (256,), False, local_mem_per_item=256, local_mem_size=8192) is None
    assert "no such dim" in validate_local_size((1, 1), (4, 4), 256, (256,), False)  # device lists fewer dims


def fake_device(version: str, non_uniform: Any = None) -> Any:
    def get_info(param: Any) -> Any:
        if isinstance(non_uniform, Exception):
            raise non_uniform
        return non_uniform

    return SimpleNamespace(version=version, get_info=get_info)


def test_needs_uniform_work_groups() -> None:
    cl = pytest.importorskip("pyopencl")
    ocl30_yes, ocl30_no = fake_device("OpenCL 3.0 X", True), fake_device("OpenCL 3.0 X", False)
    assert needs_uniform_work_groups(ocl30_yes, "-cl-std=CL1.2 -cl-mad-enable")  # mace's programs: always uniform
    assert needs_uniform_work_groups(ocl30_yes, "")  # default is OpenCL C 1.x
    assert not needs_uniform_work_groups(ocl30_yes, "-cl-std=CL3.0")
    assert needs_uniform_work_groups(ocl30_no, "-cl-std=CL3.0")
    assert needs_uniform_work_groups(ocl30_yes, "-cl-std=CL3.0 -cl-uniform-work-group-size")
    assert needs_uniform_work_groups(ocl30_yes, "-cl-std=CL2.0 -cl-std=CL1.2")  # the last one counts
    assert not needs_uniform_work_groups(fake_device("OpenCL 2.1 Mali"), "-cl-std=CL2.0")
    assert needs_uniform_work_groups(fake_device("OpenCL 1.2 Adreno"), "-cl-std=CL2.0")
    assert needs_uniform_work_groups(fake_device("OpenCL 3.0", cl.Error("no answer")), "-cl-std=CL3.0")


# --- timing on a real device -----------------------------------------------------------------------------------------

SOURCE = """
__kernel void scale(__global const float *x, __global float *y, const int width) {
    const int i = get_global_id(0), j = get_global_id(1);
    y[j * width + i] = 2.0f * x[j * width + i] + 1.0f;
}
"""
GLOBAL = (64, 48)


@pytest.fixture(scope="module")
def scale_kernel(opencl_queue: Any) -> Any:
    import pyopencl as cl

    context = opencl_queue.context
    program = cl.Program(context, SOURCE).build(options="-cl-std=CL1.2")
    x = np.arange(GLOBAL[0] * GLOBAL[1], dtype=np.float32)
    x_buf = cl.Buffer(context, cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR, hostbuf=x)
    y_buf = cl.Buffer(context, cl.mem_flags.WRITE_ONLY, x.nbytes)
    kernel = cl.Kernel(program, "scale")
    kernel.set_args(x_buf, y_buf, np.int32(GLOBAL[0]))
    limits = KernelLimits.of(kernel, context.devices[0], "-cl-std=CL1.2")
    # the buffers must outlive the kernel's use: clSetKernelArg does not retain them (a freed one is a segfault)
    return SimpleNamespace(kernel=kernel, x=x, x_buf=x_buf, y_buf=y_buf, limits=limits, context=context)


def run_and_check(queue: Any, k: Any, local: tuple[int, ...] | None) -> None:
    import pyopencl as cl

    cl.enqueue_fill_buffer(queue, k.y_buf, np.float32(0), 0, k.x.nbytes)
    cl.enqueue_nd_range_kernel(queue, k.kernel, GLOBAL, local)
    y = np.empty_like(k.x)
    cl.enqueue_copy(queue, y, k.y_buf)
    np.testing.assert_array_equal(y, 2 * k.x + 1)


def test_kernel_limits_of_a_real_kernel(scale_kernel: Any) -> None:
    limits = scale_kernel.limits
    device = scale_kernel.context.devices[0]
    assert 1 <= limits.work_group_size <= device.max_work_group_size
    assert len(limits.max_work_item_sizes) >= 3 and limits.needs_uniform  # built as OpenCL C 1.2
    assert 0 <= limits.local_mem_size <= device.local_mem_size


def test_time_launch_with_and_without_profiling(opencl_queue: Any, scale_kernel: Any) -> None:
    import pyopencl as cl

    profiling = cl.CommandQueue(scale_kernel.context, properties=cl.command_queue_properties.PROFILING_ENABLE)
    for queue in (opencl_queue, profiling):
        for local in (None, (8, 8)):
            us = time_launch(queue, scale_kernel.kernel, GLOBAL, local, repeats=3)
            assert 0 < us < 5e6 and math.isfinite(us)
    with pytest.raises(cl.Error):  # 48 % 5 != 0 on a device that needs uniform work-groups
        time_launch(opencl_queue, scale_kernel.kernel, GLOBAL, (8, 5), repeats=1)


def test_tune_kernel_returns_a_valid_launchable_choice(opencl_queue: Any, scale_kernel: Any) -> None:
    limits = scale_kernel.limits
    best, best_us, trials = tune_kernel(opencl_queue, scale_kernel.kernel, GLOBAL, limits, repeats=2, max_candidates=8)
    assert len(trials) == 8 and trials[0].local_size is None
    offered = candidate_local_sizes(GLOBAL, limits.work_group_size, limits.max_work_item_sizes,
                                    needs_uniform=limits.needs_uniform)  # fmt: skip
    assert all(t.local_size in offered and math.isfinite(t.time_us) and t.error is None for t in trials)
    assert best in offered and best_us == min(t.time_us for t in trials if t.local_size == best)
    assert best_us <= min(t.time_us for t in trials) * (1 + tuner.DRIVER_CHOICE_TOLERANCE) + 1e-9
    assert validate_local_size(best, GLOBAL, limits.work_group_size, limits.max_work_item_sizes, True) is None
    run_and_check(opencl_queue, scale_kernel, best)  # and the kernel still computes the right thing


def test_tune_kernel_records_bad_candidates_and_keeps_going(opencl_queue: Any, scale_kernel: Any) -> None:
    limits = scale_kernel.limits
    lying = KernelLimits(limits.work_group_size, limits.max_work_item_sizes, False, limits.local_mem_size)
    candidates = [(8, 8), (3, 1), (10**6, 1), (8, 5)]
    best, best_us, trials = tune_kernel(opencl_queue, scale_kernel.kernel, GLOBAL, lying, candidates, repeats=1)
    by_local = {t.local_size: t for t in trials}
    assert list(by_local) == [None, (8, 8), (3, 1), (10**6, 1), (8, 5)]  # None is always tried, first
    assert "exceeds" in by_local[(10**6, 1)].error and by_local[(10**6, 1)].time_us == math.inf  # never launched
    assert by_local[(8, 5)].time_us == math.inf and "launch failed" in by_local[(8, 5)].error  # the driver refused
    assert best in {None, (8, 8), (3, 1)} and math.isfinite(best_us)
    # a driver choice within tolerance of the fastest wins: with a huge tolerance it always does
    best, _, _ = tune_kernel(opencl_queue, scale_kernel.kernel, GLOBAL, limits, [(8, 8)], repeats=1, tolerance=1e9)
    assert best is None


# --- the store -------------------------------------------------------------------------------------------------------

LIMITS = KernelLimits(work_group_size=256, max_work_item_sizes=(256, 256, 256), needs_uniform=True)


def entry(name: str = "conv_0", local: tuple[int, ...] | None = (8, 8), fp: DeviceFingerprint = FP) -> TunedEntry:
    return TunedEntry.for_launch(name, "spec", (64, 48), fp, local, 10.0, 100.0)


def test_store_round_trip_through_a_file(tmp_path: Any) -> None:
    path = tmp_path / "sub" / "mace_cl_tuned_params.bin"
    store = TunedParamsStore(path, FP)
    assert store.load() == {} and store.lookup("0" * 64) is None and not store.has_pending
    assert store.save() is False and not path.exists()  # nothing to write
    e = store.new_entry("conv_0", "spec", (64, 48), (8, 8), 12.0, variant=(1,))
    store.record(e)
    assert store.lookup(e.tuning_key) == e  # visible before saving
    assert store.save() is True and path.exists()
    again = TunedParamsStore(str(path), FP)
    assert again.lookup(e.tuning_key) == e and again.warnings == []
    assert again.lookup_valid(e.tuning_key, (64, 48), LIMITS) == e
    with pytest.raises(TunedParamsError):
        store.record(entry(fp=FP_OTHER))  # another device's entry is a caller bug


def test_store_merges_with_other_writers_and_devices(tmp_path: Any) -> None:
    path = tmp_path / "mace_cl_tuned_params.bin"
    other_device = entry("pool_0", fp=FP_OTHER)
    path.write_bytes(tuned_params.encode(TunedParams({FP_OTHER.id(): FP_OTHER}, [other_device])))
    a, b = TunedParamsStore(path, FP), TunedParamsStore(path, FP)
    assert a.load() == {} and b.load() == {}  # only this device's entries are visible
    ea, eb = entry("conv_a"), entry("conv_b")
    a.record(ea)
    b.record(eb)
    threads = [threading.Thread(target=s.save) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    on_disk = tuned_params.decode(path.read_bytes())
    assert {e.tuning_key for e in on_disk.entries} == {ea.tuning_key, eb.tuning_key, other_device.tuning_key}
    assert set(on_disk.fingerprints) == {FP.id(), FP_OTHER.id()}


def test_store_newer_entry_replaces_older(tmp_path: Any) -> None:
    path = tmp_path / "t.bin"
    first = TunedParamsStore(path, FP)
    first.record(entry(local=(8, 8)))
    first.save()
    second = TunedParamsStore(path, FP)
    retuned = TunedEntry.for_launch("conv_0", "spec", (64, 48), FP, (16, 4), 9.0, 200.0)
    second.record(retuned)
    second.save()
    assert TunedParamsStore(path, FP).lookup(retuned.tuning_key).local_size == (16, 4)


@pytest.mark.parametrize(
    "corrupt",
    [b"", b"garbage", b"MCLP" + bytes(100), "truncated", "flipped-entry", "future-major"],
)
def test_store_warns_and_ignores_bad_files_then_rewrites_them(tmp_path: Any, corrupt: Any) -> None:
    path = tmp_path / "t.bin"
    good = tuned_params.encode(TunedParams({FP.id(): FP}, [entry("conv_0"), entry("conv_1")]))
    data = {
        "truncated": good[:-5],
        "flipped-entry": bytearray(good),
        "future-major": good[:4] + struct.pack("<I", 0x00020000) + good[8:],
    }.get(corrupt, corrupt)
    if corrupt == "flipped-entry":
        first_entry = struct.unpack_from("<Q", good, 40)[0]
        data[first_entry + 100] ^= 1  # entry 0's time: only that entry is lost
        data = bytes(data)
    path.write_bytes(data)
    seen: list[str] = []
    store = TunedParamsStore(path, FP, on_warning=seen.append)
    loaded = store.load()
    assert store.warnings and seen == store.warnings and str(path) in store.warnings[0]
    assert list(loaded.values()) == ([entry("conv_1")] if corrupt == "flipped-entry" else [])
    assert store.has_pending and store.save()  # replaced by a valid file
    assert tuned_params.validate(path.read_bytes()) == []


def test_store_signed_files(tmp_path: Any) -> None:
    path = tmp_path / "t.bin"
    signer = TunedParamsStore(path, FP, key=b"secret")
    signer.record(entry())
    signer.save()
    assert tuned_params.decode(path.read_bytes(), key=b"secret").entries == [entry()]
    assert TunedParamsStore(path, FP, key=b"secret").lookup(entry().tuning_key) == entry()
    wrong = TunedParamsStore(path, FP, key=b"other")
    assert wrong.load() == {} and "signature mismatch" in wrong.warnings[0]
    path.write_bytes(tuned_params.encode(TunedParams({FP.id(): FP}, [entry()])))  # unsigned: refused with a key
    refused = TunedParamsStore(path, FP, key=b"secret")
    assert refused.load() == {} and "not signed" in refused.warnings[0]


def test_store_lookup_valid_rechecks_against_the_current_kernel(tmp_path: Any) -> None:
    store = TunedParamsStore(tmp_path / "t.bin", FP)
    tuned = entry(local=(64, 4))
    store.record(tuned)
    assert store.lookup_valid(tuned.tuning_key, (64, 48), LIMITS) == tuned
    small = KernelLimits(work_group_size=128, max_work_item_sizes=(256, 256, 256), needs_uniform=True)
    assert store.lookup_valid(tuned.tuning_key, (64, 48), small) is None  # another driver, a smaller kernel limit
    assert "CL_KERNEL_WORK_GROUP_SIZE = 128" in store.warnings[-1] and "conv_0" in store.warnings[-1]
    assert store.lookup_valid(tuned.tuning_key, (64, 40), LIMITS) is None
    assert "tuned for global size (64, 48)" in store.warnings[-1]
    driver = entry("add_0", local=None)
    store.record(driver)
    assert store.lookup_valid(driver.tuning_key, (64, 48), small) == driver  # the driver's choice is always valid
    assert store.lookup_valid("f" * 64, (64, 48), LIMITS) is None


def test_store_on_read_only_and_unwritable_stores(tmp_path: Any) -> None:
    shipped = tuned_params.encode(TunedParams({FP.id(): FP}, [entry()]))
    store = TunedParamsStore(MemoryStore(shipped, "<app bundle>"), FP)
    assert store.lookup(entry().tuning_key) == entry()
    store.record(entry("conv_9"))
    assert store.save() is False and "read-only" in store.warnings[-1]  # warned, not raised
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    unwritable = TunedParamsStore(blocker / "t.bin", FP)  # its directory is a file
    unwritable.record(entry())
    assert unwritable.save() is False and "not saved" in unwritable.warnings[-1]
