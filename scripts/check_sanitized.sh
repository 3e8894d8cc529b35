#!/usr/bin/env bash
# The robustness checks CI runs after the main tests: every libFuzzer target (the input parsers,
# built without LibTorch under AddressSanitizer + UndefinedBehaviorSanitizer) for a short run
# seeded from real files; with WITH_UNIT_TESTS=1 first the whole unit suite in an ASan + UBSan
# build (a second LibTorch-heavy build, ~15 min on 2 cores: too long for CI's 20-minute aim).
# Needs scripts/setup.sh to have run (it installs clang and libclang-rt for the fuzzers).
#   [WITH_UNIT_TESTS=1] scripts/check_sanitized.sh [FUZZ_SECONDS_PER_TARGET]   (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS=${1:-30}
JOBS=${JOBS:-2}

if [ -n "${WITH_UNIT_TESTS:-}" ]; then
  echo "== unit tests under ASan + UBSan (build-asan)"
  # -O1 without -g: half the compile time of RelWithDebInfo; reports still name the functions.
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE= -DCMAKE_CXX_FLAGS=-O1 -DCAPTIONER_SANITIZE=ON >/dev/null
  cmake --build build-asan -j"$JOBS" --target captioner captioner_tests
  # LibTorch and OpenBLAS are not instrumented and keep process-lifetime allocations (thread pools,
  # registries): leaks in them are not ours, so LeakSanitizer is off; every other error aborts.
  export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  ctest --test-dir build-asan -L unit --output-on-failure -j"$JOBS"
fi

echo "== fuzzing, ${FUZZ_SECONDS}s per target (build-fuzz)"
cmake -S tests/fuzz -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$JOBS"
tests/fuzz/run.sh build-fuzz "$FUZZ_SECONDS"
