/*
 * fwd.c -- forwarding frame bodies and node entry headers (fwd.h). Every
 * body has an exact length (WRITE: at least its fixed part); anything else
 * is malformed, so each byte string has at most one meaning.
 */
#include <string.h>

#include "keel/peer.h"
#include "node/fwd.h"

void node_entry_hdr_put(uint8_t *buf, const struct node_entry_hdr *h)
{
	buf[0] = NODE_ENTRY_VERSION;
	buf[1] = h->type;
	keel_put_u64(buf + 2, h->origin);
	keel_put_u64(buf + 10, h->boot);
	keel_put_u64(buf + 18, h->seq);
	keel_put_u64(buf + 26, h->stream);
}

int node_entry_hdr_get(const uint8_t *data, size_t len,
		       struct node_entry_hdr *h, const uint8_t **cmd,
		       size_t *cmd_len)
{
	size_t hl;
	if (len >= 1 && data[0] == NODE_ENTRY_VERSION)
		hl = NODE_ENTRY_HEADER;
	else if (len >= 1 && data[0] == NODE_ENTRY_VERSION_V1)
		hl = NODE_ENTRY_HEADER_V1;
	else
		return KEEL_ERR_MALFORMED;
	if (len < hl)
		return KEEL_ERR_MALFORMED;
	size_t o = hl == NODE_ENTRY_HEADER ? 2 : 1;
	h->type = hl == NODE_ENTRY_HEADER ? data[1] : NODE_ENTRY_KV;
	h->origin = keel_get_u64(data + o);
	h->boot = keel_get_u64(data + o + 8);
	h->seq = keel_get_u64(data + o + 16);
	h->stream = hl == NODE_ENTRY_HEADER ? keel_get_u64(data + 26) : 0;
	if (h->type == 0)
		return KEEL_ERR_MALFORMED;
	if ((h->origin == RAFT_NONE) != (h->seq == 0))
		return KEEL_ERR_MALFORMED;
	if (h->origin == RAFT_NONE && h->stream)
		return KEEL_ERR_MALFORMED;
	*cmd = data + hl;
	*cmd_len = len - hl;
	return 0;
}

size_t node_fwd_size(const struct node_fwd *f)
{
	switch (f->type) {
	case PEER_TYPE_FWD_WRITE:
		return NODE_FWD_WRITE_FIXED + f->cmd_len;
	case PEER_TYPE_FWD_ACK:
		return NODE_FWD_ACK_SIZE;
	case PEER_TYPE_FWD_NACK:
		return NODE_FWD_NACK_SIZE;
	case PEER_TYPE_FWD_READ:
		return NODE_FWD_READ_SIZE;
	case PEER_TYPE_FWD_READ_OK:
		return NODE_FWD_READ_OK_SIZE;
	default:
		KEEL_ASSERT(!"node_fwd_size: not a forwarding type");
		return 0;
	}
}

void node_fwd_encode(const struct node_fwd *f, uint8_t *buf)
{
	keel_put_u64(buf, f->boot);
	keel_put_u64(buf + 8, f->seq);
	switch (f->type) {
	case PEER_TYPE_FWD_WRITE:
		keel_put_u64(buf + 16, f->stream);
		if (f->cmd_len)
			memcpy(buf + 24, f->cmd, f->cmd_len);
		return;
	case PEER_TYPE_FWD_ACK:
		keel_put_u64(buf + 16, f->term);
		keel_put_u64(buf + 24, f->index);
		return;
	case PEER_TYPE_FWD_NACK:
		buf[16] = f->kind;
		buf[17] = f->reason;
		keel_put_u64(buf + 18, f->hint);
		return;
	case PEER_TYPE_FWD_READ:
		return;
	case PEER_TYPE_FWD_READ_OK:
		keel_put_u64(buf + 16, f->index);
		keel_put_u64(buf + 24, f->ms);
		return;
	default:
		KEEL_ASSERT(!"node_fwd_encode: not a forwarding type");
	}
}

int node_fwd_decode(int type, const uint8_t *body, size_t len,
		    struct node_fwd *f)
{
	memset(f, 0, sizeof(*f));
	f->type = type;
	size_t want;
	switch (type) {
	case PEER_TYPE_FWD_WRITE:
		want = len < NODE_FWD_WRITE_FIXED ? NODE_FWD_WRITE_FIXED : len;
		break;
	case PEER_TYPE_FWD_ACK:
		want = NODE_FWD_ACK_SIZE;
		break;
	case PEER_TYPE_FWD_NACK:
		want = NODE_FWD_NACK_SIZE;
		break;
	case PEER_TYPE_FWD_READ:
		want = NODE_FWD_READ_SIZE;
		break;
	case PEER_TYPE_FWD_READ_OK:
		want = NODE_FWD_READ_OK_SIZE;
		break;
	default:
		return KEEL_ERR_TYPE;
	}
	if (len != want)
		return KEEL_ERR_MALFORMED;
	f->boot = keel_get_u64(body);
	f->seq = keel_get_u64(body + 8);
	if (f->seq == 0)
		return KEEL_ERR_MALFORMED;
	switch (type) {
	case PEER_TYPE_FWD_WRITE:
		f->stream = keel_get_u64(body + 16);
		f->cmd = body + 24;
		f->cmd_len = len - 24;
		break;
	case PEER_TYPE_FWD_ACK:
		f->term = keel_get_u64(body + 16);
		f->index = keel_get_u64(body + 24);
		if (f->term == 0 || f->index == 0)
			return KEEL_ERR_MALFORMED;
		break;
	case PEER_TYPE_FWD_NACK:
		f->kind = body[16];
		f->reason = body[17];
		f->hint = keel_get_u64(body + 18);
		if (f->kind < NODE_FWD_KIND_WRITE ||
		    f->kind > NODE_FWD_KIND_READ ||
		    f->reason < NODE_FWD_NOT_LEADER ||
		    f->reason > NODE_FWD_REFUSED)
			return KEEL_ERR_MALFORMED;
		break;
	case PEER_TYPE_FWD_READ_OK:
		f->index = keel_get_u64(body + 16);
		f->ms = keel_get_u64(body + 24);
		break;
	default:
		break;
	}
	return 0;
}
