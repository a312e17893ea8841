/*
 * nodesnap.c -- the node snapshot payload codec (nodesnap.h,
 * docs/snapshots.md §1.3): a fixed head, then one section per piece of
 * replicated state (tag, version, length, bytes, CRC), the kv section last,
 * then the payload CRC. The writer emits it in any chunk size (the kv bytes
 * pulled from a source); the reader takes the same bytes in any split,
 * checks each part as soon as it is complete, hands the session and kv
 * bytes to sinks, and checks every CRC.
 */
#include <string.h>

#include "keel/kv.h"
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

static uint8_t *put_sect_hdr(uint8_t *p, uint32_t tag, uint32_t version,
			     uint64_t len)
{
	keel_put_u32(p, tag);
	keel_put_u32(p + 4, version);
	keel_put_u64(p + 8, len);
	return p + NODE_SNAP_SECT_HDR;
}

void node_snap_writer_init(struct node_snap_writer *w,
			   const struct node_snap_head *h,
			   node_snap_source_fn src, void *src_ctx,
			   const uint8_t *sess)
{
	KEEL_ASSERT(h->index >= 1);
	KEEL_ASSERT(h->term >= 1);
	KEEL_ASSERT(h->members.n_voters >= 1);
	KEEL_ASSERT(h->sess_len <= NODE_SNAP_SESS_MAX);
	KEEL_ASSERT(sess || !h->sess_len);
	memset(w, 0, sizeof(*w));
	uint8_t *b = w->pre;
	memcpy(b, NODE_SNAP_MAGIC, 8);
	keel_put_u32(b + 8, NODE_SNAP_VERSION);
	keel_put_u32(b + 12, 0);
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
	keel_put_u32(b + 176, NODE_SNAP_SECTIONS);
	keel_put_u32(b + 180, 0);
	/* dedup: window, record count, the records in slot order */
	uint8_t *p = put_sect_hdr(b + NODE_SNAP_FIXED, NODE_SNAP_TAG_DEDUP, 1,
				  NODE_SNAP_DEDUP_BYTES);
	keel_put_u32(p, NODE_DEDUP_WINDOW);
	keel_put_u32(p + 4, NODE_DEDUP_RECS);
	for (uint32_t i = 0; i < NODE_DEDUP_RECS; i++)
		put_dedup(p + 8 + NODE_DEDUP_REC_BYTES * i, &h->dedup[i]);
	keel_put_u32(p + NODE_SNAP_DEDUP_BYTES,
		     keel_crc32c(0, p, NODE_SNAP_DEDUP_BYTES));
	p += NODE_SNAP_DEDUP_BYTES + NODE_SNAP_SECT_CRC;
	/* streams: one table per dedup record, same slot order */
	p = put_sect_hdr(p, NODE_SNAP_TAG_STREAMS, 1, NODE_SNAP_STREAMS_BYTES);
	for (uint32_t i = 0; i < NODE_DEDUP_RECS; i++)
		put_streams(p + NODE_DEDUP_STREAM_BYTES * i, &h->dedup[i]);
	keel_put_u32(p + NODE_SNAP_STREAMS_BYTES,
		     keel_crc32c(0, p, NODE_SNAP_STREAMS_BYTES));
	p += NODE_SNAP_STREAMS_BYTES + NODE_SNAP_SECT_CRC;
	/* sessions: its header here, its bytes borrowed */
	p = put_sect_hdr(p, NODE_SNAP_TAG_SESSIONS, 1, h->sess_len);
	KEEL_ASSERT(p == w->pre + NODE_SNAP_SESS_OFF);
	keel_put_u32(w->mid, keel_crc32c(0, sess, (size_t)h->sess_len));
	/* clock: the newest leader stamp, then the kv section's header */
	p = put_sect_hdr(w->mid + NODE_SNAP_SECT_CRC, NODE_SNAP_TAG_CLOCK, 1,
			 NODE_SNAP_CLOCK_BYTES);
	keel_put_u64(p, h->stamp_ms);
	keel_put_u32(p + NODE_SNAP_CLOCK_BYTES,
		     keel_crc32c(0, p, NODE_SNAP_CLOCK_BYTES));
	p += NODE_SNAP_CLOCK_BYTES + NODE_SNAP_SECT_CRC;
	KEEL_ASSERT(p + NODE_SNAP_SECT_HDR == w->mid + sizeof(w->mid));
	put_sect_hdr(p, NODE_SNAP_TAG_KV,
		     KV_SNAP_VERSION, h->kv_len);
	w->sess = sess;
	w->sess_len = h->sess_len;
	w->kv_len = h->kv_len;
	w->kv_more = true;
	w->src = src;
	w->src_ctx = src_ctx;
}

