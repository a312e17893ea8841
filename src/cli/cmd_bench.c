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
 *
 * `keel bench snapshot`: what a snapshot of a large keyspace costs, to
 * bound how long it would stall the write path (issue 4): the whole
 * encode, the longest single step of the streaming writer, the durable
 * save through the WAL on the real disk, and the decode; then the write
 * pause with a frozen version (kv_freeze): turns of applies and writer
 * steps, as the node will run them.
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
#include "keel/kv.h"
#include "keel/raft.h"
#include "keel/wal.h"
#include "keel/wal_worker.h"

#define BENCH_NODES 3

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
	double t0 = cli_now_s();
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
	double dt = cli_now_s() - t0;
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
	uint64_t total = 2000000, size_v = 128, runs_v = 5;
	for (int i = 1; i < argc; i += 2) { /* option, value */
		bool ok;
		if (!strcmp(argv[i], "--entries") && i + 1 < argc)
			ok = cli_parse_u64("keel bench raft", argv[i], argv[i + 1],
					   1, UINT64_MAX / 8, &total);
		else if (!strcmp(argv[i], "--size") && i + 1 < argc)
			ok = cli_parse_u64("keel bench raft", argv[i], argv[i + 1],
					   0, 1u << 20, &size_v);
		else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
			ok = cli_parse_u64("keel bench raft", argv[i], argv[i + 1],
					   1, 50, &runs_v);
		else {
			fprintf(stderr,
				"usage: keel bench raft [--entries N] [--size BYTES] [--runs R]\n");
			return 2;
		}
		if (!ok)
			return 2;
	}
	uint32_t size = (uint32_t)size_v; /* both in range: checked above */
	int runs = (int)runs_v;
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
	double t0 = cli_now_s(), t;
	do {
		if (pwrite(fd, rec, sizeof(rec), (off_t)off) != (ssize_t)sizeof(rec) ||
		    fdatasync(fd) != 0) {
			close(fd);
			return -1;
		}
		off = (off + sizeof(rec)) % (64 << 20);
		n++;
		t = cli_now_s();
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
	double t0 = cli_now_s(), t = t0;
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
		t = cli_now_s();
		if (t - t0 >= seconds || b.failed)
			stop = true;
	}
	double dt = cli_now_s() - t0;
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
		else if (!strcmp(argv[i], "--runs") && i + 1 < argc) {
			uint64_t v;
			if (!cli_parse_u64("keel bench wal", "--runs", argv[++i], 1,
					   20, &v))
				return 2;
			runs = (int)v;
		} else {
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

/* ---- keel bench snapshot ------------------------------------------------- */

/* Builds a kv of N keys through kv_apply (SET entries, keys inserted in
 * scattered order), then times, per run: kv_snapshot_encode; the streaming
 * writer at --chunk bytes per step (its longest step is what one loop turn
 * would be blocked for if the node interleaved chunks with its work);
 * wal_snapshot_save of the encoded bytes on the real disk; and
 * kv_snapshot_decode. Each figure is the median of the runs. The streamed
 * bytes must equal the encoded ones and the decoded kv's digest must equal
 * the original's, or the bench fails: a figure for wrong output is no
 * figure. */

#define SNAPB_MAX_KEYS 20000000ull
#define SNAPB_MAX_VALUE (1u << 20)
#define SNAPB_MAX_DATA (8ull << 30) /* keys x value bytes */
#define SNAPB_MAX_CHUNK (64u << 20)
#define SNAPB_MAX_RUNS 9

static void nop_status(void *c, const char *s) { (void)c; (void)s; }
static void nop_integer(void *c, int64_t v) { (void)c; (void)v; }
static void nop_bulk(void *c, const uint8_t *p, size_t l)
{
	(void)c; (void)p; (void)l;
}
static void nop_null(void *c) { (void)c; }
static void nop_array(void *c, size_t n) { (void)c; (void)n; }
static void count_error(void *c, const char *s)
{
	(void)s;
	(*(uint64_t *)c)++;
}

static const struct kv_reply_ops snapb_reply = {
	.status = nop_status, .error = count_error, .integer = nop_integer,
	.bulk = nop_bulk, .null = nop_null, .array = nop_array};

static double median3(double *v, int runs)
{
	qsort(v, (size_t)runs, sizeof(double), cmp_double);
	return v[runs / 2];
}

static struct kv *snapb_build(uint64_t keys, uint32_t vbytes, double *secs)
{
	struct kv *kv = kv_create(&keel_alloc_libc);
	uint8_t *val = malloc(vbytes ? vbytes : 1);
	size_t cap = KV_CMD_HEADER_BYTES + 4 * 3 + 3 + 32 + vbytes;
	uint8_t *cmd = malloc(cap);
	if (!kv || !val || !cmd) {
		fprintf(stderr, "bench snapshot: out of memory\n");
		goto fail;
	}
	for (uint32_t i = 0; i < vbytes; i++)
		val[i] = (uint8_t)('a' + i % 26);
	/* i -> i * P mod N is a bijection when gcd(P, N) = 1 (P is prime):
	 * every key once, in an order that scatters the tree inserts. */
	uint64_t p = 1000003;
	if (keys % p == 0)
		p = 1;
	uint64_t errors = 0;
	double t0 = cli_now_s();
	for (uint64_t i = 0; i < keys; i++) {
		char key[32];
		int kl = snprintf(key, sizeof(key), "key:%012" PRIu64,
				  (i * p) % keys);
		const uint8_t *argv[3] = {(const uint8_t *)"SET",
					  (const uint8_t *)key, val};
		size_t lens[3] = {3, (size_t)kl, vbytes};
		size_t len;
		int rv = kv_cmd_encode(1, 3, argv, lens, cmd, cap, &len);
		if (!rv)
			rv = kv_apply(kv, i + 1, cmd, len, &snapb_reply, &errors);
		if (rv || errors) {
			fprintf(stderr, "bench snapshot: SET %" PRIu64 " failed: %s\n",
				i, rv ? keel_strerror(rv) : "error reply");
			goto fail;
		}
	}
	*secs = cli_now_s() - t0;
	free(val);
	free(cmd);
	return kv;
fail:
	kv_destroy(kv);
	free(val);
	free(cmd);
	return NULL;
}

/* One durable save of data through a fresh WAL in dir; *secs is the
 * wal_snapshot_save call alone. The log needs an entry at the snapshot's
 * index first (a snapshot covers durable log), so one is appended and
 * synced before the clock starts. */
static int snapb_save(const char *dir, const uint8_t *data, size_t len,
		      double *secs)
{
	rm_tree(dir);
	char err[256];
	struct posix_disk *pd;
	if (posix_disk_open(dir, &pd, err, sizeof(err))) {
		fprintf(stderr, "bench snapshot: %s\n", err);
		return 1;
	}
	struct wal_config cfg = {.disk = posix_disk_get(pd), .cluster_id = 1};
	struct wal *w;
	struct wal_recovered rec;
	if (wal_open(&cfg, &w, &rec, err, sizeof(err))) {
		fprintf(stderr, "bench snapshot: %s\n", err);
		posix_disk_close(pd);
		return 1;
	}
	wal_recovered_free(w, &rec);
	uint8_t one = 0;
	struct raft_entry e = {.term = 1, .index = 1, .len = 1, .data = &one};
	int rv = wal_append(w, &e, 1);
	if (!rv)
		rv = wal_sync(w);
	if (!rv) {
		double t0 = cli_now_s();
		rv = wal_snapshot_save(w, 1, 1, data, len);
		*secs = cli_now_s() - t0;
	}
	if (rv)
		fprintf(stderr, "bench snapshot: save: %s (%s)\n",
			keel_strerror(rv), wal_errmsg(w));
	wal_close(w);
	posix_disk_close(pd);
	rm_tree(dir);
	return rv ? 1 : 0;
}

/* ---- write pause with a frozen version ------------------------------------ */

/* The node's snapshot pipeline in miniature (docs/snapshots.md §1.2): a
 * frozen version of the kv, then turns of "apply a batch of SETs, then run
 * steps_per_turn writer steps of chunk bytes", until the last byte is out.
 * The writer steps of one turn are what writes wait for (the pause); the
 * bytes go to a file in dir with write(2) outside that clock (the node hands
 * them to the disk thread). The same number of batches then runs without a
 * frozen version, for the apply throughput beside it. Verified, outside
 * every clock: the streamed bytes, fed to a kv_snap_reader as they come,
 * decode to a kv with the digest the kv had at the freeze; with expect
 * (small runs) they must also equal kv_snapshot_encode at the freeze byte
 * for byte. */
struct snapb_wp {
	uint64_t turns, sets, bytes;
	double freeze_s, snap_s, turn_med, turn_p99, turn_max;
	double writer_s, sink_s, verify_s; /* parts of the wall time */
	double apply_snap_s, apply_base_s;
	size_t peak_pre, end_pre;
};

struct snapb_batch {
	uint32_t n;
	size_t cap;
	uint8_t *buf; /* n commands of cap bytes */
	size_t *lens;
	const uint8_t *val;
	uint32_t vbytes;
};

/* Encodes b->n SETs, half of existing keys, half of new ones (outside the
 * clock), then applies them: *secs is the apply time alone. */
static int snapb_apply_batch(struct kv *kv, struct snapb_batch *b,
			     struct keel_rand *rnd, uint64_t keys,
			     uint64_t *next_new, uint64_t *index, double *secs)
{
	for (uint32_t i = 0; i < b->n; i++) {
		uint64_t k = keel_rand_chance(rnd, 1, 2)
				     ? keel_rand_below(rnd, keys)
				     : keys + (*next_new)++;
		char key[32];
		int kl = snprintf(key, sizeof(key), "key:%012" PRIu64, k);
		const uint8_t *argv[3] = {(const uint8_t *)"SET",
					  (const uint8_t *)key, b->val};
		size_t lens[3] = {3, (size_t)kl, b->vbytes};
		if (kv_cmd_encode(1, 3, argv, lens, b->buf + i * b->cap, b->cap,
				  &b->lens[i]))
			return 1;
	}
	uint64_t errors = 0;
	double t0 = cli_now_s();
	for (uint32_t i = 0; i < b->n; i++) {
		if (kv_apply(kv, ++*index, b->buf + i * b->cap, b->lens[i],
			     &snapb_reply, &errors))
			return 1;
	}
	*secs += cli_now_s() - t0;
	return errors ? 1 : 0;
}

static int snapb_write_pause(struct kv *kv, uint64_t keys, uint32_t vbytes,
			     size_t chunk, uint32_t steps_per_turn,
			     uint32_t batch, const char *dir, bool expect,
			     struct snapb_wp *out)
{
	memset(out, 0, sizeof(*out));
	struct kv_stats st;
	kv_stats(kv, &st);
	uint64_t index = st.applied_index, next_new = 0;
	uint64_t digest = kv_digest(kv);
	uint8_t *want = NULL;
	size_t want_len = 0;
	if (expect && kv_snapshot_encode(kv, &keel_alloc_libc, &want, &want_len)) {
		fprintf(stderr, "bench snapshot: encode: out of memory\n");
		return 1;
	}
	struct snapb_batch b = {.n = batch, .vbytes = vbytes};
	b.cap = KV_CMD_HEADER_BYTES + 4 * 3 + 3 + 32 + vbytes;
	b.buf = malloc(b.cap * batch);
	b.lens = malloc(sizeof(size_t) * batch);
	uint8_t *val = malloc(vbytes ? vbytes : 1);
	uint8_t *cbuf = malloc(chunk * steps_per_turn);
	size_t *ns = malloc(sizeof(size_t) * steps_per_turn);
	uint64_t max_turns = kv_snapshot_size(kv) / ((uint64_t)chunk * steps_per_turn) + 2;
	double *lat = malloc(max_turns * sizeof(double));
	struct kv_snap_reader *rd = kv_snap_reader_create(&keel_alloc_libc, 0);
	char path[1200];
	snprintf(path, sizeof(path), "%s/frozen.snap", dir);
	mkdir(dir, 0755);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	struct kv_frozen *f = NULL;
	struct kv *back = NULL;
	int ret = 1;
	if (!b.buf || !b.lens || !val || !cbuf || !ns || !lat || !rd || fd < 0) {
		fprintf(stderr, "bench snapshot: write pause: %s\n",
			fd < 0 ? strerror(errno) : "out of memory");
		goto out;
	}
	for (uint32_t i = 0; i < vbytes; i++)
		val[i] = (uint8_t)('A' + i % 26);
	b.val = val;
	struct keel_rand rnd;
	keel_rand_seed(&rnd, 4);
	double t0 = cli_now_s();
	f = kv_freeze(kv, &keel_alloc_libc);
	double t1 = cli_now_s();
	out->freeze_s = t1 - t0;
	if (!f) {
		fprintf(stderr, "bench snapshot: kv_freeze failed\n");
		goto out;
	}
	bool more = true;
	double start = t0;
	while (more) {
		if (snapb_apply_batch(kv, &b, &rnd, keys, &next_new, &index,
				      &out->apply_snap_s)) {
			fprintf(stderr, "bench snapshot: apply during the snapshot failed\n");
			goto out;
		}
		uint32_t s = 0;
		t0 = cli_now_s();
		for (; s < steps_per_turn && more; s++)
			more = kv_frozen_next(f, cbuf + s * chunk, chunk, &ns[s]);
		t1 = cli_now_s();
		if (out->turns >= max_turns) {
			fprintf(stderr, "bench snapshot: more turns than bytes\n");
			goto out;
		}
		lat[out->turns++] = t1 - t0;
		out->writer_s += t1 - t0;
		size_t pre = kv_frozen_preimage_bytes(f);
		if (pre > out->peak_pre)
			out->peak_pre = pre;
		for (uint32_t k = 0; k < s; k++) { /* off the pause clock */
			const uint8_t *p = cbuf + k * chunk;
			t0 = cli_now_s();
			if (write(fd, p, ns[k]) != (ssize_t)ns[k]) {
				fprintf(stderr, "bench snapshot: write: %s\n",
					strerror(errno));
				goto out;
			}
			t1 = cli_now_s();
			out->sink_s += t1 - t0;
			if (want && (ns[k] > want_len - out->bytes ||
				     memcmp(p, want + out->bytes, ns[k]))) {
				fprintf(stderr, "bench snapshot: frozen bytes differ from the encode at the freeze near %" PRIu64 "\n",
					out->bytes);
				goto out;
			}
			int rv = kv_snap_reader_feed(rd, p, ns[k]);
			if (rv) {
				fprintf(stderr, "bench snapshot: reader: %s\n",
					keel_strerror(rv));
				goto out;
			}
			out->verify_s += cli_now_s() - t1;
			out->bytes += ns[k];
		}
	}
	/* The verification is not part of taking the snapshot. */
	out->snap_s = cli_now_s() - start - out->verify_s;
	out->end_pre = kv_frozen_preimage_bytes(f);
	out->sets = out->turns * batch;
	kv_frozen_destroy(f);
	f = NULL;
	if (want && out->bytes != want_len) {
		fprintf(stderr, "bench snapshot: frozen stream is %" PRIu64 " bytes, the encode %zu\n",
			out->bytes, want_len);
		goto out;
	}
	int rv = kv_snap_reader_finish(rd, &back);
	if (rv || kv_digest(back) != digest) {
		fprintf(stderr, "bench snapshot: the streamed bytes %s\n",
			rv ? keel_strerror(rv) : "decode to another state than the one frozen");
		goto out;
	}
	/* The same number of batches without a frozen version. */
	for (uint64_t t = 0; t < out->turns; t++) {
		if (snapb_apply_batch(kv, &b, &rnd, keys, &next_new, &index,
				      &out->apply_base_s)) {
			fprintf(stderr, "bench snapshot: apply failed\n");
			goto out;
		}
	}
	qsort(lat, out->turns, sizeof(double), cmp_double);
	out->turn_med = lat[out->turns / 2];
	out->turn_p99 = lat[out->turns - 1 - out->turns / 100];
	out->turn_max = lat[out->turns - 1];
	ret = 0;
out:
	kv_frozen_destroy(f);
	kv_destroy(back);
	kv_snap_reader_destroy(rd);
	if (fd >= 0) {
		close(fd);
		unlink(path);
		rmdir(dir);
	}
	free(lat);
	free(ns);
	free(cbuf);
	free(val);
	free(b.lens);
	free(b.buf);
	free(want);
	return ret;
}

static void snapb_print_wp(const char *what, const struct snapb_wp *w,
			   uint32_t batch)
{
	printf("%s: %" PRIu64 " turns, %" PRIu64 " bytes (%.1f MiB) in %.1f ms "
	       "wall (kv_freeze %.3f ms; writer steps %.1f ms, applies %.1f ms, "
	       "sink writes %.1f ms; the verification decode, %.1f ms, excluded)\n",
	       what, w->turns, w->bytes, (double)w->bytes / (1 << 20),
	       w->snap_s * 1e3, w->freeze_s * 1e3, w->writer_s * 1e3,
	       w->apply_snap_s * 1e3, w->sink_s * 1e3, w->verify_s * 1e3);
	printf("  writer work per turn (the pause writes see): median %.3f ms, "
	       "p99 %.3f ms, longest %.3f ms\n",
	       w->turn_med * 1e3, w->turn_p99 * 1e3, w->turn_max * 1e3);
	double during = w->sets / w->apply_snap_s, base = w->sets / w->apply_base_s;
	printf("  apply (%" PRIu32 " SETs per turn, %" PRIu64 " each): %.0f SETs/s "
	       "(%.2f us/op) during the snapshot, %.0f SETs/s (%.2f us/op) "
	       "without one, same run\n",
	       batch, w->sets, during, 1e6 / during, base, 1e6 / base);
	printf("  pre-images: peak %zu bytes (%.1f MiB), %zu after the last record\n",
	       w->peak_pre, (double)w->peak_pre / (1 << 20), w->end_pre);
}

static int bench_snapshot(int argc, char **argv)
{
	uint64_t keys = 1000000, vbytes = 100, chunk = 64 << 10, runs = 3;
	uint64_t batch = 100, steps_per_turn = 4, check_keys = 20000, wp = 1;
	const char *dir = "build/bench-snap";
	for (int i = 1; i < argc; i += 2) { /* option, value */
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool ok;
		if (!strcmp(argv[i], "--keys"))
			ok = keel_parse_u64(v, 1, SNAPB_MAX_KEYS, &keys);
		else if (!strcmp(argv[i], "--value-bytes"))
			ok = keel_parse_u64(v, 0, SNAPB_MAX_VALUE, &vbytes);
		else if (!strcmp(argv[i], "--chunk"))
			ok = keel_parse_u64(v, 1, SNAPB_MAX_CHUNK, &chunk);
		else if (!strcmp(argv[i], "--runs"))
			ok = keel_parse_u64(v, 1, SNAPB_MAX_RUNS, &runs);
		else if (!strcmp(argv[i], "--batch"))
			ok = keel_parse_u64(v, 1, 100000, &batch);
		else if (!strcmp(argv[i], "--steps-per-turn"))
			ok = keel_parse_u64(v, 1, 1024, &steps_per_turn);
		else if (!strcmp(argv[i], "--check-keys"))
			ok = keel_parse_u64(v, 1, SNAPB_MAX_KEYS, &check_keys);
		else if (!strcmp(argv[i], "--write-pause"))
			ok = keel_parse_u64(v, 0, 1, &wp);
		else if (!strcmp(argv[i], "--dir"))
			ok = v && *v && strlen(v) <= 1000 && !strchr(v, '\'');
		else
			ok = false;
		if (!ok) {
			fprintf(stderr,
				"keel bench snapshot: bad or missing value for %s\n"
				"usage: keel bench snapshot [--keys N (1..%llu)] "
				"[--value-bytes B (0..%u)] [--dir DIR] "
				"[--chunk BYTES (1..%u)] [--runs R (1..%d)] "
				"[--write-pause 0|1] [--batch SETS (1..100000)] "
				"[--steps-per-turn N (1..1024)] [--check-keys N]\n",
				argv[i], SNAPB_MAX_KEYS, SNAPB_MAX_VALUE,
				SNAPB_MAX_CHUNK, SNAPB_MAX_RUNS);
			return 2;
		}
		if (!strcmp(argv[i], "--dir"))
			dir = v;
	}
	if (keys * vbytes > SNAPB_MAX_DATA) {
		fprintf(stderr, "keel bench snapshot: keys x value-bytes over %llu\n",
			SNAPB_MAX_DATA);
		return 2;
	}
	double build_s;
	struct kv *kv = snapb_build(keys, (uint32_t)vbytes, &build_s);
	if (!kv)
		return 1;
	struct kv_stats st;
	kv_stats(kv, &st);
	uint64_t digest = kv_digest(kv);
	uint8_t *cbuf = malloc(chunk);
	/* Per-step times for the median and p99, so one preempted step on a
	 * shared machine is told apart from steps that are all slow. Capped:
	 * with a tiny chunk only the longest and the total are kept. */
	uint64_t max_steps = kv_snapshot_size(kv) / chunk + 2;
	double *lat = max_steps <= (16u << 20) ? malloc(max_steps * sizeof(double))
					      : NULL;
	int ret = 1;
	if (st.keys != keys || !cbuf) {
		fprintf(stderr, "bench snapshot: %s\n",
			cbuf ? "wrong key count" : "out of memory");
		goto out;
	}
	printf("snapshot bench: %" PRIu64 " keys of 16 bytes, %" PRIu64
	       "-byte values, chunk %" PRIu64 " B, dir %s, median of %" PRIu64
	       " runs\n",
	       keys, vbytes, chunk, dir, runs);
	printf("build: %" PRIu64 " SETs through kv_apply in %.2f s (%.2f us/op)\n",
	       keys, build_s, build_s * 1e6 / (double)keys);
	double enc[SNAPB_MAX_RUNS], smax[SNAPB_MAX_RUNS], stot[SNAPB_MAX_RUNS],
		save[SNAPB_MAX_RUNS], dec[SNAPB_MAX_RUNS];
	double smed[SNAPB_MAX_RUNS], sp99[SNAPB_MAX_RUNS];
	uint64_t steps = 0;
	size_t size = 0;
	for (uint64_t r = 0; r < runs; r++) {
		uint8_t *snap;
		double t0 = cli_now_s();
		int rv = kv_snapshot_encode(kv, &keel_alloc_libc, &snap, &size);
		enc[r] = cli_now_s() - t0;
		if (rv) {
			fprintf(stderr, "bench snapshot: encode: %s\n",
				keel_strerror(rv));
			goto out;
		}
		/* Streaming: each step timed alone (creating the writer is a
		 * step too); the bytes are checked against the encode outside
		 * the clock. */
		double longest = 0, total = 0;
		uint64_t nsteps = 0;
		t0 = cli_now_s();
		struct kv_snap_writer *w =
			kv_snapshot_writer_create(kv, &keel_alloc_libc);
		double t1 = cli_now_s();
		longest = total = t1 - t0;
		if (!w) {
			fprintf(stderr, "bench snapshot: writer: out of memory\n");
			free(snap);
			goto out;
		}
		size_t off = 0, n;
		bool more = true;
		steps = 0;
		while (more) {
			t0 = cli_now_s();
			more = kv_snapshot_writer_next(w, cbuf, chunk, &n);
			t1 = cli_now_s();
			total += t1 - t0;
			if (t1 - t0 > longest)
				longest = t1 - t0;
			if (lat && nsteps < max_steps)
				lat[nsteps] = t1 - t0;
			nsteps++;
			if (n > size - off || memcmp(cbuf, snap + off, n)) {
				fprintf(stderr, "bench snapshot: streamed bytes differ from the encode at %zu\n",
					off);
				kv_snapshot_writer_destroy(w);
				free(snap);
				goto out;
			}
			off += n;
		}
		kv_snapshot_writer_destroy(w);
		if (off != size) {
			fprintf(stderr, "bench snapshot: streamed %zu of %zu bytes\n",
				off, size);
			free(snap);
			goto out;
		}
		smax[r] = longest;
		stot[r] = total;
		steps = nsteps;
		if (lat && nsteps <= max_steps) {
			qsort(lat, nsteps, sizeof(double), cmp_double);
			smed[r] = lat[nsteps / 2];
			sp99[r] = lat[nsteps - 1 - nsteps / 100];
		} else {
			smed[r] = sp99[r] = -1;
		}
		if (snapb_save(dir, snap, size, &save[r])) {
			free(snap);
			goto out;
		}
		struct kv *back;
		t0 = cli_now_s();
		rv = kv_snapshot_decode(&keel_alloc_libc, snap, size, &back);
		dec[r] = cli_now_s() - t0;
		free(snap);
		if (rv) {
			fprintf(stderr, "bench snapshot: decode: %s\n",
				keel_strerror(rv));
			goto out;
		}
		bool same = kv_digest(back) == digest;
		kv_destroy(back);
		if (!same) {
			fprintf(stderr, "bench snapshot: decoded state differs\n");
			goto out;
		}
	}
	double e = median3(enc, (int)runs), sm = median3(smax, (int)runs),
	       stt = median3(stot, (int)runs), sv = median3(save, (int)runs),
	       d = median3(dec, (int)runs);
	printf("snapshot size: %zu bytes (%.1f MiB)\n", size,
	       (double)size / (1 << 20));
	printf("encode (kv_snapshot_encode): %.1f ms (%.0f MB/s)\n", e * 1e3,
	       (double)size / e / 1e6);
	printf("stream (writer_next, %" PRIu64 " steps of %" PRIu64
	       " B): longest step %.3f ms, total %.1f ms\n",
	       steps, chunk, sm * 1e3, stt * 1e3);
	if (lat)
		printf("stream step: median %.3f ms, p99 %.3f ms\n",
		       median3(smed, (int)runs) * 1e3,
		       median3(sp99, (int)runs) * 1e3);
	printf("save (wal_snapshot_save: write, fsync, rename, dir fsync): %.1f ms (%.0f MB/s)\n",
	       sv * 1e3, (double)size / sv / 1e6);
	printf("decode (kv_snapshot_decode): %.1f ms\n", d * 1e3);
	printf("write pause, synchronous encode+save on the loop: %.1f ms\n",
	       (e + sv) * 1e3);
	/* Once the last chunk is out the kv may change again (the writer no
	 * longer reads it), so the fsync and rename are off the frozen
	 * window; the byte writes are not if the disk paces the stream. */
	printf("write pause, encode on the loop, save on the disk thread: %.1f ms\n",
	       e * 1e3);
	printf("write pause, streamed chunks between loop turns: %.3f ms per turn, "
	       "but applies wait for the whole stream (>= %.1f ms of CPU, paced by "
	       "the disk writes) unless the kv is copy-on-write\n",
	       sm * 1e3, stt * 1e3);
	if (wp) {
		/* A small run checked byte for byte against the encode at the
		 * freeze, then the measured one (checked through the reader). */
		if (check_keys * vbytes > SNAPB_MAX_DATA)
			check_keys = keys;
		double bs;
		struct kv *small = snapb_build(check_keys, (uint32_t)vbytes, &bs);
		struct snapb_wp w;
		if (!small || snapb_write_pause(small, check_keys, (uint32_t)vbytes,
						(size_t)chunk,
						(uint32_t)steps_per_turn,
						(uint32_t)batch, dir, true, &w)) {
			kv_destroy(small);
			goto out;
		}
		kv_destroy(small);
		printf("write pause, frozen version: check run of %" PRIu64
		       " keys: %" PRIu64 " streamed bytes = kv_snapshot_encode at "
		       "the freeze, and the reader's decode = the frozen state\n",
		       check_keys, w.bytes);
		if (snapb_write_pause(kv, keys, (uint32_t)vbytes, (size_t)chunk,
				      (uint32_t)steps_per_turn, (uint32_t)batch,
				      dir, false, &w))
			goto out;
		char what[200];
		snprintf(what, sizeof(what),
			 "write pause, frozen version (%" PRIu64 " steps of %" PRIu64
			 " B per turn, sink: a file in %s)",
			 steps_per_turn, chunk, dir);
		snapb_print_wp(what, &w, (uint32_t)batch);
		printf("  verified: the streamed bytes, fed to kv_snap_reader, decode "
		       "to the state at the freeze (digest)\n");
	}
	ret = 0;
out:
	free(lat);
	free(cbuf);
	kv_destroy(kv);
	return ret;
}

int cmd_bench(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "raft"))
		return bench_raft(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "wal"))
		return bench_wal(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "snapshot"))
		return bench_snapshot(argc - 1, argv + 1);
	fprintf(stderr, "usage: keel bench raft|wal|snapshot [options]\n");
	return argc >= 2 && !strcmp(argv[1], "--help") ? 0 : 2;
}
