/*
 * cmd_bench.c -- `keel bench raft`: how many entries per second a 3-node
 * cluster commits through the Raft core alone, single-threaded, with no
 * I/O: messages are handed straight to the receiving core and persistence
 * completes at once. It measures the core's own cost per entry (copying,
 * flow control, commit counting), which bounds everything built on it.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "keel/raft.h"

#define BENCH_NODES 3

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct bench_cluster {
	struct raft *n[BENCH_NODES];
	uint64_t applied[BENCH_NODES];
};

static void deliver(struct bench_cluster *c, const struct raft_msg *m)
{
	struct raft_event ev = {.type = RAFT_EV_RECEIVE};
	ev.receive = *m;
	int rv = raft_step(c->n[m->to - 1], &ev);
	if (rv) {
		fprintf(stderr, "bench: step failed: %s\n", keel_strerror(rv));
		exit(1);
	}
}

/* Runs every node's ready/advance until nobody has work. Messages of one
 * node's update are delivered before that node is stepped again, which is
 * what keeps the borrowed pointers valid. */
static void pump(struct bench_cluster *c)
{
	bool busy = true;
	while (busy) {
		busy = false;
		for (int i = 0; i < BENCH_NODES; i++) {
			struct raft_update u;
			if (!raft_ready(c->n[i], &u))
				continue;
			busy = true;
			uint64_t pidx = 0, pterm = 0;
			if (u.n_entries) {
				pidx = u.entries[u.n_entries - 1].index;
				pterm = u.entries[u.n_entries - 1].term;
			}
			for (uint32_t k = 0; k < u.n_msgs; k++)
				deliver(c, &u.msgs[k]);
			for (uint32_t k = 0; k < u.n_msgs_after_persist; k++)
				deliver(c, &u.msgs_after_persist[k]);
			if (u.n_committed)
				c->applied[i] =
					u.committed[u.n_committed - 1].index;
			raft_advance(c->n[i], &u);
			if (pidx) {
				struct raft_event ev = {
					.type = RAFT_EV_PERSISTED,
					.persisted = {.index = pidx, .term = pterm}};
				raft_step(c->n[i], &ev);
			}
		}
	}
}

static int bench_raft_once(uint32_t batch, uint64_t total, uint32_t size,
			   double *rate)
{
	struct bench_cluster c;
	memset(&c, 0, sizeof(c));
	for (int i = 0; i < BENCH_NODES; i++) {
		struct raft_config cfg;
		raft_config_default(&cfg, (raft_id)(i + 1));
		cfg.members.n_voters = BENCH_NODES;
		for (int k = 0; k < BENCH_NODES; k++)
			cfg.members.voters[k] = (raft_id)(k + 1);
		cfg.max_inflight_msgs = 256;
		c.n[i] = raft_create(&cfg);
		if (!c.n[i]) {
			fprintf(stderr, "bench: raft_create failed\n");
			return 1;
		}
	}
	struct raft_event camp = {.type = RAFT_EV_CAMPAIGN};
	raft_step(c.n[0], &camp);
	pump(&c);
	struct raft_status st;
	raft_status(c.n[0], &st);
	if (st.role != RAFT_LEADER) {
		fprintf(stderr, "bench: node 1 did not become leader\n");
		return 1;
	}
	uint8_t *payload = calloc(1, size ? size : 1);
	struct raft_entry *ents = calloc(batch, sizeof(*ents));
	if (!payload || !ents)
		return 1;
	for (uint32_t k = 0; k < batch; k++)
		ents[k] = (struct raft_entry){
			.type = RAFT_ENTRY_NORMAL, .len = size, .data = payload};
	uint64_t base = c.applied[0];
	double t0 = now_s();
	uint64_t proposed = 0;
	while (proposed < total) {
		struct raft_event ev = {.type = RAFT_EV_PROPOSE,
					.propose = {.n = batch, .entries = ents}};
		int rv = raft_step(c.n[0], &ev);
		if (rv == KEEL_ERR_BUSY) {
			pump(&c);
			continue;
		}
		if (rv) {
			fprintf(stderr, "bench: propose: %s\n", keel_strerror(rv));
			return 1;
		}
		proposed += batch;
		pump(&c);
	}
	double dt = now_s() - t0;
	uint64_t committed = c.applied[0] - base;
	for (int i = 0; i < BENCH_NODES; i++) {
		if (c.applied[i] != c.applied[0]) {
			fprintf(stderr, "bench: node %d applied %" PRIu64
					" != leader %" PRIu64 "\n",
				i + 1, c.applied[i], c.applied[0]);
			return 1;
		}
	}
	if (committed != proposed) {
		fprintf(stderr, "bench: committed %" PRIu64 " of %" PRIu64 "\n",
			committed, proposed);
		return 1;
	}
	*rate = (double)committed / dt;
	free(payload);
	free(ents);
	for (int i = 0; i < BENCH_NODES; i++)
		raft_destroy(c.n[i]);
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static int bench_raft(int argc, char **argv)
{
	uint64_t total = 2000000;
	uint32_t size = 128;
	int runs = 5;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--entries") && i + 1 < argc)
			total = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--size") && i + 1 < argc)
			size = (uint32_t)strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
			runs = atoi(argv[++i]);
		else {
			fprintf(stderr,
				"usage: keel bench raft [--entries N] [--size BYTES] [--runs R]\n");
			return 2;
		}
	}
	if (runs < 1 || runs > 50 || total == 0 || size > (1u << 20)) {
		fprintf(stderr, "keel bench raft: bad arguments\n");
		return 2;
	}
	static const uint32_t batches[] = {1, 16, 256};
	printf("raft core, 3 nodes in memory, %u-byte entries, median of %d runs\n",
	       size, runs);
	for (size_t b = 0; b < sizeof(batches) / sizeof(batches[0]); b++) {
		uint64_t n = batches[b] == 1 ? total / 8 : total;
		double rates[50];
		for (int k = 0; k < runs; k++)
			if (bench_raft_once(batches[b], n, size, &rates[k]))
				return 1;
		qsort(rates, (size_t)runs, sizeof(double), cmp_double);
		printf("batch=%-4u entries=%-8" PRIu64
		       " committed/s median=%.0f min=%.0f max=%.0f\n",
		       batches[b], n, rates[runs / 2], rates[0],
		       rates[runs - 1]);
	}
	return 0;
}

int cmd_bench(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "raft"))
		return bench_raft(argc - 1, argv + 1);
	fprintf(stderr, "usage: keel bench raft [options]\n");
	return argc >= 2 && !strcmp(argv[1], "--help") ? 0 : 2;
}
