/*
 * nodesnap.c -- the node snapshot payload codec (nodesnap.h,
 * docs/snapshots.md §1.3). The writer emits head, kv bytes (pulled from a
 * source) and trailer in any chunk size; the reader takes the same bytes in
 * any split, checks the head field by field as soon as it is complete,
 * hands the kv bytes to a sink, and checks the trailer CRC at the end.
 */
#include <assert.h>
#include <string.h>

#include "node/nodesnap.h"

/* ---- members ------------------------------------------------------------ */

static void sort_ids(raft_id *ids, uint32_t n)
{
	for (uint32_t i = 1; i < n; i++) {
		raft_id v = ids[i];
		uint32_t j = i;
		while (j > 0 && ids[j - 1] > v) {
			ids[j] = ids[j - 1];
			j--;
		}
		ids[j] = v;
	}
}

/* Canonical order: voters sorted, then learners sorted. */
static void members_sorted(const struct raft_config_members *m,
			   raft_id out[RAFT_MAX_VOTERS])
{
	memset(out, 0, RAFT_MAX_VOTERS * sizeof(raft_id));
	KEEL_ASSERT(m->n_voters + m->n_learners <= RAFT_MAX_VOTERS);
	memcpy(out, m->voters, m->n_voters * sizeof(raft_id));
	memcpy(out + m->n_voters, m->learners, m->n_learners * sizeof(raft_id));
	sort_ids(out, m->n_voters);
	sort_ids(out + m->n_voters, m->n_learners);
}

static bool same_members(const struct raft_config_members *a,
			 const struct raft_config_members *b)
{
	if (a->n_voters != b->n_voters || a->n_learners != b->n_learners)
		return false;
	raft_id x[RAFT_MAX_VOTERS], y[RAFT_MAX_VOTERS];
	members_sorted(a, x);
	members_sorted(b, y);
	return memcmp(x, y, sizeof(x)) == 0;
}

/* ---- writer --------------------------------------------------------------- */

static void put_dedup(uint8_t *p, const struct node_dedup_rec *r)
{
	keel_put_u64(p, r->origin);
	keel_put_u64(p + 8, r->boot);
	keel_put_u64(p + 16, r->high);
	keel_put_u64(p + 24, r->last_index);
	for (uint32_t w = 0; w < NODE_DEDUP_WORDS; w++)
		keel_put_u64(p + 32 + 8 * w, r->bits[w]);
}

static void put_streams(uint8_t *p, const struct node_dedup_rec *r)
{
	keel_put_u64(p, r->stream_floor);
	for (uint32_t k = 0; k < NODE_DEDUP_STREAMS; k++) {
		keel_put_u64(p + 8 + 16 * k, r->streams[k].id);
		keel_put_u64(p + 16 + 16 * k, r->streams[k].hw);
	}
}

