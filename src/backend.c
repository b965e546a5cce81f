/* backend: address bookkeeping for one configured backend. */
#include "backend.h"

#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "container.h"
#include "log.h"
#include "proxyproto.h"
#include "resolve.h"
#include "stats.h"

#define SMTP_REPLY_BUF 512

struct backend {
	const struct backend_cfg *cfg;
	struct ev_loop *loop;
	union sockname *addrs; /* malloc'ed, or &cfg->ep.sa for a literal */
	size_t n;
	const char *error; /* why n is 0 */
	struct resolve_req *pending;
	ev_tstamp last_lookup;
	/* health checks */
	double interval; /* 0: off */
	enum proxy_version pp;
	struct stats_fwd *stats;
	ev_timer htimer; /* next check, or the running check's deadline */
	ev_io hio;
	int hfd;
	bool checking;
	bool healthy;
	size_t hlen;
	char hbuf[SMTP_REPLY_BUF];
};

static void backend_set_addrs(struct backend *b, int err,
			      const union sockname *addrs, size_t n)
{
	union sockname *copy;

	if (err != 0) {
		/* Keep what we knew: a DNS hiccup should not empty the list. */
		if (b->n == 0)
			b->error = resolve_strerror(err);
		return;
	}
	copy = malloc(n * sizeof(*copy));
	if (copy == NULL)
		return;
	memcpy(copy, addrs, n * sizeof(*copy));
	free(b->addrs);
	b->addrs = copy;
	b->n = n;
	b->error = NULL;
}

struct backend *backend_new(struct ev_loop *loop,
			    const struct backend_cfg *cfg)
{
	struct backend *b = calloc(1, sizeof(*b));
	union sockname *addrs;
	size_t n;
	int err;

	if (b == NULL)
		return NULL;
	b->cfg = cfg;
	b->loop = loop;
	b->hfd = -1;
	b->healthy = true;
	if (cfg->ep.literal)
		return b;
	err = resolve_now(cfg->ep.host, cfg->ep.port, &addrs, &n);
	backend_set_addrs(b, err, addrs, n);
	free(addrs);
	b->last_lookup = ev_now(loop);
	return b;
}

void backend_free(struct backend *b)
{
	if (b == NULL)
		return;
	if (b->pending != NULL)
		resolve_cancel(b->pending);
	ev_timer_stop(b->loop, &b->htimer);
	ev_io_stop(b->loop, &b->hio);
	if (b->hfd != -1)
		close(b->hfd);
	free(b->addrs);
	free(b);
}

const char *backend_name(const struct backend *b)
{
	return b->cfg->text;
}

size_t backend_addrs(const struct backend *b, const union sockname **addrs)
{
	if (b->cfg->ep.literal) {
		*addrs = &b->cfg->ep.sa;
		return 1;
	}
	*addrs = b->addrs;
	return b->n;
}

const char *backend_error(const struct backend *b)
{
	return b->error != NULL ? b->error : "no address";
}

static void backend_resolved(void *arg, int err, const union sockname *addrs,
			     size_t n)
{
	struct backend *b = arg;

	b->pending = NULL;
	backend_set_addrs(b, err, addrs, n);
}

void backend_connect_failed(struct backend *b)
{
	if (b->cfg->ep.literal || b->pending != NULL)
		return;
	if (ev_now(b->loop) - b->last_lookup < BACKEND_RERESOLVE_SECS)
		return;
	b->last_lookup = ev_now(b->loop);
	b->pending = resolve_start(b->loop, b->cfg->ep.host, b->cfg->ep.port,
				   backend_resolved, b);
}

/* ---- health checks ---- */

bool backend_healthy(const struct backend *b)
{
	return b->healthy;
}

static void backend_health_done(struct backend *b, bool ok, const char *why)
{
	ev_io_stop(b->loop, &b->hio);
	if (b->hfd != -1) {
		close(b->hfd);
		b->hfd = -1;
	}
	b->checking = false;
	if (ok != b->healthy) {
		if (ok)
			log_msg(LOG_LVL_INFO, "health", "backend %s: healthy again",
				b->cfg->text);
		else
			log_msg(LOG_LVL_WARN, "health",
				"backend %s: check failed: %s; skipped in failover until it passes",
				b->cfg->text, why);
	}
	b->healthy = ok;
	stats_backend_result(b->stats, b->cfg->text, ok);
	ev_timer_stop(b->loop, &b->htimer);
	ev_timer_set(&b->htimer, b->interval, 0);
	ev_timer_start(b->loop, &b->htimer);
}

