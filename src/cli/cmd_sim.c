/*
 * cmd_sim.c -- `keel sim`: runs the deterministic simulator (src/sim/)
 * over one seed or a range of seeds and prints one line per seed with
 * every parameter derived from it and the verdict. The only real-world
 * things here are the files (--trace, --history) and the wall clock used
 * for the speed figure; the simulation itself never sees either.
 *
 *   keel sim [--seed N | --seeds A-B] [--nodes 3|5] [--ops N]
 *            [--faults all|none|LIST] [--trace FILE] [--history FILE]
 *            [--mutant NAME]            (build/keel-mut only)
 *
 * Exit 0 only when every seed is ok. With --mutant the question is
 * inverted: the run stops at the first seed whose checks catch the planted
 * bug and prints "bug=NAME caught seed=S check=..." (exit 0), or
 * "bug=NAME NOT CAUGHT" after the whole range (exit 1).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "sim/sim.h"


/* The bank's counts (docs/testing.md): transfers per mode as
 * ran/compare-failed/not-executed/unknown, reads ok/failed, session
 * retries (retried/made definite by a retry), session commands answered
 * from the table / run (summed over replicas), uncertain transfers found
 * present/absent. */
static void bank_counts(const struct sim_result *r, char *out, size_t cap)
{
	static const char *const mode[] = {"watch", "txn", "session"};
	size_t k = 0;
	out[0] = 0;
	for (int m = 0; m < 3 && k < cap; m++)
		k += (size_t)snprintf(out + k, cap - k,
				      "%sbank_%s=%" PRIu64 "/%" PRIu64
				      "/%" PRIu64 "/%" PRIu64,
				      m ? " " : "", mode[m], r->bank_ok[m],
				      r->bank_failed[m],
				      r->bank_not_executed[m],
				      r->bank_unknown[m]);
	if (k < cap)
		snprintf(out + k, cap - k,
			 " bank_reads=%" PRIu64 "/%" PRIu64
			 " session_retries=%" PRIu64 "/%" PRIu64
			 " session_dups=%" PRIu64 "/%" PRIu64
			 " bank_uncertain=%" PRIu64 "/%" PRIu64,
			 r->bank_reads, r->bank_reads_failed, r->bank_retries,
			 r->bank_retry_definite, r->session_dups,
			 r->session_runs, r->bank_uncertain_present,
			 r->bank_uncertain_absent);
}
static void file_line(void *ctx, const char *line)
{
	FILE *f = ctx;
	fputs(line, f);
	fputc('\n', f);
}

static int usage(FILE *f)
{
	fprintf(f,
		"usage: keel sim [--seed N | --seeds A-B] [--nodes 3|5] [--ops N]\n"
		"                [--faults all|none|LIST] [--trace FILE] [--history FILE]\n"
		"                [--mutant NAME]\n"
		"  LIST: comma list of loss,dup,delay,corrupt,partition,crash,pause,clock,disk,\n"
		"        eio,enospc,bitflip\n"
		"  --mutant (keel-mut builds): hunt the seeds for a planted bug:");
	for (int i = 0; sim_mutant_name(i); i++)
		fprintf(f, " %s", sim_mutant_name(i));
	fprintf(f, "\n");
	return f == stdout ? 0 : 2;
}

#define SIM_CMD "keel sim"

