"""Coverage-guided fuzzing of the compiled-program cache parsers: program_cache.decode, decode_report and describe.

The contract is fuzz/record_format_checks.py's (a violation is a finding; fuzz/README.md says how to run
and triage).

    python fuzz/fuzz_cachefile.py -max_total_time=180 /tmp/fuzz-cachefile fuzz/corpus/cachefile
"""

from __future__ import annotations

from harness import fuzz, import_instrumented
from record_format_checks import record_format_test

KEY = b"fuzz-key"

program_cache, binformat = import_instrumented("mace.cachefiles.program_cache", "mace.cachefiles.binformat")
HEADER_SIZE = program_cache.HEADER_SIZE
test_one_input = record_format_test(program_cache, program_cache.CacheFormatError, HEADER_SIZE, binformat, KEY)


if __name__ == "__main__":
    fuzz(test_one_input, "cachefile.dict")
