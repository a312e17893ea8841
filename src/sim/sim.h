/*
 * sim.h -- the deterministic simulator: runs a cluster of real nodes
 * (src/node/) on a simulated network, disk and clock, injects faults drawn
 * from one seed, drives concurrent clients, and checks safety after every
 * step, linearizability at the end, then liveness after healing. The same
 * options give the same run, event for event (docs/testing.md).
 */
#ifndef KEEL_SIM_H
#define KEEL_SIM_H

#include <stddef.h>

#include "keel/common.h"

#define SIM_MAX_NODES 5

enum sim_fault {
	SIM_FAULT_LOSS = 1u << 0,
	SIM_FAULT_DUP = 1u << 1,
	SIM_FAULT_DELAY = 1u << 2,
	SIM_FAULT_CORRUPT = 1u << 3,
	SIM_FAULT_PARTITION = 1u << 4,
	SIM_FAULT_CRASH = 1u << 5,
	SIM_FAULT_PAUSE = 1u << 6,
	SIM_FAULT_CLOCK = 1u << 7,
	SIM_FAULT_DISK = 1u << 8,    /* disk latency spikes */
	SIM_FAULT_EIO = 1u << 9,     /* write/sync errors; read errors at restart */
	SIM_FAULT_ENOSPC = 1u << 10, /* a full disk */
	SIM_FAULT_BITFLIP = 1u << 11, /* rot at rest on a minority of nodes */
	SIM_FAULTS_ALL = (1u << 12) - 1,
};

/* "all", "none" or a comma list of loss,dup,delay,corrupt,partition,
 * crash,pause,clock,disk,eio,enospc,bitflip. 0 or KEEL_ERR_INVAL. */
int sim_faults_parse(const char *list, uint32_t *mask);
/* "all", "none" or the comma list, into buf. */
void sim_faults_format(uint32_t mask, char *buf, size_t cap);

/* Planted bugs (KEEL_MUTANTS builds only): name -> value for
 * sim_options.mutant, or -1. */
int sim_mutant_parse(const char *name);
/* The i-th mutant's name, NULL past the end. */
const char *sim_mutant_name(int i);

typedef void (*sim_line_fn)(void *ctx, const char *line);

struct sim_options {
	uint64_t seed;
	uint32_t nodes;  /* 3 or 5; 0 = drawn from the seed */
	uint64_t ops;    /* client operations in the fault phase */
	uint32_t faults; /* enum sim_fault mask */
	int mutant;      /* 0 = none (KEEL_MUTANTS builds only) */
	sim_line_fn trace;   /* every event, or NULL */
	void *trace_ctx;
	sim_line_fn history; /* the client history as JSON lines, or NULL */
	void *history_ctx;
};

struct sim_result {
	bool ok;
	char violation[420]; /* which check, at which step */
	char params[768];    /* every parameter derived from the seed */
	uint32_t nodes;
	uint64_t steps;
	uint64_t ops_invoked, ops_ok, ops_fail, ops_info;
	uint64_t sim_ns;
	uint64_t frames_sent, frames_corrupted, frames_bad;
	uint64_t crashes;
	uint64_t crashes_lost; /* unsynced writes cut short (lost or torn) */
	uint64_t partitions, pauses, disk_writes;
	uint64_t forwarded; /* client requests a follower forwarded */
	uint64_t expiries;  /* KEEL.EXPIRE-DELETE entries leaders proposed */
	uint64_t disk_errors;   /* EIO that surfaced (write, sync or read) */
	uint64_t enospc;        /* ENOSPC that surfaced */
	uint64_t bitflips;      /* bits flipped at rest */
	uint64_t refused_start; /* recoveries that refused (KEEL_ERR_CORRUPT) */
	uint64_t torn_tails;    /* recoveries that cut a torn tail */
	/* Snapshots (docs/snapshots.md §4), summed over nodes and boots. */
	uint64_t snap_taken, snap_finished;
	uint64_t snap_aborted;     /* dropped by an install, or cut by a crash */
	uint64_t snap_compactions;
	uint64_t snap_sends, snap_sends_ok, snap_sends_failed;
	uint64_t snap_chunks, snap_chunks_resent;
	uint64_t snap_verify_failed, snap_installs, snap_restores;
	uint64_t digest_checks;    /* state agreement comparisons */
	uint64_t snap_rot;         /* snap_read bytes rotted on a sender */
	/* request-held-silently (docs/testing.md): client timeouts, those
	 * that found a node still holding the request (judged, or excused
	 * by a pause or crash since), and the longest judged hold (at an
	 * answer or a timeout) in thousandths of the request timeout. */
	uint64_t client_timeouts, timeouts_held, timeouts_excused;
	uint64_t max_hold_pm;
	/* Pipelined writes (docs/testing.md): pipelining clients; writes
	 * sent and what the clients were told (acknowledged, dropped,
	 * not-leader, unknown, lost: no answer before a timeout or a
	 * connection reset); streams opened; client timeouts; drops of a
	 * write after a later write of its stream was acknowledged (order
	 * refusals, most likely); writes without a definite answer found
	 * present / absent at the end. */
	uint32_t pipes;
	uint64_t pipe_sent, pipe_ok, pipe_dropped, pipe_not_leader;
	uint64_t pipe_unknown, pipe_lost;
	uint64_t pipe_streams, pipe_timeouts, pipe_late_drops;
	uint64_t pipe_uncertain_present, pipe_uncertain_absent;
	/* The bank (docs/testing.md): bank clients and accounts; transfers
	 * per mode (watch, txn, session) by what their clients were told
	 * (ran, compare failed, not executed, unknown); reads of every
	 * balance answered / not; session retries of an uncertain (sid,
	 * seq) and the transfers a retry made definite; client timeouts;
	 * transfers skipped (both accounts empty); session commands the
	 * replicas answered from the table (node_stats.session_dups, summed
	 * over every replica's apply) and ran; uncertain transfers found
	 * in the ledger / not. */
	uint32_t banks, bank_accts;
	uint64_t bank_ok[3], bank_failed[3], bank_not_executed[3];
	uint64_t bank_unknown[3];
	uint64_t bank_reads, bank_reads_failed;
	uint64_t bank_retries, bank_retry_definite, bank_timeouts;
	uint64_t bank_skipped;
	uint64_t session_dups, session_runs;
	uint64_t bank_uncertain_present, bank_uncertain_absent;
};

/* Runs one seed. Returns 0 (r->ok says whether every check passed) or an
 * error code when the run could not be set up. */
int sim_run(const struct sim_options *o, struct sim_result *r);

#endif /* KEEL_SIM_H */