/* Copies up to cap bytes of a fixed part [base, base + len) at w->pos. */
static size_t emit(struct node_snap_writer *w, uint8_t *buf, size_t cap,
		   const uint8_t *part, uint64_t base, uint64_t len)
{
	size_t take = (size_t)KEEL_MIN((uint64_t)cap, base + len - w->pos);
	memcpy(buf, part + (w->pos - base), take);
	return take;
}

bool node_snap_writer_next(struct node_snap_writer *w, uint8_t *buf,
			   size_t cap, size_t *n)
{
	KEEL_ASSERT(cap > 0);
	KEEL_ASSERT(w->pos <= w->total);
	const uint64_t sess_at = NODE_SNAP_SESS_OFF;
	const uint64_t mid_at = sess_at + w->sess_len;
	const uint64_t kv_at = mid_at + sizeof(w->mid);
	const uint64_t post_at = kv_at + w->kv_len;
	size_t k = 0;
	while (k < cap && w->pos < w->total) {
		size_t got;
		if (w->pos < sess_at) {
			got = emit(w, buf + k, cap - k, w->pre, 0, sess_at);
		} else if (w->pos < mid_at) {
			got = emit(w, buf + k, cap - k, w->sess, sess_at,
				   w->sess_len);
		} else if (w->pos < kv_at) {
			got = emit(w, buf + k, cap - k, w->mid, mid_at,
				   sizeof(w->mid));
		} else if (w->pos < post_at) {
			size_t room = (size_t)KEEL_MIN((uint64_t)(cap - k),
						       post_at - w->pos);
			got = 0;
			KEEL_ASSERT(w->kv_more);
			w->kv_more = w->src(w->src_ctx, buf + k, room, &got);
			KEEL_ASSERT(got <= room);
			/* The source must produce exactly kv_len bytes. */
			if (w->kv_more)
				KEEL_ASSERT(w->pos + got < post_at);
			else
				KEEL_ASSERT(w->pos + got == post_at);
			w->kv_crc = keel_crc32c(w->kv_crc, buf + k, got);
			if (got == 0 && w->kv_more)
				break; /* a source may yield nothing once */
		} else {
			if (w->pos == post_at) {
				keel_put_u32(w->post, w->kv_crc);
				keel_put_u32(w->post + NODE_SNAP_SECT_CRC,
					     keel_crc32c(w->crc, w->post,
							 NODE_SNAP_SECT_CRC));
			}
			got = emit(w, buf + k, cap - k, w->post, post_at,
				   sizeof(w->post));
		}
		/* the payload CRC covers everything before its own 4 bytes */
		uint64_t crc_end = w->total - 4;
		if (w->pos < crc_end) {
			size_t c = (size_t)KEEL_MIN((uint64_t)got,
						    crc_end - w->pos);
			w->crc = keel_crc32c(w->crc, buf + k, c);
		}
		w->crc_all = keel_crc32c(w->crc_all, buf + k, got);
		w->pos += got;
		k += got;
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

/* The fixed head is complete: every §1.3 rule on it. */
static int parse_fixed(struct node_snap_reader *r)
{
	const uint8_t *b = r->fixed;
	struct node_snap_head *h = &r->head;
	if (memcmp(b, NODE_SNAP_MAGIC, 8) != 0)
		return KEEL_ERR_MAGIC;
	if (keel_get_u32(b + 8) != NODE_SNAP_VERSION)
		return KEEL_ERR_VERSION;
	if (keel_get_u32(b + 12) != 0 || keel_get_u32(b + 180) != 0)
		return KEEL_ERR_MALFORMED;
	r->total = keel_get_u64(b + 16);
	/* The length checks first: nothing below is sized by them, but the
	 * caller's staging is. Each section's length is checked against
	 * what is left of P before it is used. */
	if (r->total < NODE_SNAP_OVERHEAD)
		return KEEL_ERR_MALFORMED;
	if (r->want.max_bytes && r->total > r->want.max_bytes)
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
	if ((r->want.index && h->index != r->want.index) ||
	    (r->want.term && h->term != r->want.term))
		return KEEL_ERR_INVAL;
	if (r->want.members && !same_members(r->want.members, &h->members))
		return KEEL_ERR_INVAL;
	r->n_sections = keel_get_u32(b + 176);
	if (r->n_sections != NODE_SNAP_SECTIONS)
		return KEEL_ERR_MALFORMED;
	return 0;
}

/* A section header is in: its tag, version and length against the rules
 * and against what is left of P. */
static int parse_sect_hdr(struct node_snap_reader *r, uint64_t at)
{
	uint32_t tag = keel_get_u32(r->shdr);
	uint32_t version = keel_get_u32(r->shdr + 4);
	uint64_t len = keel_get_u64(r->shdr + 8);
	if (tag != NODE_SNAP_TAG_DEDUP && tag != NODE_SNAP_TAG_STREAMS &&
	    tag != NODE_SNAP_TAG_SESSIONS && tag != NODE_SNAP_TAG_CLOCK &&
	    tag != NODE_SNAP_TAG_KV)
		return KEEL_ERR_VERSION; /* a newer writer's state */
	if (tag <= r->last_tag)
		return KEEL_ERR_MALFORMED; /* order, or a repeat */
	bool last = r->sect_i + 1 == r->n_sections;
	if ((tag == NODE_SNAP_TAG_KV) != last)
		return KEEL_ERR_MALFORMED; /* kv is last, and only last */
	/* at: the offset just past this header */
	if (r->total - at < NODE_SNAP_SECT_CRC + 4)
		return KEEL_ERR_MALFORMED;
	uint64_t left = r->total - at - NODE_SNAP_SECT_CRC - 4;
	if (len > left)
		return KEEL_ERR_MALFORMED;
	switch (tag) {
	case NODE_SNAP_TAG_DEDUP:
		if (version != 1 || len != NODE_SNAP_DEDUP_BYTES)
			return version != 1 ? KEEL_ERR_VERSION
					    : KEEL_ERR_MALFORMED;
		break;
	case NODE_SNAP_TAG_STREAMS:
		if (version != 1 || len != NODE_SNAP_STREAMS_BYTES)
			return version != 1 ? KEEL_ERR_VERSION
					    : KEEL_ERR_MALFORMED;
		break;
	case NODE_SNAP_TAG_CLOCK:
		if (version != 1 || len != NODE_SNAP_CLOCK_BYTES)
			return version != 1 ? KEEL_ERR_VERSION
					    : KEEL_ERR_MALFORMED;
		break;
	case NODE_SNAP_TAG_SESSIONS:
		if (version != 1)
			return KEEL_ERR_VERSION;
		if (len > NODE_SNAP_SESS_MAX)
			return KEEL_ERR_MALFORMED;
		r->head.sess_len = len;
		break;
	default: /* kv: whatever is left but the two CRCs */
		if (version != KV_SNAP_VERSION)
			return KEEL_ERR_VERSION;
		if (len != left || len < NODE_SNAP_KV_HEAD + 4)
			return KEEL_ERR_MALFORMED;
		r->head.kv_len = len;
		break;
	}
	r->last_tag = tag;
	r->tag = tag;
	r->sect_len = len;
	r->sect_pos = 0;
	r->sect_crc = 0;
	return 0;
}

/* A whole fixed-size section is in r->sbuf (CRC checked). */
static int parse_fixed_sect(struct node_snap_reader *r)
{
	struct node_snap_head *h = &r->head;
	const uint8_t *b = r->sbuf;
	if (r->tag == NODE_SNAP_TAG_CLOCK) {
		h->stamp_ms = keel_get_u64(b);
		return 0;
	}
	if (r->tag == NODE_SNAP_TAG_DEDUP) {
		if (keel_get_u32(b) != NODE_DEDUP_WINDOW ||
		    keel_get_u32(b + 4) != NODE_DEDUP_RECS)
			return KEEL_ERR_MALFORMED;
		for (uint32_t i = 0; i < NODE_DEDUP_RECS; i++)
			get_dedup(b + 8 + NODE_DEDUP_REC_BYTES * i,
				  &h->dedup[i]);
		return 0;
	}
	/* streams (after dedup: the records they belong to are known) */
	for (uint32_t i = 0; i < NODE_DEDUP_RECS; i++)
		get_streams(b + NODE_DEDUP_STREAM_BYTES * i, &h->dedup[i]);
	return node_snap_check_dedup(h->dedup) ? KEEL_ERR_MALFORMED : 0;
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

/* Section bytes [buf, buf + take): to the state they belong to. */
static int sect_bytes(struct node_snap_reader *r, const uint8_t *buf,
		      size_t take)
{
	if (r->tag == NODE_SNAP_TAG_DEDUP || r->tag == NODE_SNAP_TAG_STREAMS ||
	    r->tag == NODE_SNAP_TAG_CLOCK) {
		/* their lengths were checked equal to their fixed sizes */
		KEEL_ASSERT(r->sect_pos + take <= sizeof(r->sbuf));
		memcpy(r->sbuf + r->sect_pos, buf, take);
		return 0;
	}
	if (r->tag == NODE_SNAP_TAG_SESSIONS)
		return r->sess_sink ? r->sess_sink(r->sess_ctx, buf, take) : 0;
	if (r->sect_pos < NODE_SNAP_KV_HEAD) {
		size_t h = (size_t)KEEL_MIN((uint64_t)take,
					    NODE_SNAP_KV_HEAD - r->sect_pos);
		memcpy(r->kv_head + r->sect_pos, buf, h);
		if (r->sect_pos + h == NODE_SNAP_KV_HEAD) {
			int rv = check_kv_head(r);
			if (rv)
				return rv;
		}
	}
	return r->sink ? r->sink(r->sink_ctx, buf, take) : 0;
}

int node_snap_reader_feed(struct node_snap_reader *r, const uint8_t *buf,
			  size_t len)
{
	while (len > 0 && !r->err) {
		size_t take;
		if (r->pos < NODE_SNAP_FIXED) {
			take = (size_t)KEEL_MIN((uint64_t)len,
						NODE_SNAP_FIXED - r->pos);
			memcpy(r->fixed + r->pos, buf, take);
			if (r->pos + take == NODE_SNAP_FIXED &&
			    (r->err = parse_fixed(r)))
				break;
		} else if (r->pos >= r->total) {
			r->err = KEEL_ERR_MALFORMED; /* bytes past P */
			break;
		} else if (r->part == 0) { /* a section header */
			take = (size_t)KEEL_MIN((uint64_t)len,
						NODE_SNAP_SECT_HDR - r->part_pos);
			memcpy(r->shdr + r->part_pos, buf, take);
			r->part_pos += (uint32_t)take;
			if (r->part_pos == NODE_SNAP_SECT_HDR) {
				if ((r->err = parse_sect_hdr(r, r->pos + take)))
					break;
				r->part = r->sect_len ? 1 : 2;
				r->part_pos = 0;
			}
		} else if (r->part == 1) { /* its bytes */
			take = (size_t)KEEL_MIN((uint64_t)len,
						r->sect_len - r->sect_pos);
			if ((r->err = sect_bytes(r, buf, take)))
				break;
			r->sect_crc = keel_crc32c(r->sect_crc, buf, take);
			r->sect_pos += take;
			if (r->sect_pos == r->sect_len)
				r->part = 2;
		} else { /* its CRC, or (part 3) the payload's */
			take = (size_t)KEEL_MIN((uint64_t)len, 4u - r->part_pos);
			memcpy(r->crcbuf + r->part_pos, buf, take);
			r->part_pos += (uint32_t)take;
		}
		if (r->pos + take <= r->total - 4)
			r->crc = keel_crc32c(r->crc, buf, take);
		else if (r->pos < r->total - 4)
			r->crc = keel_crc32c(r->crc, buf,
					     (size_t)(r->total - 4 - r->pos));
		r->pos += take;
		buf += take;
		len -= take;
		if (r->part == 2 && r->part_pos == 4) {
			if (keel_get_u32(r->crcbuf) != r->sect_crc &&
			    !r->want.skip_crc) {
				r->err = KEEL_ERR_CORRUPT;
				break;
			}
			if ((r->tag == NODE_SNAP_TAG_DEDUP ||
			     r->tag == NODE_SNAP_TAG_STREAMS ||
			     r->tag == NODE_SNAP_TAG_CLOCK) &&
			    (r->err = parse_fixed_sect(r)))
				break;
			r->sect_i++;
			r->part = r->sect_i == r->n_sections ? 3 : 0;
			r->part_pos = 0;
			/* every section before kv is in: the head is whole */
			if (r->sect_i + 1 == r->n_sections)
				r->head_done = true;
		}
	}
	return r->err;
}

int node_snap_reader_finish(struct node_snap_reader *r)
{
	if (r->err)
		return r->err;
	if (r->pos < NODE_SNAP_FIXED || r->pos < r->total || r->part != 3 ||
	    r->part_pos != 4)
		return KEEL_ERR_TRUNCATED;
	KEEL_ASSERT(r->pos == r->total);
	if (keel_get_u32(r->crcbuf) != r->crc && !r->want.skip_crc)
		return KEEL_ERR_CORRUPT;
	return 0;
}

const struct node_snap_head *
node_snap_reader_head(const struct node_snap_reader *r)
{
	return r->head_done ? &r->head : NULL;
}
