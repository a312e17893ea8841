/*
 * wal_worker.c -- group commit on a dedicated disk thread (wal_worker.h).
 *
 * Two queues under one mutex: `todo` (submitted, not yet run) and `done`
 * (durable or failed, callbacks not yet run). The worker swaps the whole
 * todo queue out at once, so every write submitted while a sync was in
 * progress joins the next batch: with N clients waiting, one fdatasync
 * acknowledges up to N writes.
 *
 * Snapshot operations (docs/snapshots.md §2, §5) are jobs of the same FIFO
 * queue, so completion order is issue order for free. A chunk write is a
 * plain pwrite (never synced by itself: one fdatasync per snapshot, at
 * its finish); run_batch says how appends and snapshot jobs share a
 * batch without the appends waiting behind snapshot I/O.
 * The loop side caps the snapshot bytes queued in each direction
 * (ENV_SNAP_QUEUE_MAX): past it snap_write / snap_read say KEEL_ERR_BUSY
 * and the node waits for completions.
 */
#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "keel/wal_worker.h"

static_assert(ENV_SNAP_LOCAL == WAL_SNAP_LOCAL, "snapshot kinds agree");
static_assert(ENV_SNAP_RECEIVED == WAL_SNAP_RECEIVED, "snapshot kinds agree");
static_assert(ENV_SNAP_READ_MAX == WAL_SNAP_READ_MAX, "read caps agree");

enum job_op {
	JOB_APPEND = 0,
	JOB_SNAP_BEGIN,
	JOB_SNAP_WRITE,
	JOB_SNAP_FINISH,
	JOB_SNAP_ABORT,
	JOB_SNAP_READ,
};

struct job {
	struct job *next;
	int op; /* enum job_op */
	uint64_t truncate_from;
	uint32_t n;
	struct raft_entry *entries; /* data in the same allocation */
	bool has_hs;
	struct raft_hard_state hs;
	/* Snapshot jobs. handle is the store's (loop-side) handle. */
	uint64_t handle;
	struct env_store_snap snap; /* JOB_SNAP_BEGIN */
	uint64_t index, term;       /* JOB_SNAP_READ */
	uint64_t offset;
	uint8_t *data; /* WRITE: the copied chunk; READ: the buffer; both in
			  the same allocation as the job */
	size_t len;
	uint32_t crc;
	env_store_read_cb rcb;
	env_store_cb cb;
	void *arg;
	int status;
};

struct queue {
	struct job *head, *tail;
};

/* Worker-thread view of an open snapshot: the store's handle, the WAL's,
 * and the error its begin failed with (reported by its writes). */
struct wsnap {
	uint64_t handle; /* 0 = free */
	uint64_t wal_handle;
	int status;
};

struct wal_worker {
	struct wal *wal;
	void (*wake)(void *arg);
	void *wake_arg;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	struct queue todo, done;
	bool stopping;
	struct wal_worker_stats stats;
	const struct env_store_state *recovered;
	/* Loop thread only. */
	uint64_t next_handle;
	uint64_t open_handle[2]; /* by kind - 1; 0 = none open */
	uint64_t queued_write_bytes, queued_read_bytes;
	/* Worker thread only. */
	struct wsnap ws[2];
};

static void q_push(struct queue *q, struct job *j)
{
	j->next = NULL;
	if (q->tail)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
}

static void q_append(struct queue *q, struct queue *more)
{
	if (!more->head)
		return;
	if (q->tail)
		q->tail->next = more->head;
	else
		q->head = more->head;
	q->tail = more->tail;
	more->head = more->tail = NULL;
}

static struct wsnap *ws_find(struct wal_worker *ww, uint64_t handle)
{
	for (int i = 0; i < 2; i++)
		if (handle && ww->ws[i].handle == handle)
			return &ww->ws[i];
	return NULL;
}

/* Runs one snapshot job on the WAL (worker thread). */
static void run_snap_job(struct wal_worker *ww, struct job *j)
{
	struct wsnap *s = ws_find(ww, j->handle);
	switch (j->op) {
	case JOB_SNAP_BEGIN: {
		KEEL_ASSERT(s == NULL);
		s = NULL;
		for (int i = 0; i < 2 && !s; i++)
			if (!ww->ws[i].handle)
				s = &ww->ws[i];
		KEEL_ASSERT(s != NULL); /* the loop side allows one per kind */
		s->handle = j->handle;
		s->status = wal_snapshot_begin(ww->wal, j->snap.index,
					       j->snap.term, j->snap.total_len,
					       j->snap.kind, &s->wal_handle);
		j->status = s->status;
		break;
	}
	case JOB_SNAP_WRITE:
		if (!s)
			j->status = KEEL_ERR_INVAL;
		else if (s->status)
			j->status = s->status;
		else
			j->status = wal_snapshot_write(ww->wal, s->wal_handle,
						       j->offset, j->data,
						       j->len);
		break;
	case JOB_SNAP_FINISH:
		if (!s) {
			j->status = KEEL_ERR_INVAL;
			break;
		}
		j->status = s->status ? s->status
				      : wal_snapshot_finish(ww->wal,
							    s->wal_handle,
							    j->crc);
		memset(s, 0, sizeof(*s));
		break;
	case JOB_SNAP_ABORT:
		if (s) {
			if (!s->status)
				wal_snapshot_abort(ww->wal, s->wal_handle);
			memset(s, 0, sizeof(*s));
		}
		break;
	case JOB_SNAP_READ:
		j->status = wal_snapshot_read(ww->wal, j->index, j->term,
					      j->offset, j->data, j->len);
		break;
	default:
		KEEL_ASSERT(!"wal_worker: unknown job");
	}
}