void node_snap_writer_init(struct node_snap_writer *w,
			   const struct node_snap_head *h,
			   node_snap_source_fn src, void *src_ctx,
			   const uint8_t *sess)
{
	KEEL_ASSERT(h->index >= 1);
	KEEL_ASSERT(h->term >= 1);
	KEEL_ASSERT(h->members.n_voters >= 1);
	memset(w, 0, sizeof(*w));
	uint8_t *b = w->head;
	memcpy(b, NODE_SNAP_MAGIC, 8);
	keel_put_u32(b + 8, NODE_SNAP_VERSION);
	keel_put_u32(b + 12, 0);
	KEEL_ASSERT(h->sess_len <= NODE_SNAP_SESS_MAX);
	KEEL_ASSERT(sess || !h->sess_len);
	w->total = node_snap_total(h->kv_len, h->sess_len);
	keel_put_u64(b + 16, w->total);
	keel_put_u64(b + 24, h->index);
	keel_put_u64(b + 32, h->term);
	keel_put_u32(b + 40, h->members.n_voters);
	keel_put_u32(b + 44, h->members.n_learners);
	raft_id ids[RAFT_MAX_VOTERS];
	members_sorted(&h->members, ids);
	for (uint32_t i = 0; i < RAFT_MAX_VOTERS; i++)
		keel_put_u64(b + NODE_SNAP_MEMBERS_OFF + 8 * i, ids[i]);
	keel_put_u32(b + 176, NODE_DEDUP_WINDOW);
	keel_put_u32(b + 180, NODE_DEDUP_RECS);
	for (uint32_t i = 0; i < NODE_DEDUP_RECS; i++)
		put_dedup(b + NODE_SNAP_DEDUP_OFF + NODE_DEDUP_REC_BYTES * i,
			  &h->dedup[i]);
	for (uint32_t i = 0; i < NODE_DEDUP_RECS; i++)
		put_streams(b + NODE_SNAP_STREAMS_OFF +
				    NODE_DEDUP_STREAM_BYTES * i,
			    &h->dedup[i]);
	keel_put_u64(b + NODE_SNAP_KVLEN_OFF, h->kv_len);
	keel_put_u64(b + NODE_SNAP_SESSLEN_OFF, h->sess_len);
	static_assert(NODE_SNAP_DEDUP_OFF +
				      NODE_DEDUP_RECS * NODE_DEDUP_REC_BYTES ==
			      NODE_SNAP_STREAMS_OFF,
		      "dedup records end where the stream tables start");
	static_assert(NODE_SNAP_STREAMS_OFF +
				      NODE_DEDUP_RECS * NODE_DEDUP_STREAM_BYTES ==
			      NODE_SNAP_KVLEN_OFF,
		      "stream tables end where the kv length starts");
	static_assert(NODE_SNAP_KVLEN_OFF_V1 + 8 == NODE_SNAP_HEAD_V1,
		      "v1 head layout");
	static_assert(NODE_SNAP_SESSLEN_OFF + 8 == NODE_SNAP_HEAD,
		      "head layout");
	w->kv_more = true;
	w->src = src;
	w->src_ctx = src_ctx;
	w->sess = sess;
	w->sess_len = h->sess_len;
}

bool node_snap_writer_next(struct node_snap_writer *w, uint8_t *buf,
			   size_t cap, size_t *n)
{
	KEEL_ASSERT(cap > 0);
	KEEL_ASSERT(w->pos <= w->total);
	size_t k = 0;
	uint64_t sess_end = w->total - 4;
	uint64_t kv_end = sess_end - w->sess_len;
	while (k < cap && w->pos < w->total) {
		if (w->pos < NODE_SNAP_HEAD) {
			size_t take = (size_t)KEEL_MIN((uint64_t)(cap - k),
						       NODE_SNAP_HEAD - w->pos);
			memcpy(buf + k, w->head + w->pos, take);
			w->crc = keel_crc32c(w->crc, buf + k, take);
			w->crc_all = keel_crc32c(w->crc_all, buf + k, take);
			w->pos += take;
			k += take;
		} else if (w->pos < kv_end) {
			size_t room = (size_t)KEEL_MIN((uint64_t)(cap - k),
						       kv_end - w->pos);
			size_t got = 0;
			KEEL_ASSERT(w->kv_more);
			w->kv_more = w->src(w->src_ctx, buf + k, room, &got);
			KEEL_ASSERT(got <= room);
			/* The source must produce exactly kv_len bytes. */
			if (w->kv_more)
				KEEL_ASSERT(w->pos + got < kv_end);
			else
				KEEL_ASSERT(w->pos + got == kv_end);
			w->crc = keel_crc32c(w->crc, buf + k, got);
			w->crc_all = keel_crc32c(w->crc_all, buf + k, got);
			w->pos += got;
			k += got;
			if (got == 0 && w->kv_more)
				break; /* a source may yield nothing once */
		} else if (w->pos < sess_end) {
			size_t take = (size_t)KEEL_MIN((uint64_t)(cap - k),
						       sess_end - w->pos);
			memcpy(buf + k, w->sess + (w->pos - kv_end), take);
			w->crc = keel_crc32c(w->crc, buf + k, take);
			w->crc_all = keel_crc32c(w->crc_all, buf + k, take);
			w->pos += take;
			k += take;
		} else {
			if (w->pos == sess_end)
				keel_put_u32(w->trailer, w->crc);
			size_t take = (size_t)KEEL_MIN((uint64_t)(cap - k),
						       w->total - w->pos);
			memcpy(buf + k, w->trailer + (w->pos - sess_end), take);
			w->crc_all = keel_crc32c(w->crc_all, buf + k, take);
			w->pos += take;
			k += take;
		}
	}
	*n = k;
	return w->pos < w->total;
}

