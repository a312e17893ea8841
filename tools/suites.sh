# Suites run by tools/run-tests.sh after the unit binaries, one line each:
#   run_suite NAME COMMAND ARGS...     (counts as one test; non-zero exit fails)
#   run_counted NAME COMMAND ARGS...   (the command prints "N passed, M failed")
# Keep every suite bounded in time; make test aims for <15 min on 2 cores.

run_suite purity_check_catches_planted_header tools/purity-selftest.sh
run_suite clang_build_clean make --no-print-directory CC=clang BUILD=build/clang all
run_suite fuzz_smoke make --no-print-directory fuzz-smoke
run_counted check_testdata tests/check/run-testdata.sh
