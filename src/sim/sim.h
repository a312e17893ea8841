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
	SIM_FAULT_DISK = 1u << 8,
	SIM_FAULTS_ALL = (1u << 9) - 1,
};

/* "all", "none" or a comma list of loss,dup,delay,corrupt,partition,
 * crash,pause,clock,disk. 0 or KEEL_ERR_INVAL. */
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
	char params[512];    /* every parameter derived from the seed */
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
};

/* Runs one seed. Returns 0 (r->ok says whether every check passed) or an
 * error code when the run could not be set up. */
int sim_run(const struct sim_options *o, struct sim_result *r);

#endif /* KEEL_SIM_H */