uint32_t node_snap_writer_crc(const struct node_snap_writer *w)
{
	KEEL_ASSERT(w->pos == w->total);
	return w->crc_all;
}

/* ---- reader ----------------------------------------------------------------- */

int node_snap_check_dedup(const struct node_dedup_rec *d)
{
	for (uint32_t i = 0; i < NODE_DEDUP_RECS; i++) {
		const struct node_dedup_rec *r = &d[i];
		if (!r->origin) {
			static const struct node_dedup_rec zero;
			if (memcmp(r, &zero, sizeof(zero)) != 0)
				return KEEL_ERR_MALFORMED;
			continue;
		}
		if (r->high == 0 || r->stream_floor > r->high)
			return KEEL_ERR_MALFORMED;
		for (uint32_t k = 0; k < NODE_DEDUP_STREAMS; k++) {
			const struct node_dedup_stream *st = &r->streams[k];
			if (!st->id) {
				if (st->hw)
					return KEEL_ERR_MALFORMED;
				continue;
			}
			if (st->hw == 0 || st->hw > r->high)
				return KEEL_ERR_MALFORMED;
			for (uint32_t m = k + 1; m < NODE_DEDUP_STREAMS; m++)
				if (r->streams[m].id == st->id)
					return KEEL_ERR_MALFORMED;
		}
		uint32_t boots = 0;
		for (uint32_t j = 0; j < NODE_DEDUP_RECS; j++) {
			if (d[j].origin != r->origin)
				continue;
			boots++;
			if (j != i && d[j].boot == r->boot)
				return KEEL_ERR_MALFORMED;
		}
		if (boots > NODE_DEDUP_BOOTS)
			return KEEL_ERR_MALFORMED;
	}
	return 0;
}

static void get_dedup(const uint8_t *p, struct node_dedup_rec *r)
{
	r->origin = keel_get_u64(p);
	r->boot = keel_get_u64(p + 8);
	r->high = keel_get_u64(p + 16);
	r->last_index = keel_get_u64(p + 24);
	for (uint32_t w = 0; w < NODE_DEDUP_WORDS; w++)
		r->bits[w] = keel_get_u64(p + 32 + 8 * w);
}

static void get_streams(const uint8_t *p, struct node_dedup_rec *r)
{
	r->stream_floor = keel_get_u64(p);
	for (uint32_t k = 0; k < NODE_DEDUP_STREAMS; k++) {
		r->streams[k].id = keel_get_u64(p + 8 + 16 * k);
		r->streams[k].hw = keel_get_u64(p + 16 + 16 * k);
	}
}

