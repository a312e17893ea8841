/* cli.h -- the `keel` command's subcommands. Each lives in its own file
 * src/cli/cmd_<name>.c and is listed once in the table in main.c. */
#ifndef KEEL_CLI_H
#define KEEL_CLI_H

/* Each returns the process exit code. argv[0] is the subcommand name. */
int cmd_bench(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_sim(int argc, char **argv);
int cmd_server(int argc, char **argv);
int cmd_kv(int argc, char **argv);
int cmd_status(int argc, char **argv);

#endif
