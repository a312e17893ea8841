/*
 * fuzz_peer_frame.c -- libFuzzer harness for the peer frame decoder, the
 * first code that reads bytes another machine sent.
 *
 * Arbitrary bytes go through peer_frame_peek and peer_decode_msg (which
 * also takes SNAPSHOT frames and their membership) with a small
 * frame limit (so the fuzzer reaches the limit checks). Beyond "no crash,
 * no out-of-bounds read" (ASan/UBSan) it checks the properties the
 * protocol document promises:
 *   - peek and decode agree on the frame length and on early rejections;
 *   - decoded entry data lies inside the frame (zero copy, no overread);
 *   - a decoded SNAPSHOT has a membership the core could hold, no entries,
 *     and the plain peer_decode refuses it;
 *   - the format is canonical: re-encoding a decoded message reproduces
 *     the frame byte for byte, so no two encodings mean the same thing.
 * Any violation aborts. Each input is tried twice: as given, and with its
 * CRC re-sealed, so the body checks get fuzzed too.
 *
 * The input is copied into a buffer of exactly its size so ASan catches a
 * read one byte past the end.
 */
#include "keel/peer.h"

#include <stdlib.h>
#include <string.h>

#define FUZZ_CLUSTER 0x1122334455667788ull
#define FUZZ_MAX_FRAME 4096u
#define FUZZ_MAX_ENTRIES 64u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
	if (!ok)
		abort();
}

/* One decode of buf[0..size) with every property check. */
static void decode_and_check(const uint8_t *buf, size_t size)
{
	struct peer_limits lim;
	peer_limits_default(&lim, FUZZ_CLUSTER);
	lim.max_frame_bytes = FUZZ_MAX_FRAME;

	size_t frame_len = 0;
	int pk = peer_frame_peek(buf, size, &lim, &frame_len);
	if (pk == 0)
		check(frame_len >= PEER_MIN_FRAME_SIZE &&
		      frame_len <= FUZZ_MAX_FRAME);

	struct peer_frame_info info;
	struct raft_msg m;
	static struct raft_entry entries[FUZZ_MAX_ENTRIES];
	struct raft_config_members conf;
	int rc = peer_decode_msg(buf, size, &lim, &info, &m, entries,
				 FUZZ_MAX_ENTRIES, &conf);

	/* decode starts with peek's checks: same early verdict. */
	if (pk != 0)
		check(rc == pk);
	else
		check(info.frame_len == frame_len);
	if (rc != 0)
		return;

	check(frame_len <= size);
	check(m.type > RAFT_MSG_NONE && m.type < RAFT_MSG_TYPE_COUNT);
	check(m.from == info.sender && m.from != RAFT_NONE);
	check(info.cluster_id == FUZZ_CLUSTER);
	check(m.n_entries <= FUZZ_MAX_ENTRIES);
	check(m.n_entries == 0 || m.entries == entries);
	for (uint32_t i = 0; i < m.n_entries; i++) {
		const struct raft_entry *e = &m.entries[i];
		check(e->data >= buf + PEER_HEADER_SIZE);
		check(e->data + e->len <= buf + frame_len - PEER_TRAILER_SIZE);
	}
	if (m.type == RAFT_MSG_SNAPSHOT) {
		check(m.conf == &conf && m.n_entries == 0);
		check(conf.n_voters >= 1 &&
		      conf.n_voters + conf.n_learners <= RAFT_MAX_VOTERS);
		struct raft_msg m2;
		check(peer_decode(buf, size, &lim, NULL, &m2, entries,
				  FUZZ_MAX_ENTRIES) == KEEL_ERR_TYPE);
	} else {
		check(m.conf == NULL);
	}

	/* Canonical: the one encoding of m is the input frame. */
	check(peer_frame_size(&m) == frame_len);
	uint8_t *out = malloc(frame_len);
	check(out != NULL);
	size_t written = 0;
	check(peer_encode(&m, FUZZ_CLUSTER, out, frame_len, &written) == 0);
	check(written == frame_len);
	check(memcmp(out, buf, frame_len) == 0);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = malloc(size ? size : 1);
	if (buf == NULL)
		return 0;
	if (size)
		memcpy(buf, data, size);

	/* Pass 1: the bytes as they are. */
	decode_and_check(buf, size);

	/* Pass 2: the same bytes with the CRC re-sealed. A random mutation
	 * almost never keeps the CRC right, so without this the fuzzer would
	 * spend its time on KEEL_ERR_CORRUPT and rarely reach the checks that
	 * matter against a peer that computes valid CRCs over nonsense. */
	struct peer_limits lim;
	peer_limits_default(&lim, FUZZ_CLUSTER);
	lim.max_frame_bytes = FUZZ_MAX_FRAME;
	size_t frame_len = 0;
	if (peer_frame_peek(buf, size, &lim, &frame_len) == 0 &&
	    frame_len <= size) {
		size_t covered = frame_len - PEER_TRAILER_SIZE;
		keel_put_u32(buf + covered, keel_crc32c(0, buf, covered));
		decode_and_check(buf, size);
	}
	free(buf);
	return 0;
}
