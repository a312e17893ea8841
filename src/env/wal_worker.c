/*
 * wal_worker.c -- group commit on a dedicated disk thread (wal_worker.h).
 *
 * Two queues under one mutex: `todo` (submitted, not yet written) and
 * `done` (durable or failed, callbacks not yet run). The worker swaps the
 * whole todo queue out at once, so every write submitted while a sync was
 * in progress joins the next batch: with N clients waiting, one fdatasync
 * acknowledges up to N writes.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "keel/wal_worker.h"

struct job {
	struct job *next;
	uint64_t truncate_from;
	uint32_t n;
	struct raft_entry *entries; /* data in the same allocation */
	bool has_hs;
	struct raft_hard_state hs;
	env_store_cb cb;
	void *arg;
	int status;
};

struct queue {
	struct job *head, *tail;
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

		/* Stage the whole batch, then one sync covers it. */
		int rv = 0;
		uint64_t n = 0;
		for (struct job *j = batch.head; j; j = j->next, n++) {
			if (!rv && j->n)
				rv = wal_append(ww->wal, j->entries, j->n);
			if (!rv && j->has_hs)
				rv = wal_save_hard_state(ww->wal, &j->hs);
		}
		if (!rv)
			rv = wal_sync(ww->wal);
		for (struct job *j = batch.head; j; j = j->next)
			j->status = rv;

		pthread_mutex_lock(&ww->mu);
		q_append(&ww->done, &batch);
		ww->stats.batches++;
		if (n > ww->stats.max_batch)
			ww->stats.max_batch = n;
		pthread_mutex_unlock(&ww->mu);
		if (ww->wake)
			ww->wake(ww->wake_arg);
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

int wal_worker_submit(struct wal_worker *ww, const struct env_store_write *w,
		      env_store_cb cb, void *arg)
{
	size_t bytes = sizeof(struct job) + w->n_entries * sizeof(struct raft_entry);
	for (uint32_t i = 0; i < w->n_entries; i++)
		bytes += w->entries[i].len;
	struct job *j = malloc(bytes);
	if (!j)
		return KEEL_ERR_NOMEM;
	memset(j, 0, sizeof(*j));
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
	pthread_mutex_lock(&ww->mu);
	q_push(&ww->todo, j);
	pthread_cond_signal(&ww->cond);
	pthread_mutex_unlock(&ww->mu);
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
		if (j->cb)
			j->cb(j->arg, j->status);
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

static const struct env_store_ops wal_worker_store_ops = {
	.load = store_load,
	.append = store_append,
};

struct env_store wal_worker_store(struct wal_worker *ww,
				  const struct env_store_state *recovered)
{
	ww->recovered = recovered;
	return (struct env_store){.ctx = ww, .ops = &wal_worker_store_ops};
}
