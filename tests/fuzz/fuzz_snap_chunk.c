/*
 * fuzz_snap_chunk.c -- libFuzzer harness for the snapshot transfer frame
 * bodies (src/node/snapxfer.h): bytes another replica sent that the node
 * will stage to disk and account offsets by.
 *
 * The first input byte picks SNAP_CHUNK (even) or SNAP_ACK (odd); the rest
 * is the body. Beyond "no crash, no out-of-bounds read" it checks that a
 * body that decodes satisfies every rule the node relies on (the chunk lies
 * inside the snapshot, its data inside the body), re-encodes to the same
 * bytes, and that the receiver's classification of it against a fixed
 * staging never takes a chunk that is not at next_offset.
 */
#include <stdlib.h>
#include <string.h>

#include "node/snapxfer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
	if (!ok)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > SNAPXFER_CHUNK_FIXED + 65536)
		return 0;
	size_t len = size - 1;
	uint8_t *body = malloc(len ? len : 1);
	uint8_t *again = malloc(len ? len : 1);
	check(body && again);
	memcpy(body, data + 1, len);
	if (data[0] % 2 == 0) {
		struct snapxfer_chunk c;
		if (snapxfer_chunk_decode(body, len, &c) == 0) {
			check(snapxfer_chunk_check(&c) == 0);
			check(c.len >= 1 && c.len <= SNAPXFER_MAX_CHUNK);
			check(c.offset < c.total_len);
			check(c.offset + c.len <= c.total_len);
			check(c.data == body + SNAPXFER_CHUNK_FIXED);
			check(snapxfer_chunk_size(&c) == len);
			snapxfer_chunk_encode(&c, again);
			check(memcmp(again, body, len) == 0);
			/* A receiver staging (index, term) of this chunk with
			 * 4096 bytes in: only a chunk at 4096 is taken. */
			struct snapxfer_rx rx = {
				.id = c.id,
				.total_len = c.total_len,
				.snap_crc = c.snap_crc,
				.next_offset = c.total_len < 4096 ? c.total_len
								  : 4096,
			};
			int v = snapxfer_rx_classify(&rx, &c);
			check(v == (c.offset == rx.next_offset ? SNAPXFER_RX_TAKE
							       : SNAPXFER_RX_SKIP));
			if (v == SNAPXFER_RX_TAKE) {
				snapxfer_rx_advance(&rx, &c);
				check(rx.next_offset <= rx.total_len);
			}
		}
	} else {
		struct snapxfer_ack a;
		if (snapxfer_ack_decode(body, len, &a) == 0) {
			check(len == SNAPXFER_ACK_SIZE);
			check(snapxfer_ack_check(&a) == 0);
			check(a.next_offset <= a.total_len);
			snapxfer_ack_encode(&a, again);
			check(memcmp(again, body, len) == 0);
		}
	}
	free(body);
	free(again);
	return 0;
}
