/*
 * client.c -- the CLI's blocking RESP client (client.h). One socket, poll()
 * for timeouts, requests encoded with resp_write_command and replies parsed
 * with resp_reply_parse; every length capped by the parser's limits.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli/client.h"
#include "keel/posix_env.h"

#define CLI_MAX_REPLY ((size_t)512 << 20)

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int cli_connect(struct cli_conn *c, const char *addr, int timeout_ms,
		char *err, size_t err_len)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->timeout_ms = timeout_ms;
	struct sockaddr_storage ss;
	if (posix_env_parse_addr(addr, &ss)) {
		snprintf(err, err_len, "bad address '%s' (want HOST:PORT)", addr);
		return -1;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, err_len, "socket: %s", strerror(errno));
		return -1;
	}
	socklen_t sl = ss.ss_family == AF_INET ? sizeof(struct sockaddr_in)
					       : sizeof(struct sockaddr_in6);
	int rv = connect(fd, (struct sockaddr *)&ss, sl);
	if (rv < 0 && errno == EINPROGRESS) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		rv = poll(&p, 1, timeout_ms);
		if (rv == 0) {
			snprintf(err, err_len, "connect to %s: timed out", addr);
			close(fd);
			return -1;
		}
		int soerr = 0;
		socklen_t l = sizeof(soerr);
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &l);
		if (soerr) {
			errno = soerr;
			rv = -1;
		} else {
			rv = 0;
		}
	}
	if (rv < 0) {
		snprintf(err, err_len, "connect to %s: %s", addr, strerror(errno));
		close(fd);
		return -1;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fd = fd;
	return 0;
}

void cli_close(struct cli_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->buf);
	c->buf = NULL;
	c->len = c->cap = 0;
}

static int send_all(struct cli_conn *c, const uint8_t *p, size_t n,
		    int64_t deadline, char *err, size_t err_len)
{
	while (n) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno != EAGAIN && errno != EINTR) {
			snprintf(err, err_len, "send: %s", strerror(errno));
			return -1;
		}
		int64_t left = deadline - now_ms();
		struct pollfd pf = {.fd = c->fd, .events = POLLOUT};
		if (left <= 0 || poll(&pf, 1, (int)left) == 0) {
			snprintf(err, err_len, "send: timed out");
			return -1;
		}
	}
	return 0;
}

int cli_call(struct cli_conn *c, int argc, const char *const *argv,
	     struct resp_value **out, char *err, size_t err_len)
{
	int64_t deadline = now_ms() + c->timeout_ms;
	struct resp_buf b;
	resp_buf_init(&b, &keel_alloc_libc, CLI_MAX_REPLY, 2);
	const uint8_t *av[64];
	size_t lens[64];
	if (argc > 64) {
		snprintf(err, err_len, "too many arguments");
		resp_buf_close(&b);
		return -1;
	}
	for (int i = 0; i < argc; i++) {
		av[i] = (const uint8_t *)argv[i];
		lens[i] = strlen(argv[i]);
	}
	resp_write_command(&b, (size_t)argc, av, lens);
	int rv = b.failed ? -1 : send_all(c, b.data, b.len, deadline, err, err_len);
	resp_buf_close(&b);
	if (rv)
		return -1;
	for (;;) {
		if (c->len) {
			size_t used = 0;
			const char *msg = NULL;
			int pr = resp_reply_parse(NULL, &keel_alloc_libc, c->buf,
						  c->len, &used, out, &msg);
			if (pr == RESP_OK) {
				memmove(c->buf, c->buf + used, c->len - used);
				c->len -= used;
				return 0;
			}
			if (pr != RESP_NEED_MORE) {
				snprintf(err, err_len, "malformed reply: %s",
					 msg ? msg : "out of memory");
				return -1;
			}
		}
		if (c->cap - c->len < 65536) {
			size_t cap = c->cap ? c->cap * 2 : 65536;
			if (cap > CLI_MAX_REPLY) {
				snprintf(err, err_len, "reply larger than %zu bytes",
					 CLI_MAX_REPLY);
				return -1;
			}
			uint8_t *nb = realloc(c->buf, cap);
			if (!nb) {
				snprintf(err, err_len, "out of memory");
				return -1;
			}
			c->buf = nb;
			c->cap = cap;
		}
		ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
		if (r > 0) {
			c->len += (size_t)r;
			continue;
		}
		if (r == 0) {
			snprintf(err, err_len, "connection closed by the server");
			return -1;
		}
		if (errno != EAGAIN && errno != EINTR) {
			snprintf(err, err_len, "recv: %s", strerror(errno));
			return -1;
		}
		int64_t left = deadline - now_ms();
		struct pollfd pf = {.fd = c->fd, .events = POLLIN};
		if (left <= 0 || poll(&pf, 1, (int)left) == 0) {
			snprintf(err, err_len, "no reply within %d ms", c->timeout_ms);
			return -1;
		}
	}
}

int cli_split_addrs(char *list, char **out, int max)
{
	int n = 0;
	for (char *tok = strtok(list, ","); tok && n < max; tok = strtok(NULL, ","))
		out[n++] = tok;
	return n;
}
