/* main.c -- the `keel` command: dispatches to a subcommand. The only place
 * with process-wide state is here and in the subcommands, never below. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

struct subcommand {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
};

static const struct subcommand subcommands[] = {
	{"bench", cmd_bench, "micro-benchmarks (keel bench raft|wal|snapshot)"},
	{"check", cmd_check, "check a history for linearizability"},
	{"sim", cmd_sim, "deterministic simulation"},
	{"server", cmd_server, "run one member of a cluster (RESP clients)"},
	{"kv", cmd_kv, "get, put, del, scan against a running cluster"},
	{"status", cmd_status, "role, term, commit/applied index of every member"},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: keel <command> [options]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]);
	     i++)
		fprintf(f, "  %-8s %s\n", subcommands[i].name,
			subcommands[i].help);
	fprintf(f, "\nkeel <command> --help for each command's options.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]);
	     i++)
		if (!strcmp(argv[1], subcommands[i].name))
			return subcommands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "keel: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
