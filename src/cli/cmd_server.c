/*
 * cmd_server.c -- `keel server`: parses the flags (and --config FILE) into a
 * struct server_config, checks them, and runs the server (src/server/).
 * Exit codes: 0 after a clean shutdown, 1 on a start-up error, 2 on bad
 * usage.
 */
#include <stdio.h>

#include "cli/cli.h"
#include "keel/server.h"

int cmd_server(int argc, char **argv)
{
	struct server_config cfg;
	server_config_default(&cfg);
	char err[512];
	int rv = server_config_parse_args(&cfg, argc, argv, err, sizeof(err));
	if (rv == 1) {
		char usage[4096];
		server_config_usage(usage, sizeof(usage));
		fputs(usage, stdout);
		return 0;
	}
	if (rv == 0)
		rv = server_config_check(&cfg, err, sizeof(err));
	if (rv) {
		fprintf(stderr, "keel server: %s\n(keel server --help for the options)\n",
			err);
		return 2;
	}
	return server_run(&cfg);
}
