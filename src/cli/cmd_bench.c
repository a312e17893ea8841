/*
 * cmd_bench.c -- micro-benchmarks that print figures.
 *
 * `keel bench raft`: how many entries per second a 3-node
 * cluster commits through the Raft core alone, single-threaded, with no
 * I/O: messages are handed straight to the receiving core and persistence
 * completes at once. It measures the core's own cost per entry (copying,
 * flow control, commit counting), which bounds everything built on it.
 *
 * `keel bench wal`: durable appends per second through the WAL on the disk
 * thread (group commit) for 1, 16 and 64 appenders, beside the raw
 * fdatasync rate of the same directory, measured in the same run.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "keel/posix_disk.h"
#include "keel/raft.h"
#include "keel/wal_worker.h"

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

/* ---- keel bench wal ------------------------------------------------------ */

/* Durable appends through the real WAL on the disk thread, with N
 * appenders each keeping one 256-byte record in flight (a client waiting
 * for its write), beside the raw fdatasync rate of the same directory. */

struct wal_bench {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	uint64_t completed;
	int failed;
	uint32_t outstanding;
};

static void wb_wake(void *arg)
{
	struct wal_bench *b = arg;
	pthread_mutex_lock(&b->mu);
	pthread_cond_signal(&b->cond);
	pthread_mutex_unlock(&b->mu);
}

static void wb_done(void *arg, int status)
{
	struct wal_bench *b = arg;
	if (status)
		b->failed = status;
	b->completed++;
	b->outstanding--;
}

static int rm_tree(const char *dir)
{
	char cmd[1300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd);
}

static double raw_fdatasync_rate(const char *dir, double seconds)
{
	char path[1200];
	snprintf(path, sizeof(path), "%s/raw-fdatasync", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return -1;
	uint8_t rec[256] = {1};
	/* Same pattern as a preallocated segment: write into existing
	 * blocks so the sync flushes data, not file-size metadata. */
	if (posix_fallocate(fd, 0, 64 << 20) != 0 && ftruncate(fd, 64 << 20) != 0) {
		close(fd);
		return -1;
	}
	uint64_t n = 0, off = 0;
	double t0 = now_s(), t;
	do {
		if (pwrite(fd, rec, sizeof(rec), (off_t)off) != (ssize_t)sizeof(rec) ||
		    fdatasync(fd) != 0) {
			close(fd);
			return -1;
		}
		off = (off + sizeof(rec)) % (64 << 20);
		n++;
		t = now_s();
	} while (t - t0 < seconds);
	close(fd);
	unlink(path);
	return (double)n / (t - t0);
}

static int wal_bench_once(const char *dir, uint32_t appenders,
			  double seconds, double *appends_s, double *syncs_s,
			  uint64_t *max_batch)
{
	rm_tree(dir);
	char err[256];
	struct posix_disk *pd;
	if (posix_disk_open(dir, &pd, err, sizeof(err))) {
		fprintf(stderr, "bench wal: %s\n", err);
		return 1;
	}
	struct wal_config cfg = {.disk = posix_disk_get(pd), .cluster_id = 1};
	struct wal *w;
	struct wal_recovered rec;
	int rv = wal_open(&cfg, &w, &rec, err, sizeof(err));
	if (rv) {
		fprintf(stderr, "bench wal: %s\n", err);
		posix_disk_close(pd);
		return 1;
	}
	wal_recovered_free(w, &rec);
	struct wal_bench b = {.outstanding = 0};
	pthread_mutex_init(&b.mu, NULL);
	pthread_cond_init(&b.cond, NULL);
	struct wal_worker *ww;
	if (wal_worker_start(w, wb_wake, &b, &ww)) {
		wal_close(w);
		posix_disk_close(pd);
		return 1;
	}
	uint8_t payload[256];
	memset(payload, 0xab, sizeof(payload));
	uint64_t next_index = 1, submitted = 0;
	double t0 = now_s(), t = t0;
	bool stop = false;
	while (!stop || b.outstanding > 0) {
		while (!stop && b.outstanding < appenders) {
			struct raft_entry e = {.term = 1, .index = next_index++,
					       .len = sizeof(payload), .data = payload};
			struct env_store_write wr = {.n_entries = 1, .entries = &e};
			if (wal_worker_submit(ww, &wr, wb_done, &b)) {
				b.failed = KEEL_ERR_NOMEM;
				stop = true;
				break;
			}
			b.outstanding++;
			submitted++;
		}
		pthread_mutex_lock(&b.mu);
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 10 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&b.cond, &b.mu, &ts);
		pthread_mutex_unlock(&b.mu);
		wal_worker_drain(ww);
		t = now_s();
		if (t - t0 >= seconds || b.failed)
			stop = true;
	}
	double dt = now_s() - t0;
	struct wal_worker_stats st;
	wal_worker_stats(ww, &st);
	wal_worker_stop(ww);
	wal_close(w);
	posix_disk_close(pd);
	rm_tree(dir);
	pthread_mutex_destroy(&b.mu);
	pthread_cond_destroy(&b.cond);
	if (b.failed) {
		fprintf(stderr, "bench wal: write failed: %s\n",
			keel_strerror(b.failed));
		return 1;
	}
	*appends_s = (double)b.completed / dt;
	*syncs_s = (double)st.batches / dt;
	*max_batch = st.max_batch;
	return 0;
}

