/*
 * util.c -- small helpers every `keel` subcommand shares: number flags
 * through the project's strict parser (keel_parse_u64: digits only, no
 * sign, no blanks, no overflow, in range) with one message that names the
 * flag, the value and the range; and the monotonic clock in seconds that
 * the speed figures use.
 */
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "cli/cli.h"
#include "keel/common.h"

bool cli_parse_u64(const char *cmd, const char *flag, const char *s,
		   uint64_t min, uint64_t max, uint64_t *out)
{
	if (keel_parse_u64(s, min, max, out))
		return true;
	fprintf(stderr,
		"%s: bad %s '%s': a whole number from %" PRIu64 " to %" PRIu64
		"\n",
		cmd, flag, s ? s : "", min, max);
	return false;
}

double cli_now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