/* The head is complete: every §1.3 rule on it. */
static int parse_head(struct node_snap_reader *r)
{
	const uint8_t *b = r->head_buf;
	struct node_snap_head *h = &r->head;
	if (memcmp(b, NODE_SNAP_MAGIC, 8) != 0)
		return KEEL_ERR_MAGIC;
	bool v1 = r->head_len == NODE_SNAP_HEAD_V1;
	if (keel_get_u32(b + 12) != 0)
		return KEEL_ERR_MALFORMED;
	uint64_t total = keel_get_u64(b + 16);
	h->kv_len = keel_get_u64(b + (v1 ? NODE_SNAP_KVLEN_OFF_V1
					 : NODE_SNAP_KVLEN_OFF));
	h->sess_len = v1 ? 0 : keel_get_u64(b + NODE_SNAP_SESSLEN_OFF);
	/* The length checks first: nothing below is sized by them, but the
	 * caller's staging is. */
	if (h->sess_len > NODE_SNAP_SESS_MAX ||
	    h->kv_len > UINT64_MAX - (r->head_len + 4u + h->sess_len) ||
	    total != r->head_len + 4u + h->kv_len + h->sess_len)
		return KEEL_ERR_MALFORMED;
	if (h->kv_len < NODE_SNAP_KV_HEAD + 4)
		return KEEL_ERR_MALFORMED;
	if (r->want.max_bytes && total > r->want.max_bytes)
		return KEEL_ERR_TOO_BIG;
	h->index = keel_get_u64(b + 24);
	h->term = keel_get_u64(b + 32);
	if (h->index < 1 || h->term < 1)
		return KEEL_ERR_MALFORMED;
	uint32_t nv = keel_get_u32(b + 40), nl = keel_get_u32(b + 44);
	if (nv < 1 || nv > RAFT_MAX_VOTERS || nl > RAFT_MAX_VOTERS - nv)
		return KEEL_ERR_MALFORMED;
	raft_id ids[RAFT_MAX_VOTERS];
	for (uint32_t i = 0; i < RAFT_MAX_VOTERS; i++) {
		ids[i] = keel_get_u64(b + NODE_SNAP_MEMBERS_OFF + 8 * i);
		if (i < nv + nl && ids[i] == 0)
			return KEEL_ERR_MALFORMED;
		if (i >= nv + nl && ids[i] != 0)
			return KEEL_ERR_MALFORMED;
		/* Canonical: strictly increasing within each group (this
		 * also refuses a repeat there). */
		if (i > 0 && i != nv && i < nv + nl && ids[i] <= ids[i - 1])
			return KEEL_ERR_MALFORMED;
	}
	for (uint32_t i = 0; i < nv; i++)
		for (uint32_t j = nv; j < nv + nl; j++)
			if (ids[i] == ids[j])
				return KEEL_ERR_MALFORMED;
	memset(&h->members, 0, sizeof(h->members));
	h->members.n_voters = nv;
	h->members.n_learners = nl;
	memcpy(h->members.voters, ids, nv * sizeof(raft_id));
	memcpy(h->members.learners, ids + nv, nl * sizeof(raft_id));
	if (keel_get_u32(b + 176) != NODE_DEDUP_WINDOW ||
	    keel_get_u32(b + 180) != NODE_DEDUP_RECS)
		return KEEL_ERR_MALFORMED;
	for (uint32_t i = 0; i < NODE_DEDUP_RECS; i++)
		get_dedup(b + NODE_SNAP_DEDUP_OFF + NODE_DEDUP_REC_BYTES * i,
			  &h->dedup[i]);
	/* v1 had no streams: a log without streams leaves the tables empty,
	 * which is what every replica replaying it has too. */
	for (uint32_t i = 0; !v1 && i < NODE_DEDUP_RECS; i++)
		get_streams(b + NODE_SNAP_STREAMS_OFF +
				    NODE_DEDUP_STREAM_BYTES * i,
			    &h->dedup[i]);
	if (node_snap_check_dedup(h->dedup))
		return KEEL_ERR_MALFORMED;
	if ((r->want.index && h->index != r->want.index) ||
	    (r->want.term && h->term != r->want.term))
		return KEEL_ERR_INVAL;
	if (r->want.members && !same_members(r->want.members, &h->members))
		return KEEL_ERR_INVAL;
	r->total = total;
	return 0;
}

/* The kv snapshot's own header, as far as the node can judge it: its
 * length field equals L and its applied index is not beyond A. (kv's
 * applied index moves only with entries kv ran: the node's A may be
 * later, after entries skipped as duplicates or a no-op.) */
static int check_kv_head(const struct node_snap_reader *r)
{
	if (keel_get_u64(r->kv_head + 16) != r->head.kv_len)
		return KEEL_ERR_MALFORMED;
	if (keel_get_u64(r->kv_head + 24) > r->head.index)
		return KEEL_ERR_MALFORMED;
	return 0;
}

