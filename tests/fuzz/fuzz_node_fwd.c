/*
 * fuzz_node_fwd.c -- libFuzzer harness for the forwarding frame bodies and
 * the node's log entry header (src/node/fwd.h): bytes another replica sent
 * (or a log holds) that the node acts on.
 *
 * The first input byte picks the frame type (PEER_TYPE_FWD_* and a few
 * others); the rest is the body. Beyond "no crash, no out-of-bounds read"
 * it checks that the format is canonical: a body that decodes re-encodes
 * to the same bytes, with the WRITE command pointing inside the body. The
 * same bytes also go through node_entry_hdr_get, whose command must lie
 * inside them.
 */
#include <stdlib.h>
#include <string.h>

#include "keel/peer.h"
#include "node/fwd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
	if (!ok)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 4096)
		return 0;
	int type = PEER_TYPE_FWD_WRITE - 1 + data[0] % 7; /* 32..38 */
	size_t len = size - 1;
	uint8_t *body = malloc(len ? len : 1);
	uint8_t *again = malloc(len ? len : 1);
	check(body && again);
	memcpy(body, data + 1, len);
	struct node_fwd f;
	int rv = node_fwd_decode(type, body, len, &f);
	if (type < PEER_TYPE_FWD_WRITE || type > PEER_TYPE_FWD_READ_OK)
		check(rv == KEEL_ERR_TYPE);
	if (rv == 0) {
		check(node_fwd_size(&f) == len);
		if (type == PEER_TYPE_FWD_WRITE)
			check(f.cmd >= body && f.cmd + f.cmd_len == body + len);
		node_fwd_encode(&f, again);
		check(memcmp(again, body, len) == 0);
	}
	struct node_entry_hdr h;
	const uint8_t *cmd;
	size_t cmd_len;
	if (node_entry_hdr_get(body, len, &h, &cmd, &cmd_len) == 0) {
		size_t hl = body[0] == NODE_ENTRY_VERSION ? NODE_ENTRY_HEADER
							  : NODE_ENTRY_HEADER_V1;
		check(cmd_len + hl == len);
		check((h.origin == 0) == (h.seq == 0));
		check(h.origin != 0 || h.stream == 0);
		if (hl == NODE_ENTRY_HEADER) {
			node_entry_hdr_put(again, &h);
			check(memcmp(again, body, NODE_ENTRY_HEADER) == 0);
		}
	}
	free(body);
	free(again);
	return 0;
}
