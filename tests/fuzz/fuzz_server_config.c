/*
 * fuzz_server_config.c -- libFuzzer harness for `keel server`'s config file
 * parser (src/server/config.c): a file is input from outside, typed by
 * hand. Beyond "no crash, no out-of-bounds access" (ASan/UBSan) it checks:
 *   - every refusal comes with a non-empty message naming the line;
 *   - what parses and passes the final check is sane: an id in the
 *     cluster, 1..RAFT_MAX_VOTERS members with unique ids, NUL-terminated
 *     strings, heartbeat below the election timeout;
 *   - parsing is deterministic: the same text twice gives the same config.
 * Any violation aborts.
 */
#include <stdlib.h>
#include <string.h>

#include "keel/server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_sane(const struct server_config *c)
{
	if (c->n_members == 0 || c->n_members > RAFT_MAX_VOTERS)
		abort();
	bool self = false;
	for (uint32_t i = 0; i < c->n_members; i++) {
		if (c->members[i].id == 0)
			abort();
		if (!memchr(c->members[i].addr, 0, sizeof(c->members[i].addr)))
			abort();
		self |= c->members[i].id == c->id;
		for (uint32_t j = 0; j < i; j++)
			if (c->members[j].id == c->members[i].id)
				abort();
	}
	if (!self || c->heartbeat_ticks >= c->election_ticks)
		abort();
	if (!memchr(c->data_dir, 0, sizeof(c->data_dir)) || !c->data_dir[0])
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct server_config a, b;
	char ea[512], eb[512];
	server_config_default(&a);
	server_config_default(&b);
	ea[0] = eb[0] = 0;
	int ra = server_config_parse_text(&a, (const char *)data, size, "f",
					  ea, sizeof(ea));
	int rb = server_config_parse_text(&b, (const char *)data, size, "f",
					  eb, sizeof(eb));
	if (ra != rb || strcmp(ea, eb))
		abort();
	if (ra) {
		if (strncmp(ea, "f:", 2))
			abort(); /* a refusal names the file and line */
		return 0;
	}
	if (memcmp(&a, &b, sizeof(a)))
		abort();
	ra = server_config_check(&a, ea, sizeof(ea));
	if (ra) {
		if (!ea[0])
			abort();
		return 0;
	}
	check_sane(&a);
	return 0;
}