static int bench_wal(int argc, char **argv)
{
	const char *dir = "build/bench-wal";
	double seconds = 3;
	int runs = 3;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--dir") && i + 1 < argc)
			dir = argv[++i];
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = atof(argv[++i]);
		else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
			runs = atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: keel bench wal [--dir DIR] [--seconds S] [--runs R]\n");
			return 2;
		}
	}
	if (runs < 1 || runs > 20 || seconds <= 0 || seconds > 600 ||
	    strlen(dir) > 1000) {
		fprintf(stderr, "keel bench wal: bad arguments\n");
		return 2;
	}
	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "keel bench wal: cannot create %s: %s\n", dir,
			strerror(errno));
		return 1;
	}
	char raw_dir[1100];
	snprintf(raw_dir, sizeof(raw_dir), "%s", dir);
	char wal_dir[1120];
	snprintf(wal_dir, sizeof(wal_dir), "%s/wal-run", dir);
	printf("wal bench in %s: 256-byte records, %.1fs per run, median of %d runs\n",
	       dir, seconds, runs);
	static const uint32_t apps[] = {1, 16, 64};
	double single = 0;
	for (int r = 0; r < 1; r++) {
		double raw[20];
		for (int k = 0; k < runs; k++)
			raw[k] = raw_fdatasync_rate(raw_dir, seconds);
		qsort(raw, (size_t)runs, sizeof(double), cmp_double);
		if (raw[0] < 0) {
			fprintf(stderr, "keel bench wal: raw fdatasync failed\n");
			return 1;
		}
		printf("raw fdatasync (256 B pwrite + fdatasync, preallocated): %.0f/s\n",
		       raw[runs / 2]);
		for (size_t a = 0; a < sizeof(apps) / sizeof(apps[0]); a++) {
			double ap[20], sy[20];
			uint64_t mb = 0, mbk;
			for (int k = 0; k < runs; k++) {
				if (wal_bench_once(wal_dir, apps[a], seconds, &ap[k],
						   &sy[k], &mbk))
					return 1;
				if (mbk > mb)
					mb = mbk;
			}
			qsort(ap, (size_t)runs, sizeof(double), cmp_double);
			qsort(sy, (size_t)runs, sizeof(double), cmp_double);
			if (apps[a] == 1)
				single = ap[runs / 2];
			printf("appenders=%-3u durable appends/s=%-8.0f fsyncs/s=%-7.0f max batch=%-3" PRIu64
			       " vs raw=%.2f vs single=%.1fx\n",
			       apps[a], ap[runs / 2], sy[runs / 2], mb,
			       ap[runs / 2] / raw[runs / 2],
			       single > 0 ? ap[runs / 2] / single : 0.0);
		}
	}
	return 0;
}

int cmd_bench(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "raft"))
		return bench_raft(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "wal"))
		return bench_wal(argc - 1, argv + 1);
	fprintf(stderr, "usage: keel bench raft|wal [options]\n");
	return argc >= 2 && !strcmp(argv[1], "--help") ? 0 : 2;
}