void node_snap_reader_init(struct node_snap_reader *r,
			   const struct node_snap_expect *want,
			   node_snap_sink_fn sink, void *sink_ctx,
			   node_snap_sink_fn sess_sink, void *sess_ctx)
{
	memset(r, 0, sizeof(*r));
	r->want = *want;
	if (want->members) {
		r->members_copy = *want->members;
		r->want.members = &r->members_copy;
	}
	r->sink = sink;
	r->sink_ctx = sink_ctx;
	r->sess_sink = sess_sink;
	r->sess_ctx = sess_ctx;
}

int node_snap_reader_feed(struct node_snap_reader *r, const uint8_t *buf,
			  size_t len)
{
	while (len > 0 && !r->err) {
		if (!r->head_done) {
			/* The first 12 bytes (magic, version) say how long
			 * the head is; until then take only those. */
			uint32_t until = r->head_len ? r->head_len : 12u;
			size_t take = (size_t)KEEL_MIN((uint64_t)len,
						       until - r->pos);
			memcpy(r->head_buf + r->pos, buf, take);
			r->crc = keel_crc32c(r->crc, buf, take);
			r->pos += take;
			buf += take;
			len -= take;
			if (r->pos < until)
				continue;
			if (!r->head_len) {
				if (memcmp(r->head_buf, NODE_SNAP_MAGIC, 8)) {
					r->err = KEEL_ERR_MAGIC;
					break;
				}
				uint32_t v = keel_get_u32(r->head_buf + 8);
				if (v == NODE_SNAP_VERSION)
					r->head_len = NODE_SNAP_HEAD;
				else if (v == NODE_SNAP_VERSION_V1)
					r->head_len = NODE_SNAP_HEAD_V1;
				else
					r->err = KEEL_ERR_VERSION;
				continue;
			}
			r->err = parse_head(r);
			r->head_done = r->err == 0;
			continue;
		}
		KEEL_ASSERT(r->head_done);
		uint64_t sess_end = r->total - 4;
		uint64_t kv_end = sess_end - r->head.sess_len;
		if (r->pos < kv_end) {
			size_t take = (size_t)KEEL_MIN((uint64_t)len,
						       kv_end - r->pos);
			uint64_t kv_off = r->pos - r->head_len;
			if (kv_off < NODE_SNAP_KV_HEAD) {
				size_t h = (size_t)KEEL_MIN(
					(uint64_t)take,
					NODE_SNAP_KV_HEAD - kv_off);
				memcpy(r->kv_head + kv_off, buf, h);
				if (kv_off + h == NODE_SNAP_KV_HEAD) {
					r->err = check_kv_head(r);
					if (r->err)
						break;
				}
			}
			r->crc = keel_crc32c(r->crc, buf, take);
			int rv = r->sink ? r->sink(r->sink_ctx, buf, take) : 0;
			if (rv) {
				r->err = rv;
				break;
			}
			r->pos += take;
			buf += take;
			len -= take;
			continue;
		}
		if (r->pos < sess_end) {
			size_t take = (size_t)KEEL_MIN((uint64_t)len,
						       sess_end - r->pos);
			r->crc = keel_crc32c(r->crc, buf, take);
			int rv = r->sess_sink
					 ? r->sess_sink(r->sess_ctx, buf, take)
					 : 0;
			if (rv) {
				r->err = rv;
				break;
			}
			r->pos += take;
			buf += take;
			len -= take;
			continue;
		}
		if (r->pos >= r->total) {
			r->err = KEEL_ERR_MALFORMED; /* bytes past P */
			break;
		}
		size_t take = (size_t)KEEL_MIN((uint64_t)len, r->total - r->pos);
		memcpy(r->trailer + (r->pos - sess_end), buf, take);
		r->pos += take;
		buf += take;
		len -= take;
	}
	return r->err;
}

int node_snap_reader_finish(struct node_snap_reader *r)
{
	if (r->err)
		return r->err;
	if (!r->head_done || r->pos < r->total)
		return KEEL_ERR_TRUNCATED;
	KEEL_ASSERT(r->pos == r->total);
	if (keel_get_u32(r->trailer) != r->crc)
		return KEEL_ERR_CORRUPT;
	return 0;
}

const struct node_snap_head *
node_snap_reader_head(const struct node_snap_reader *r)
{
	return r->head_done ? &r->head : NULL;
}
