/*
 * wal_worker.h -- the disk thread: runs a WAL on its own thread with group
 * commit and hands completions back to the event loop.
 *
 * The loop thread submits writes (copied at submission); the worker takes
 * every write queued since its last sync, appends them all, syncs once
 * (one fdatasync acknowledges the whole batch) and queues their
 * completions. It then calls wake(wake_arg) from the worker thread -- the
 * server passes uv_async_send -- and the loop calls wal_worker_drain() to
 * run the callbacks on its own thread, in submission order.
 *
 * The store's snapshot operations (env.h, docs/snapshots.md §2 and §5)
 * are jobs of the same queue and complete in issue order with the writes;
 * the appends of a batch are synced before its snapshot jobs run, so they
 * wait only for snapshot jobs issued ahead of them (at most
 * ENV_SNAP_QUEUE_MAX bytes queued per direction).
 *
 * After a failure the WAL is poisoned: that write and every later one
 * completes with the error; nothing after it is ever acknowledged.
 */
#ifndef KEEL_WAL_WORKER_H
#define KEEL_WAL_WORKER_H

#include "keel/env.h"
#include "keel/wal.h"

struct wal_worker;

struct wal_worker_stats {
	uint64_t writes;  /* completed submissions */
	uint64_t batches; /* syncs issued */
	uint64_t max_batch;
};

/* Starts the thread. w stays owned by the caller and must outlive the
 * worker; only the worker touches it while running. */
int wal_worker_start(struct wal *w, void (*wake)(void *arg), void *wake_arg,
		     struct wal_worker **out);

/* Queues a write (copied). cb(arg, status) runs inside wal_worker_drain.
 * Returns KEEL_ERR_NOMEM when it cannot be queued (cb will not run). */
int wal_worker_submit(struct wal_worker *ww, const struct env_store_write *w,
		      env_store_cb cb, void *arg);

/* Runs the callbacks of completed writes; returns how many ran. Loop
 * thread only. */
uint32_t wal_worker_drain(struct wal_worker *ww);

/* Finishes every queued write, stops the thread, runs the remaining
 * callbacks. */
void wal_worker_stop(struct wal_worker *ww);

void wal_worker_stats(struct wal_worker *ww, struct wal_worker_stats *st);

/* An env_store over the worker (load is served from what wal_open
 * recovered: pass it here; it must stay valid while loading). */
struct env_store wal_worker_store(struct wal_worker *ww,
				  const struct env_store_state *recovered);

#endif
