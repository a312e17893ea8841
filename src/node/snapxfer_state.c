/*
 * snapxfer_state.c -- sender and receiver decisions of a snapshot transfer
 * (snapxfer_state.h, docs/snapshots.md §3.3-3.4).
 *
 * Go-back-N with cumulative acks: the receiver takes only the chunk at its
 * next_offset and answers every chunk with where it stands, so an ack
 * that does not advance while chunks past it were sent means one was lost
 * (or the receiver restarted): the sender goes back to it, once per
 * offset (a reordered or duplicated ack must not make it resend the window
 * over and over); anything else lost is covered by the retry timer.
 */
#include <string.h>

#include "node/snapxfer_state.h"

void snap_send_start(struct snap_send *s, raft_id peer, uint64_t xid,
		     struct snapxfer_id id, uint64_t total_len,
		     uint32_t snap_crc, uint64_t leader_term,
		     const struct raft_config_members *conf, uint64_t now_ns)
{
	KEEL_ASSERT(peer != 0);
	KEEL_ASSERT(total_len >= 1);
	memset(s, 0, sizeof(*s));
	s->peer = peer;
	s->xid = xid;
	s->id = id;
	s->total_len = total_len;
	s->snap_crc = snap_crc;
	s->leader_term = leader_term;
	s->conf = *conf;
	s->progress_ns = now_ns;
	s->resend_ns = now_ns;
}

bool snap_send_next_read(struct snap_send *s, uint32_t window, uint32_t step,
			 uint64_t *off, uint32_t *len)
{
	KEEL_ASSERT(s->acked <= s->sent);
	KEEL_ASSERT(s->sent <= s->total_len);
	if (!s->active || s->complete || s->reads_out >= window ||
	    s->sent >= s->total_len ||
	    s->sent >= s->acked + (uint64_t)window * step)
		return false;
	*off = s->sent;
	*len = (uint32_t)KEEL_MIN((uint64_t)step, s->total_len - s->sent);
	s->sent += *len;
	s->reads_out++;
	return true;
}

int snap_send_on_ack(struct snap_send *s, const struct snapxfer_ack *a,
		     uint64_t now_ns)
{
	if (!s->peer || a->id.index != s->id.index ||
	    a->id.term != s->id.term || a->total_len != s->total_len)
		return SNAP_SEND_NONE;
	switch (a->status) {
	case SNAPXFER_CONTINUE: {
		uint64_t n = a->next_offset;
		if (n > s->acked) {
			s->acked = n;
			if (s->sent < n)
				s->sent = n;
			s->complete = false;
			s->progress_ns = now_ns;
			return SNAP_SEND_PUMP;
		}
		/* No progress while more was sent: a chunk at n was lost,
		 * refused, or the receiver lost its staging. */
		if (n < s->sent && s->goback_at != n + 1) {
			s->acked = n;
			s->sent = n;
			s->complete = false;
			s->round++;
			s->goback_at = n + 1;
			return SNAP_SEND_PUMP;
		}
		return SNAP_SEND_NONE;
	}
	case SNAPXFER_COMPLETE:
		s->acked = s->sent = s->total_len;
		if (!s->complete)
			s->progress_ns = now_ns;
		s->complete = true;
		return SNAP_SEND_MSG;
	case SNAPXFER_DONE:
		return SNAP_SEND_OK;
	case SNAPXFER_STALE:
		/* Not needed: the receiver holds that point already (say, it
		 * restarted from it after a lost DONE), or will hold a newer
		 * one. Reporting a failure would make the core name the same
		 * base again and again, forever refused; ok only moves the
		 * core's next past the snapshot, and its probe there finds
		 * out where the receiver really is. */
		return SNAP_SEND_OK;
	default: /* BAD, BUSY */
		return SNAP_SEND_FAIL;
	}
}

int snap_send_tick(struct snap_send *s, uint64_t now_ns, uint64_t retry_ns,
		   uint64_t timeout_ns)
{
	if (!s->peer || !s->active)
		return SNAP_SEND_NONE;
	if (now_ns - s->progress_ns >= timeout_ns)
		return SNAP_SEND_FAIL;
	if (now_ns - s->progress_ns < retry_ns ||
	    now_ns - s->resend_ns < retry_ns)
		return SNAP_SEND_NONE;
	s->resend_ns = now_ns;
	if (s->complete)
		return SNAP_SEND_MSG;
	s->sent = s->acked;
	s->round++;
	s->goback_at = 0;
	return SNAP_SEND_PUMP;
}

bool snapxfer_id_newer(struct snapxfer_id a, struct snapxfer_id b)
{
	return a.index > b.index || (a.index == b.index && a.term > b.term);
}

int snap_recv_admit(const struct snapxfer_rx *rx, uint64_t staged_term,
		    const struct snapxfer_chunk *c, uint64_t our_term,
		    uint64_t applied, uint64_t max_bytes, bool locked)
{
	if (c->leader_term < our_term || c->id.index <= applied)
		return SNAP_RECV_STALE;
	if (max_bytes && c->total_len > max_bytes)
		return SNAP_RECV_BUSY;
	switch (snapxfer_rx_classify(rx, c)) {
	case SNAPXFER_RX_TAKE:
		return snapxfer_rx_full(rx) ? SNAP_RECV_SKIP : SNAP_RECV_TAKE;
	case SNAPXFER_RX_SKIP:
		return SNAP_RECV_SKIP;
	case SNAPXFER_RX_MISMATCH:
		return SNAP_RECV_MISMATCH;
	default:
		break;
	}
	if (rx->id.index != 0 && !snapxfer_id_newer(c->id, rx->id) &&
	    c->leader_term <= staged_term)
		return SNAP_RECV_STALE;
	if (locked)
		return SNAP_RECV_BUSY;
	return c->offset == 0 ? SNAP_RECV_START : SNAP_RECV_RESTART;
}