/* Hands the jobs [q->head, to) to the loop (to == NULL: all of them).
 * They may be freed as soon as the lock is dropped: not touched after. */
static void deliver(struct wal_worker *ww, struct queue *q, struct job *to,
		    uint64_t n, uint64_t syncs)
{
	struct queue part = {.head = q->head, .tail = NULL};
	if (!part.head || part.head == to)
		return;
	for (struct job *j = q->head; j && j != to; j = j->next)
		part.tail = j;
	q->head = to;
	if (!to)
		q->tail = NULL;
	part.tail->next = NULL;
	pthread_mutex_lock(&ww->mu);
	q_append(&ww->done, &part);
	ww->stats.batches += syncs;
	if (n > ww->stats.max_batch)
		ww->stats.max_batch = n;
	pthread_mutex_unlock(&ww->mu);
	if (ww->wake)
		ww->wake(ww->wake_arg);
}

/* Runs a batch as segments, each ending at a snap_finish (or the batch's
 * end). In a segment every append is staged first and one sync covers
 * them: the other snapshot jobs there (begin, chunk writes, reads,
 * aborts) touch only snapshot files, so the appends need not wait for
 * them on disk, and a finish's fdatasync never holds the appends issued
 * before it. Then the snapshot jobs run in order, each handed back with
 * everything before it as soon as it is done: completions stay in issue
 * order, and an append waits for no more than the snapshot jobs queued
 * ahead of it (at most ENV_SNAP_QUEUE_MAX bytes of page-cache writes). */
static void run_batch(struct wal_worker *ww, struct queue *batch)
{
	while (batch->head) {
		struct job *last = batch->head;
		while (last->next && last->op != JOB_SNAP_FINISH)
			last = last->next;
		struct job *stop = last->next;
		int rv = 0;
		bool staged = false;
		uint64_t n = 0, syncs = 0;
		for (struct job *j = batch->head; j != stop; j = j->next) {
			if (j->op != JOB_APPEND)
				continue;
			if (!rv && j->n)
				rv = wal_append(ww->wal, j->entries, j->n);
			if (!rv && j->has_hs)
				rv = wal_save_hard_state(ww->wal, &j->hs);
			staged = true;
			n++;
		}
		if (staged) {
			if (!rv)
				rv = wal_sync(ww->wal);
			syncs = 1;
			for (struct job *j = batch->head; j != stop; j = j->next)
				if (j->op == JOB_APPEND)
					j->status = rv;
		}
		/* Staged early, an append issued after a snapshot job that
		 * poisons the WAL must still fail: nothing after a failure
		 * in issue order is acknowledged (env.h). */
		int poison = 0;
		for (struct job *j = batch->head, *next; j != stop; j = next) {
			next = j->next;
			if (j->op == JOB_APPEND) {
				if (poison)
					j->status = poison;
				continue;
			}
			run_snap_job(ww, j);
			if (!poison)
				poison = wal_poisoned(ww->wal);
			deliver(ww, batch, next, n, syncs);
			n = syncs = 0;
		}
		deliver(ww, batch, stop, n, syncs);
	}
}

static void *worker_main(void *arg)
{
	struct wal_worker *ww = arg;
	pthread_mutex_lock(&ww->mu);
	for (;;) {
		while (!ww->todo.head && !ww->stopping)
			pthread_cond_wait(&ww->cond, &ww->mu);
		if (!ww->todo.head && ww->stopping)
			break;
		struct queue batch = ww->todo;
		ww->todo.head = ww->todo.tail = NULL;
		pthread_mutex_unlock(&ww->mu);
		run_batch(ww, &batch);
		pthread_mutex_lock(&ww->mu);
	}
	pthread_mutex_unlock(&ww->mu);
	return NULL;
}