int cmd_sim(int argc, char **argv)
{
	uint64_t first = 1, last = 1, ops = 1000, nodes = 0;
	uint32_t faults = SIM_FAULTS_ALL;
	const char *trace_path = NULL, *history_path = NULL, *mutant = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help") || !strcmp(a, "-h"))
			return usage(stdout);
		if (!v)
			return usage(stderr);
		i++;
		if (!strcmp(a, "--seed")) {
			if (!cli_parse_u64(SIM_CMD, a, v, 0, UINT64_MAX, &first))
				return 2;
			last = first;
		} else if (!strcmp(a, "--seeds")) {
			char buf[64];
			const char *dash = strchr(v, '-');
			size_t n = dash ? (size_t)(dash - v) : 0;
			if (!dash || n >= sizeof(buf)) {
				fprintf(stderr, "keel sim: bad --seeds '%s': "
					"want A-B (two whole numbers, A <= B)\n",
					v);
				return 2;
			}
			memcpy(buf, v, n);
			buf[n] = 0;
			if (!cli_parse_u64(SIM_CMD, "--seeds start", buf, 0,
					   UINT64_MAX, &first) ||
			    !cli_parse_u64(SIM_CMD, "--seeds end", dash + 1,
					   first, UINT64_MAX, &last))
				return 2;
		} else if (!strcmp(a, "--nodes")) {
			if (!cli_parse_u64(SIM_CMD, a, v, 3, 5, &nodes))
				return 2;
			if (nodes == 4) {
				fprintf(stderr, "keel sim: bad --nodes '4': 3 or 5\n");
				return 2;
			}
		} else if (!strcmp(a, "--ops")) {
			if (!cli_parse_u64(SIM_CMD, a, v, 1, 100000000, &ops))
				return 2;
		} else if (!strcmp(a, "--faults")) {
			if (sim_faults_parse(v, &faults)) {
				fprintf(stderr, "keel sim: bad fault list '%s'\n",
					v);
				return 2;
			}
		} else if (!strcmp(a, "--trace")) {
			trace_path = v;
		} else if (!strcmp(a, "--history")) {
			history_path = v;
		} else if (!strcmp(a, "--mutant")) {
			mutant = v;
		} else {
			return usage(stderr);
		}
	}
	int mutant_value = 0;
	if (mutant) {
		mutant_value = sim_mutant_parse(mutant);
		if (mutant_value < 0) {
			fprintf(stderr,
				"keel sim: unknown mutant '%s' (mutants exist "
				"only in build/keel-mut)\n",
				mutant);
			return 2;
		}
	}
	FILE *trace = NULL, *history = NULL;
	if (trace_path && !(trace = fopen(trace_path, "w"))) {
		perror(trace_path);
		return 2;
	}
	if (history_path && !(history = fopen(history_path, "w"))) {
		perror(history_path);
		if (trace)
			fclose(trace);
		return 2;
	}
	char fbuf[128];
	sim_faults_format(faults, fbuf, sizeof(fbuf));
	uint64_t n_ok = 0, n_bad = 0, total_ops = 0;
	struct sim_result sum;
	memset(&sum, 0, sizeof(sum));
	double t0 = cli_now_s();
	int exit_code = 0;
	bool caught = false;
	/* "seed <= last" would never end for last = UINT64_MAX: stop after
	 * running last (the test also runs on each continue). */
	bool ran_last = false;
	for (uint64_t seed = first; !ran_last; ran_last = seed == last, seed++) {
		struct sim_options o = {.seed = seed,
					.nodes = (uint32_t)nodes,
					.ops = ops,
					.faults = faults,
					.mutant = mutant_value,
					.trace = trace ? file_line : NULL,
					.trace_ctx = trace,
					.history = history ? file_line : NULL,
					.history_ctx = history};
		/* A run that dies on a core assertion (raft_check_invariants
		 * after every step) must still be attributable to its seed. */
		if (mutant) {
			fprintf(stderr, "mutant %s: seed=%" PRIu64 "\n", mutant,
				seed);
			fflush(stderr);
		}
		struct sim_result r;
		int rv = sim_run(&o, &r);
		if (rv) {
			fprintf(stderr, "keel sim: seed %" PRIu64 ": %s\n", seed,
				keel_strerror(rv));
			exit_code = 1;
			break;
		}
		total_ops += r.ops_invoked;
		sum.snap_taken += r.snap_taken;
		sum.snap_finished += r.snap_finished;
		sum.snap_aborted += r.snap_aborted;
		sum.snap_compactions += r.snap_compactions;
		sum.snap_sends += r.snap_sends;
		sum.snap_sends_ok += r.snap_sends_ok;
		sum.snap_sends_failed += r.snap_sends_failed;
		sum.snap_chunks += r.snap_chunks;
		sum.snap_chunks_resent += r.snap_chunks_resent;
		sum.snap_verify_failed += r.snap_verify_failed;
		sum.snap_installs += r.snap_installs;
		sum.snap_restores += r.snap_restores;
		sum.digest_checks += r.digest_checks;
		sum.client_timeouts += r.client_timeouts;
		sum.timeouts_held += r.timeouts_held;
		sum.timeouts_excused += r.timeouts_excused;
		sum.pipes += r.pipes;
		sum.pipe_sent += r.pipe_sent;
		sum.pipe_ok += r.pipe_ok;
		sum.pipe_dropped += r.pipe_dropped;
		sum.pipe_not_leader += r.pipe_not_leader;
		sum.pipe_unknown += r.pipe_unknown;
		sum.pipe_lost += r.pipe_lost;
		sum.pipe_streams += r.pipe_streams;
		sum.pipe_timeouts += r.pipe_timeouts;
		sum.pipe_late_drops += r.pipe_late_drops;
		sum.pipe_uncertain_present += r.pipe_uncertain_present;
		sum.pipe_uncertain_absent += r.pipe_uncertain_absent;
		sum.banks += r.banks;
		for (int m = 0; m < 3; m++) {
			sum.bank_ok[m] += r.bank_ok[m];
			sum.bank_failed[m] += r.bank_failed[m];
			sum.bank_not_executed[m] += r.bank_not_executed[m];
			sum.bank_unknown[m] += r.bank_unknown[m];
		}
		sum.bank_reads += r.bank_reads;
		sum.bank_reads_failed += r.bank_reads_failed;
		sum.bank_retries += r.bank_retries;
		sum.bank_retry_definite += r.bank_retry_definite;
		sum.bank_timeouts += r.bank_timeouts;
		sum.bank_skipped += r.bank_skipped;
		sum.session_dups += r.session_dups;
		sum.session_runs += r.session_runs;
		sum.bank_uncertain_present += r.bank_uncertain_present;
		sum.bank_uncertain_absent += r.bank_uncertain_absent;
		char bank[256];
		bank_counts(&r, bank, sizeof(bank));
		sum.max_hold_pm = r.max_hold_pm > sum.max_hold_pm
					  ? r.max_hold_pm
					  : sum.max_hold_pm;
		printf("seed=%" PRIu64 " nodes=%u ops=%" PRIu64
		       " faults=%s %s steps=%" PRIu64 " sim_ms=%" PRIu64
		       " ok/fail/info=%" PRIu64 "/%" PRIu64 "/%" PRIu64
		       " crashes=%" PRIu64 "(lost_or_torn=%" PRIu64
		       ") partitions=%" PRIu64 " pauses=%" PRIu64
		       " corrupted=%" PRIu64 " bad_frames=%" PRIu64
		       " forwarded=%" PRIu64 " expiries=%" PRIu64
		       " disk_errors=%" PRIu64 " enospc=%" PRIu64
		       " bitflips=%" PRIu64 " refused_start=%" PRIu64
		       " torn_tails=%" PRIu64 " snaps=%" PRIu64 "/%" PRIu64
		       "/%" PRIu64 " compactions=%" PRIu64
		       " transfers=%" PRIu64 "/%" PRIu64 "/%" PRIu64
		       " chunks=%" PRIu64 "/%" PRIu64 " verify_failed=%" PRIu64
		       " installs=%" PRIu64 " restores=%" PRIu64
		       " digests=%" PRIu64 " timeouts=%" PRIu64
		       "(held=%" PRIu64 ",excused=%" PRIu64
		       ") max_hold_pm=%" PRIu64 " pipelined=%" PRIu64
		       "/%" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64
		       "/%" PRIu64 " streams=%" PRIu64 " late_drops=%" PRIu64
		       " uncertain=%" PRIu64 "/%" PRIu64 " %s result=%s%s%s\n",
		       seed, r.nodes, ops, fbuf, r.params, r.steps,
		       r.sim_ns / 1000000, r.ops_ok, r.ops_fail, r.ops_info,
		       r.crashes, r.crashes_lost, r.partitions, r.pauses,
		       r.frames_corrupted, r.frames_bad, r.forwarded, r.expiries,
		       r.disk_errors, r.enospc, r.bitflips, r.refused_start,
		       r.torn_tails, r.snap_taken, r.snap_finished,
		       r.snap_aborted, r.snap_compactions, r.snap_sends,
		       r.snap_sends_ok, r.snap_sends_failed, r.snap_chunks,
		       r.snap_chunks_resent, r.snap_verify_failed,
		       r.snap_installs, r.snap_restores, r.digest_checks,
		       r.client_timeouts, r.timeouts_held, r.timeouts_excused,
		       r.max_hold_pm, r.pipe_sent, r.pipe_ok, r.pipe_dropped,
		       r.pipe_not_leader, r.pipe_unknown, r.pipe_lost,
		       r.pipe_streams, r.pipe_late_drops,
		       r.pipe_uncertain_present, r.pipe_uncertain_absent, bank,
		       r.ok ? "ok" : "VIOLATION",
		       r.ok ? "" : " ",
		       r.ok ? "" : r.violation);
		fflush(stdout);
		if (r.ok) {
			n_ok++;
			continue;
		}
		n_bad++;
		exit_code = 1;
		/* An undecided history is not a catch: keep hunting. */
		if (mutant && strncmp(r.violation, "linearizability-undecided",
				      strlen("linearizability-undecided"))) {
			printf("bug=%s caught seed=%" PRIu64 " check=%s\n",
			       mutant, seed, r.violation);
			caught = true;
			break;
		}
	}
	double dt = cli_now_s() - t0;
	if (trace)
		fclose(trace);
	if (history)
		fclose(history);
	printf("seeds=%" PRIu64 " ok=%" PRIu64 " violations=%" PRIu64
	       " wall_s=%.2f client_ops=%" PRIu64 " ops/s=%.0f\n",
	       n_ok + n_bad, n_ok, n_bad, dt, total_ops,
	       dt > 0 ? (double)total_ops / dt : 0.0);
	/* Summed over the seeds: taken/finished/aborted snapshots,
	 * transfers started/done/failed, chunks sent/resent. */
	printf("snapshots taken=%" PRIu64 " finished=%" PRIu64
	       " aborted=%" PRIu64 " compactions=%" PRIu64
	       " transfers_started=%" PRIu64 " transfers_done=%" PRIu64
	       " transfers_failed=%" PRIu64 " chunks_sent=%" PRIu64
	       " chunks_resent=%" PRIu64 " verify_failed=%" PRIu64
	       " installs=%" PRIu64 " restores=%" PRIu64
	       " digest_checks=%" PRIu64 "\n",
	       sum.snap_taken, sum.snap_finished, sum.snap_aborted,
	       sum.snap_compactions, sum.snap_sends, sum.snap_sends_ok,
	       sum.snap_sends_failed, sum.snap_chunks, sum.snap_chunks_resent,
	       sum.snap_verify_failed, sum.snap_installs, sum.snap_restores,
	       sum.digest_checks);
	/* request-held-silently, summed: client timeouts, those that found
	 * the request still held (judged / excused by a pause or crash),
	 * and the longest judged hold as a multiple of the timeout. */
	printf("holds client_timeouts=%" PRIu64 " held_at_timeout=%" PRIu64
	       " excused=%" PRIu64 " longest=%" PRIu64 ".%03" PRIu64
	       "x_timeout\n",
	       sum.client_timeouts, sum.timeouts_held, sum.timeouts_excused,
	       sum.max_hold_pm / 1000, sum.max_hold_pm % 1000);
	/* Pipelined writes (program order), summed: writes sent and what
	 * their clients were told, streams, client timeouts, drops after a
	 * later write of the stream was acknowledged, and the writes without
	 * a definite answer found present / absent at the end. */
	printf("pipelined clients=%" PRIu64 " sent=%" PRIu64 " ok=%" PRIu64
	       " dropped=%" PRIu64 " not_leader=%" PRIu64 " unknown=%" PRIu64
	       " lost=%" PRIu64 " streams=%" PRIu64 " timeouts=%" PRIu64
	       " late_drops=%" PRIu64 " uncertain_present=%" PRIu64
	       " uncertain_absent=%" PRIu64 "\n",
	       (uint64_t)sum.pipes, sum.pipe_sent, sum.pipe_ok,
	       sum.pipe_dropped, sum.pipe_not_leader, sum.pipe_unknown,
	       sum.pipe_lost, sum.pipe_streams, sum.pipe_timeouts,
	       sum.pipe_late_drops, sum.pipe_uncertain_present,
	       sum.pipe_uncertain_absent);
	/* The bank, summed: transfers per mode ran/compare-failed/not
	 * executed/unknown, reads, session retries. */
	{
		char bank[256];
		bank_counts(&sum, bank, sizeof(bank));
		printf("bank clients=%" PRIu64 " %s\n", (uint64_t)sum.banks,
		       bank);
	}
	if (mutant) {
		if (!caught)
			printf("bug=%s NOT CAUGHT seeds=%" PRIu64 "-%" PRIu64
			       "\n",
			       mutant, first, last);
		return caught ? 0 : 1;
	}
	return exit_code;
}
