/* client.h -- a small blocking RESP client for the keel CLI (keel kv, keel
 * status): connect with a timeout, send one command, read one reply with
 * the pure reply parser (resp.h). Process-level code: src/cli only. */
#ifndef KEEL_CLI_CLIENT_H
#define KEEL_CLI_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "keel/resp.h"

struct cli_conn {
	int fd;
	int timeout_ms;
	uint8_t *buf; /* received, not yet parsed */
	size_t len, cap;
};

/* Connects to "host:port". 0 or -1 with a message in err. */
int cli_connect(struct cli_conn *c, const char *addr, int timeout_ms,
		char *err, size_t err_len);
void cli_close(struct cli_conn *c);

/* Sends argv (NUL-terminated strings) and reads one reply into *out
 * (owned by the caller: resp_value_free(&keel_alloc_libc, *out)).
 * 0 or -1 with a message in err (I/O, timeout, malformed reply). */
int cli_call(struct cli_conn *c, int argc, const char *const *argv,
	     struct resp_value **out, char *err, size_t err_len);

/* Splits a comma-separated address list in place; returns the count. */
int cli_split_addrs(char *list, char **out, int max);

#endif