int wal_worker_start(struct wal *w, void (*wake)(void *arg), void *wake_arg,
		     struct wal_worker **out)
{
	struct wal_worker *ww = calloc(1, sizeof(*ww));
	if (!ww)
		return KEEL_ERR_NOMEM;
	ww->wal = w;
	ww->wake = wake;
	ww->wake_arg = wake_arg;
	pthread_mutex_init(&ww->mu, NULL);
	pthread_cond_init(&ww->cond, NULL);
	if (pthread_create(&ww->thread, NULL, worker_main, ww) != 0) {
		pthread_mutex_destroy(&ww->mu);
		pthread_cond_destroy(&ww->cond);
		free(ww);
		return KEEL_ERR_IO;
	}
	*out = ww;
	return 0;
}

static void enqueue(struct wal_worker *ww, struct job *j)
{
	pthread_mutex_lock(&ww->mu);
	q_push(&ww->todo, j);
	pthread_cond_signal(&ww->cond);
	pthread_mutex_unlock(&ww->mu);
}

/* A zeroed job with `extra` bytes after it (NULL when out of memory). */
static struct job *job_new(size_t extra)
{
	struct job *j = malloc(sizeof(*j) + extra);
	if (j)
		memset(j, 0, sizeof(*j));
	return j;
}

int wal_worker_submit(struct wal_worker *ww, const struct env_store_write *w,
		      env_store_cb cb, void *arg)
{
	size_t bytes = w->n_entries * sizeof(struct raft_entry);
	for (uint32_t i = 0; i < w->n_entries; i++)
		bytes += w->entries[i].len;
	struct job *j = job_new(bytes);
	if (!j)
		return KEEL_ERR_NOMEM;
	j->op = JOB_APPEND;
	j->truncate_from = w->truncate_from;
	j->n = w->n_entries;
	j->entries = (struct raft_entry *)(j + 1);
	uint8_t *data = (uint8_t *)(j->entries + w->n_entries);
	for (uint32_t i = 0; i < w->n_entries; i++) {
		j->entries[i] = w->entries[i];
		if (w->entries[i].len)
			memcpy(data, w->entries[i].data, w->entries[i].len);
		j->entries[i].data = data;
		data += w->entries[i].len;
	}
	j->has_hs = w->has_hard_state;
	j->hs = w->hard_state;
	j->cb = cb;
	j->arg = arg;
	enqueue(ww, j);
	return 0;
}

uint32_t wal_worker_drain(struct wal_worker *ww)
{
	pthread_mutex_lock(&ww->mu);
	struct queue q = ww->done;
	ww->done.head = ww->done.tail = NULL;
	pthread_mutex_unlock(&ww->mu);
	uint32_t n = 0;
	while (q.head) {
		struct job *j = q.head;
		q.head = j->next;
		if (j->op == JOB_SNAP_WRITE)
			ww->queued_write_bytes -= j->len;
		if (j->op == JOB_SNAP_READ) {
			ww->queued_read_bytes -= j->len;
			/* The buffer is the job's: borrowed for the call. */
			if (j->rcb)
				j->rcb(j->arg, j->status,
				       j->status ? NULL : j->data,
				       j->status ? 0 : j->len);
		} else if (j->cb) {
			j->cb(j->arg, j->status);
		}
		free(j);
		n++;
	}
	pthread_mutex_lock(&ww->mu);
	ww->stats.writes += n;
	pthread_mutex_unlock(&ww->mu);
	return n;
}

void wal_worker_stop(struct wal_worker *ww)
{
	if (!ww)
		return;
	pthread_mutex_lock(&ww->mu);
	ww->stopping = true;
	pthread_cond_signal(&ww->cond);
	pthread_mutex_unlock(&ww->mu);
	pthread_join(ww->thread, NULL);
	wal_worker_drain(ww);
	pthread_mutex_destroy(&ww->mu);
	pthread_cond_destroy(&ww->cond);
	free(ww);
}

void wal_worker_stats(struct wal_worker *ww, struct wal_worker_stats *st)
{
	pthread_mutex_lock(&ww->mu);
	*st = ww->stats;
	pthread_mutex_unlock(&ww->mu);
}

/* ---- the env_store over the worker ----------------------------------------- */

static int store_load(void *ctx, struct env_store_state *out)
{
	struct wal_worker *ww = ctx;
	if (!ww->recovered)
		return KEEL_ERR_IO;
	*out = *ww->recovered;
	return 0;
}

static int store_append(void *ctx, const struct env_store_write *w,
			env_store_cb cb, void *arg)
{
	return wal_worker_submit(ctx, w, cb, arg);
}

/* The handle is the store's own (the WAL's is only known on the worker
 * thread); begin's WAL errors other than these checks surface as the
 * status of the snapshot's first write or its finish. */
