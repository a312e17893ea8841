/*
 * args.c -- number flags of the `keel` subcommands: the project's strict
 * parser (keel_parse_u64: digits only, no sign, no blanks, no overflow, in
 * range) plus one message that names the flag, the value and the range.
 */
#include <inttypes.h>
#include <stdio.h>

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
