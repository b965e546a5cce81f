/* checkrelay: a short, blocking SMTP client. It runs once from the
 * command line, so plain blocking I/O with poll() timeouts is the
 * simplest correct thing; nothing here touches the event loop. */
#include "checkrelay.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buffer.h"
#include "proxyproto.h"
#include "resolve.h"
#include "smtp.h"
#include "xclient.h"

#define CHECKRELAY_CLIENT "192.0.2.1"
#define CHECKRELAY_CLIENT_PORT 40025
#define CHECKRELAY_IO_SECS 10

struct checkrelay {
	int fd;
	double timeout;
	FILE *out;
	char in[4096];
	size_t inlen;
	char reply[XCLIENT_REPLY_MAX]; /* last reply, lines joined by '\n' */
	int code;
};

static int checkrelay_wait(struct checkrelay *c, short events)
{
	struct pollfd p = { .fd = c->fd, .events = events };
	int rc;

	do
		rc = poll(&p, 1, (int)(c->timeout * 1000));
	while (rc == -1 && errno == EINTR);
	if (rc == 0)
		errno = ETIMEDOUT;
	return rc > 0 ? 0 : -1;
}

static int checkrelay_send(struct checkrelay *c, const void *data, size_t n)
{
	const char *p = data;

	while (n > 0) {
		ssize_t w;

		if (checkrelay_wait(c, POLLOUT) == -1)
			return -1;
		w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w == -1 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (w == -1)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Read one whole reply into c->reply / c->code. */
static int checkrelay_reply(struct checkrelay *c)
{
	size_t rlen = 0;

	c->code = 0;
	c->reply[0] = '\0';
	for (;;) {
		char *lf = memchr(c->in, '\n', c->inlen);
		ssize_t r;

		if (lf != NULL) {
			size_t n = (size_t)(lf - c->in) + 1, body = n - 1;
			bool last;

			if (body > 0 && c->in[body - 1] == '\r')
				body--;
			if (body < 3) {
				errno = EPROTO;
				return -1;
			}
			last = body == 3 || c->in[3] != '-';
			if (rlen + body + 2 < sizeof(c->reply)) {
				if (rlen > 0)
					c->reply[rlen++] = '\n';
				memcpy(c->reply + rlen, c->in, body);
				rlen += body;
				c->reply[rlen] = '\0';
			}
			c->code = atoi(c->in);
			memmove(c->in, c->in + n, c->inlen - n);
			c->inlen -= n;
			if (last)
				return 0;
			continue;
		}
		if (c->inlen == sizeof(c->in)) {
			errno = EMSGSIZE;
			return -1;
		}
		if (checkrelay_wait(c, POLLIN) == -1)
			return -1;
		r = recv(c->fd, c->in + c->inlen, sizeof(c->in) - c->inlen, 0);
		if (r == -1 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (r <= 0) {
			if (r == 0)
				errno = ECONNRESET;
			return -1;
		}
		c->inlen += (size_t)r;
	}
}

/* Send a command and read its reply; says both on out. */
static int checkrelay_cmd(struct checkrelay *c, const char *cmd)
{
	fprintf(c->out, "  > %s\n", cmd);
	if (checkrelay_send(c, cmd, strlen(cmd)) == -1 ||
	    checkrelay_send(c, "\r\n", 2) == -1 || checkrelay_reply(c) == -1) {
		fprintf(c->out, "  ! %s\n", strerror(errno));
		return -1;
	}
	fprintf(c->out, "  < %s\n", c->reply);
	return 0;
}

static int checkrelay_connect(const struct forward_cfg *f, struct checkrelay *c,
			      union sockname *used)
{
	size_t i, j;

	for (i = 0; i < f->nbackend; i++) {
		const struct endpoint *ep = &f->backend[i].ep;
		union sockname *addrs = NULL, one;
		size_t n = 1;

		if (ep->literal) {
			one = ep->sa;
			addrs = &one;
		} else if (resolve_now(ep->host, ep->port, &addrs, &n) != 0) {
			fprintf(c->out, "backend %s: cannot resolve\n",
				f->backend[i].text);
			continue;
		}
		for (j = 0; j < n; j++) {
			int fd = socket(addrs[j].sa.sa_family,
					SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			int err = 0;
			socklen_t len = sizeof(err);

			if (fd == -1)
				continue;
			c->fd = fd;
			c->timeout = f->connect_timeout;
			if ((connect(fd, &addrs[j].sa, addr_len(&addrs[j])) == 0 ||
			     (errno == EINPROGRESS &&
			      checkrelay_wait(c, POLLOUT) == 0 &&
			      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 &&
			      err == 0))) {
				*used = addrs[j];
				if (addrs != &one)
					free(addrs);
				c->timeout = CHECKRELAY_IO_SECS;
				return 0;
			}
			fprintf(c->out, "backend %s: connect failed: %s\n",
				f->backend[i].text,
				strerror(err != 0 ? err : errno));
			close(fd);
			c->fd = -1;
		}
		if (addrs != &one)
			free(addrs);
	}
	return -1;
}

/* Present the outside client to the backend; leaves its greeting (the
 * one a client would see) in c->reply. */
static int checkrelay_identity(const struct forward_cfg *f,
			       struct checkrelay *c,
			       const union sockname *client,
			       const union sockname *local)
{
	char hdr[PP_V2_MAX];
	ssize_t n = 0;
	long len;

	if (f->identity == IDENT_PROXY_V1)
		n = pp_encode_v1(hdr, sizeof(hdr), client, local);
	else if (f->identity == IDENT_PROXY_V2)
		n = pp_encode_v2(hdr, sizeof(hdr), client, local, NULL);
	if (n < 0 || (n > 0 && checkrelay_send(c, hdr, (size_t)n) == -1))
		return -1;
	if (checkrelay_reply(c) == -1)
		return -1;
	fprintf(c->out, "  < %s\n", c->reply);
	if (c->code != 220 || f->identity != IDENT_XCLIENT)
		return 0;

	/* XCLIENT: the same exchange a session makes. */
	if (checkrelay_cmd(c, "EHLO smtpfwd-check-relay") == -1)
		return -1;
	if (strstr(c->reply, "XCLIENT") == NULL) {
		fprintf(c->out, "the backend does not offer XCLIENT to us\n");
		errno = EPERM;
		return -1;
	}
	len = xclient_format(hdr, sizeof(hdr),
			     XCLIENT_ADDR | XCLIENT_PORT | XCLIENT_NAME, client,
			     local);
	if (len < 2)
		return -1;
	hdr[len - 2] = '\0'; /* checkrelay_cmd adds CRLF */
	if (checkrelay_cmd(c, hdr) == -1)
		return -1;
	if (c->code != 220) {
		errno = EPERM;
		return -1;
	}
	return 0;
}

enum checkrelay_result checkrelay_run(const struct config *cfg,
				      const char *name, FILE *out)
{
	const struct forward_cfg *f = config_find_forward(cfg, name);
	struct checkrelay c = { .fd = -1, .out = out };
	union sockname client, backend;
	enum checkrelay_result result = CHECKRELAY_FAILED;
	char buf[ADDR_STRLEN];

	if (f == NULL) {
		fprintf(out, "check-relay: no [forward %s] in the configuration\n",
			name);
		return CHECKRELAY_FAILED;
	}
	addr_parse_ip(CHECKRELAY_CLIENT, &client);
	addr_set_port(&client, CHECKRELAY_CLIENT_PORT);
	fprintf(out, "check-relay: forward %s, identity %s, pretending to be %s\n",
		name, config_identity_str(f->identity), CHECKRELAY_CLIENT);
	if (f->identity == IDENT_NONE)
		fprintf(out, "note: client_identity = none: the backend sees smtpfwd's own "
			     "address, exactly as it will for every real client\n");
	if (checkrelay_connect(f, &c, &backend) == -1) {
		fprintf(out, "check-relay: no backend of forward %s connects: cannot test\n",
			name);
		return CHECKRELAY_FAILED;
	}
	fprintf(out, "connected to %s\n", addr_format(&backend, buf, sizeof(buf)));
	if (checkrelay_identity(f, &c, &client, &f->listen[0].sa) == -1 ||
	    c.code != 220) {
		fprintf(out, "check-relay: the backend did not accept the session%s%s\n",
			c.reply[0] != '\0' ? ": " : "", c.reply);
		goto done;
	}
	if (checkrelay_cmd(&c, "EHLO check-relay.example.org") == -1 ||
	    c.code != 250)
		goto done;
	fprintf(out, "the backend greets us as: %.*s\n",
		(int)strcspn(c.reply, "\n"), c.reply);
	if (checkrelay_cmd(&c, "MAIL FROM:<check@example.org>") == -1)
		goto done;
	if (c.code / 100 != 2) {
		fprintf(out, "check-relay: MAIL FROM refused; cannot tell about relaying\n");
		goto done;
	}
	if (checkrelay_cmd(&c, "RCPT TO:<check@example.net>") == -1)
		goto done;
	if (c.code / 100 == 2) {
		fprintf(out, "WARNING: OPEN RELAY: the backend accepted mail for example.net "
			     "from an outside client (%s). Anyone can send mail through it. "
			     "Check the identity method (client_identity) and the backend's "
			     "relay restrictions (Postfix: mynetworks, smtpd_relay_restrictions).\n",
			CHECKRELAY_CLIENT);
		result = CHECKRELAY_OPEN;
	} else if (c.code / 100 == 5) {
		fprintf(out, "ok: relaying refused (%d): not an open relay\n", c.code);
		result = CHECKRELAY_CLOSED;
	} else {
		fprintf(out, "ok: relaying deferred (%d), not accepted; check why the backend "
			     "answers with a temporary error\n", c.code);
		result = CHECKRELAY_CLOSED;
	}
	checkrelay_cmd(&c, "RSET");
	checkrelay_cmd(&c, "QUIT");
done:
	if (c.fd != -1)
		close(c.fd);
	return result;
}