static void backend_health_io(struct ev_loop *loop, ev_io *w, int revents)
{
	struct backend *b = container_of(w, struct backend, hio);
	char why[160];
	ssize_t r;

	(void)revents;
	if (w->events & EV_WRITE) {
		/* Connected (or not): say hello the way sessions do. */
		int err = 0;
		socklen_t len = sizeof(err);
		char hdr[PP_V2_MAX];
		ssize_t n = 0;

		if (getsockopt(b->hfd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
			err = errno;
		if (err != 0) {
			snprintf(why, sizeof(why), "connect: %s", strerror(err));
			backend_health_done(b, false, why);
			return;
		}
		/* LOCAL/UNKNOWN: the mail server logs no bogus client. */
		if (b->pp == PROXY_V1)
			n = pp_encode_v1(hdr, sizeof(hdr), NULL, NULL);
		else if (b->pp == PROXY_V2)
			n = pp_encode_v2(hdr, sizeof(hdr), NULL, NULL, NULL);
		if (n > 0 && send(b->hfd, hdr, (size_t)n, MSG_NOSIGNAL) != n) {
			backend_health_done(b, false, "cannot send the PROXY header");
			return;
		}
		ev_io_stop(loop, &b->hio);
		ev_io_set(&b->hio, b->hfd, EV_READ);
		ev_io_start(loop, &b->hio);
		return;
	}
	r = recv(b->hfd, b->hbuf + b->hlen, sizeof(b->hbuf) - 1 - b->hlen, 0);
	if (r == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (r <= 0) {
		snprintf(why, sizeof(why), "%s before a greeting",
			 r == 0 ? "closed" : strerror(errno));
		backend_health_done(b, false, why);
		return;
	}
	b->hlen += (size_t)r;
	b->hbuf[b->hlen] = '\0';
	for (;;) {
		/* Find the final line of the greeting: "ddd " (not "ddd-"). */
		char *line = b->hbuf, *lf;

		while ((lf = strchr(line, '\n')) != NULL &&
		       !(lf - line >= 3 && (line[3] == ' ' || line[3] == '\r' ||
					     line[3] == '\n')))
			line = lf + 1;
		if (lf == NULL) {
			if (b->hlen == sizeof(b->hbuf) - 1)
				backend_health_done(b, false, "greeting too long");
			return;
		}
		if (strncmp(line, "220", 3) != 0) {
			snprintf(why, sizeof(why), "greeting \"%.*s\"",
				 (int)strcspn(line, "\r\n"), line);
			send(b->hfd, "QUIT\r\n", 6, MSG_NOSIGNAL);
			backend_health_done(b, false, why);
			return;
		}
		/* Polite: say goodbye, do not wait for the 221. */
		send(b->hfd, "QUIT\r\n", 6, MSG_NOSIGNAL);
		backend_health_done(b, true, NULL);
		return;
	}
}

static void backend_health_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct backend *b = container_of(w, struct backend, htimer);
	const union sockname *addrs;
	char why[160];
	double limit;
	int fd;

	(void)revents;
	if (b->checking) {
		backend_health_done(b, false, "timed out");
		return;
	}
	if (backend_addrs(b, &addrs) == 0) {
		snprintf(why, sizeof(why), "resolve: %s", backend_error(b));
		backend_connect_failed(b);
		backend_health_done(b, false, why);
		return;
	}
	fd = socket(addrs[0].sa.sa_family,
		    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		snprintf(why, sizeof(why), "socket: %s", strerror(errno));
		backend_health_done(b, false, why);
		return;
	}
	b->hfd = fd;
	b->hlen = 0;
	b->checking = true;
	if (connect(fd, &addrs[0].sa, addr_len(&addrs[0])) == -1 &&
	    errno != EINPROGRESS) {
		snprintf(why, sizeof(why), "connect: %s", strerror(errno));
		backend_health_done(b, false, why);
		return;
	}
	ev_io_init(&b->hio, backend_health_io, fd, EV_WRITE);
	ev_io_start(loop, &b->hio);
	limit = b->interval < BACKEND_HEALTH_TIMEOUT ? b->interval :
						       BACKEND_HEALTH_TIMEOUT;
	ev_timer_set(&b->htimer, limit, 0);
	ev_timer_start(loop, &b->htimer);
}

void backend_health_start(struct backend *b, double interval,
			  enum proxy_version pp, struct stats_fwd *stats)
{
	if (interval <= 0)
		return;
	b->interval = interval;
	b->pp = pp;
	b->stats = stats;
	ev_timer_init(&b->htimer, backend_health_timer, 0, 0);
	/* First check soon, so a dead backend is known before the first
	 * client pays for finding out. */
	ev_timer_set(&b->htimer, 0.01, 0);
	ev_timer_start(b->loop, &b->htimer);
}
