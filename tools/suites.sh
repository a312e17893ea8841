# Suites run by tools/run-tests.sh after the unit binaries, one line each:
#   run_suite NAME COMMAND ARGS...     (counts as one test; non-zero exit fails)
#   run_counted NAME COMMAND ARGS...   (the command prints "N passed, M failed")
# Keep every suite bounded in time; make test aims for <15 min on 2 cores.

run_suite purity_check_catches_planted_header tools/purity-selftest.sh
run_suite clang_build_clean make --no-print-directory CC=clang BUILD=build/clang all
run_suite fuzz_smoke make --no-print-directory fuzz-smoke
run_counted check_testdata tests/check/run-testdata.sh
# Deterministic simulator (docs/testing.md): 1,000 seeds with every fault,
# the same seed twice compared byte for byte, and every planted bug caught.
run_suite sim_sweep "$BUILD"/keel sim --seeds 1-1000 --faults all --ops 3000
run_suite sim_determinism bash -c 'b=${BUILD:-build}; for i in 1 2; do "$b"/keel sim --seed 77 --ops 1500 --faults all --trace "$b"/sim-trace-$i.txt --history "$b"/sim-history-$i.jsonl >/dev/null || exit 1; done; cmp "$b"/sim-trace-1.txt "$b"/sim-trace-2.txt && cmp "$b"/sim-history-1.jsonl "$b"/sim-history-2.jsonl && [ "$(wc -l <"$b"/sim-trace-1.txt)" -gt 10000 ]'
run_suite sim_mutants make --no-print-directory BUILD="$BUILD" sim-mutants
# keel server end to end: 3 real processes on loopback, redis-py, redis-cli,
# redis-benchmark, kill -9 of the leader (tests/e2e, ~30 s).
run_counted e2e_server tests/e2e/run.sh
# Jepsen-style faults on real processes: kill -9, SIGSTOP, partitions, clock
# skew, slow fsync; linearizability and lost writes; planted bugs must be
# caught; pipelined writes keep program order per connection (tests/jepsen,
# ~5 min).
run_counted jepsen_short tests/jepsen/run.sh short
