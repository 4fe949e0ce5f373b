"""The committed sample files (tests/cachefiles/data/) pin the bytes of every format: today's encoders write exactly
those bytes from the same records, and today's decoders read them back. A change here is a format change."""

from __future__ import annotations

import hashlib
import importlib

import pytest
from cachefile_samples import DATA, SIGNING_KEY, samples

# the sha256 of each sample as committed: a regenerated sample must be a deliberate, reviewed change
COMMITTED = {
    "program_cache.bin": "c3404a332bc2d9ca2f802a499db22a1a17ea4d45a3665f33fc63284ea81e633f",
    "program_cache_signed.bin": "386af9f6d68f93df0dfc50cb80fa1d4629a32ecb3740125f834d6b2e091fe03a",
    "program_cache_empty.bin": "2e3ad73c5000471e41777a95edcffdef6cb40ba853d3ddc7054146e89a53964c",
    "tuned_params.bin": "5e8b6c8a78761a1a4951214868188739757b89788c06633091da5af85397147c",
    "tuned_params_signed.bin": "d623bd0007f1b6b927f92c85918e1a5e2a1fe9e11d5ec589e5605d50974f2905",
}


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_sample_bytes_are_encoded_and_decoded(name: str) -> None:
    module, records, key = samples()[name]
    fmt = importlib.import_module(f"mace.cachefiles.{module}")
    committed = (DATA / name).read_bytes()
    assert hashlib.sha256(committed).hexdigest() == COMMITTED[name]
    assert fmt.encode(records, key=key) == committed
    assert fmt.decode(committed, key=key) == records
    assert fmt.validate(committed, key=key) == []
    assert fmt.describe(committed)["valid"]
    if key is not None:
        assert fmt.validate(committed, key=b"another key") != []
        assert fmt.decode(committed) == records  # without a key the signature is not checked


def test_every_sample_is_listed() -> None:
    assert sorted(p.name for p in DATA.glob("*.bin")) == sorted(COMMITTED) == sorted(samples())
    assert SIGNING_KEY