static int store_snap_begin(void *ctx, const struct env_store_snap *s,
			    uint64_t *handle)
{
	struct wal_worker *ww = ctx;
	*handle = 0;
	if (s->kind != ENV_SNAP_LOCAL && s->kind != ENV_SNAP_RECEIVED)
		return KEEL_ERR_INVAL;
	if (s->total_len > WAL_SNAP_MAX_BYTES)
		return KEEL_ERR_TOO_BIG;
	if (ww->open_handle[s->kind - 1])
		return KEEL_ERR_BUSY;
	struct job *j = job_new(0);
	if (!j)
		return KEEL_ERR_NOMEM;
	j->op = JOB_SNAP_BEGIN;
	j->handle = ++ww->next_handle;
	j->snap = *s;
	ww->open_handle[s->kind - 1] = j->handle;
	*handle = j->handle;
	enqueue(ww, j);
	return 0;
}

/* Forgets a handle on the loop side (finish or abort was queued). */
static bool close_handle(struct wal_worker *ww, uint64_t handle)
{
	for (int i = 0; i < 2; i++)
		if (handle && ww->open_handle[i] == handle) {
			ww->open_handle[i] = 0;
			return true;
		}
	return false;
}

static bool handle_open(const struct wal_worker *ww, uint64_t handle)
{
	return handle &&
	       (ww->open_handle[0] == handle || ww->open_handle[1] == handle);
}

static int store_snap_write(void *ctx, uint64_t handle, uint64_t offset,
			    const uint8_t *data, size_t len, env_store_cb cb,
			    void *arg)
{
	struct wal_worker *ww = ctx;
	if (!handle_open(ww, handle) || (len && !data))
		return KEEL_ERR_INVAL;
	if (len > ENV_SNAP_QUEUE_MAX ||
	    ww->queued_write_bytes > ENV_SNAP_QUEUE_MAX - len)
		return KEEL_ERR_BUSY;
	struct job *j = job_new(len);
	if (!j)
		return KEEL_ERR_NOMEM;
	j->op = JOB_SNAP_WRITE;
	j->handle = handle;
	j->offset = offset;
	j->data = (uint8_t *)(j + 1);
	if (len)
		memcpy(j->data, data, len);
	j->len = len;
	j->cb = cb;
	j->arg = arg;
	ww->queued_write_bytes += len;
	enqueue(ww, j);
	return 0;
}

static int store_snap_finish(void *ctx, uint64_t handle, uint32_t crc,
			     env_store_cb cb, void *arg)
{
	struct wal_worker *ww = ctx;
	if (!handle_open(ww, handle))
		return KEEL_ERR_INVAL;
	struct job *j = job_new(0);
	if (!j)
		return KEEL_ERR_NOMEM;
	j->op = JOB_SNAP_FINISH;
	j->handle = handle;
	j->crc = crc;
	j->cb = cb;
	j->arg = arg;
	close_handle(ww, handle);
	enqueue(ww, j);
	return 0;
}

static void store_snap_abort(void *ctx, uint64_t handle)
{
	struct wal_worker *ww = ctx;
	if (!close_handle(ww, handle))
		return;
	struct job *j = job_new(0);
	/* abort has no way to report failure, and without the job the
	 * worker's slot for this kind would stay taken: out of memory here
	 * stops the process (as the sim store's allocation failures do). */
	KEEL_ASSERT(j != NULL);
	j->op = JOB_SNAP_ABORT;
	j->handle = handle;
	enqueue(ww, j);
}

static int store_snap_read(void *ctx, uint64_t index, uint64_t term,
			   uint64_t offset, size_t len, env_store_read_cb cb,
			   void *arg)
{
	struct wal_worker *ww = ctx;
	if (len > ENV_SNAP_READ_MAX || !cb)
		return KEEL_ERR_INVAL;
	if (ww->queued_read_bytes > ENV_SNAP_QUEUE_MAX - len)
		return KEEL_ERR_BUSY;
	struct job *j = job_new(len);
	if (!j)
		return KEEL_ERR_NOMEM;
	j->op = JOB_SNAP_READ;
	j->index = index;
	j->term = term;
	j->offset = offset;
	j->data = (uint8_t *)(j + 1);
	j->len = len;
	j->rcb = cb;
	j->arg = arg;
	ww->queued_read_bytes += len;
	enqueue(ww, j);
	return 0;
}

static const struct env_store_ops wal_worker_store_ops = {
	.load = store_load,
	.append = store_append,
	.snap_begin = store_snap_begin,
	.snap_write = store_snap_write,
	.snap_finish = store_snap_finish,
	.snap_abort = store_snap_abort,
	.snap_read = store_snap_read,
};

struct env_store wal_worker_store(struct wal_worker *ww,
				  const struct env_store_state *recovered)
{
	ww->recovered = recovered;
	return (struct env_store){.ctx = ww, .ops = &wal_worker_store_ops};
}
