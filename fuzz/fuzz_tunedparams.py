"""Coverage-guided fuzzing of the tuned-parameters parsers: tuned_params.decode, decode_report, validate, describe.

The contract is fuzz/record_format_checks.py's (a violation is a finding; fuzz/README.md says how to run
and triage).

    python fuzz/fuzz_tunedparams.py -max_total_time=180 /tmp/fuzz-tunedparams fuzz/corpus/tunedparams
"""

from __future__ import annotations

from harness import fuzz, import_instrumented
from record_format_checks import record_format_test

KEY = b"fuzz-key"

tuned_params, binformat = import_instrumented("mace.cachefiles.tuned_params", "mace.cachefiles.binformat")
HEADER_SIZE = tuned_params.HEADER_SIZE
test_one_input = record_format_test(tuned_params, tuned_params.TunedParamsError, HEADER_SIZE, binformat, KEY)


if __name__ == "__main__":
    fuzz(test_one_input, "tunedparams.dict")
