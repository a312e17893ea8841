/* cli.h -- the `keel` command's subcommands. Each lives in its own file
 * src/cli/cmd_<name>.c and is listed once in the table in main.c. */
#ifndef KEEL_CLI_H
#define KEEL_CLI_H

#include <stdbool.h>
#include <stdint.h>

/* Each returns the process exit code. argv[0] is the subcommand name. */
int cmd_bench(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_sim(int argc, char **argv);
int cmd_server(int argc, char **argv);
int cmd_kv(int argc, char **argv);
int cmd_status(int argc, char **argv);

/* util.c: parses the value s of a number flag strictly (keel_parse_u64,
 * min..max). False, with "CMD: bad FLAG 'S': a whole number from MIN to
 * MAX" on stderr, for anything else. */
bool cli_parse_u64(const char *cmd, const char *flag, const char *s,
		   uint64_t min, uint64_t max, uint64_t *out);

/* util.c: CLOCK_MONOTONIC in seconds (for speed figures, never inside a
 * simulation). */
double cli_now_s(void);

#endif
