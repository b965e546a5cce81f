/* stats: counters live in a list of named entries that is never pruned
 * (forwards are few; a removed one keeps its totals, as Prometheus
 * counters should). The endpoint reads one request head, answers and
 * closes: HTTP/1.0, no keep-alive, nothing to parse beyond the first
 * line. */
#include "stats.h"

#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "container.h"
#include "shared.h"

#define STATS_NAME_MAX 64
#define STATS_REQ_MAX 2048
#define STATS_CONN_MAX 16
#define STATS_TIMEOUT 5.0
/* Fixed room, so the counters can live in memory shared by workers. */
#define STATS_MAX_FORWARDS 64
#define STATS_MAX_BACKENDS 16

/* Counters are updated with relaxed atomics: several worker processes
 * may add to them at once. */
struct stats_backend {
	char name[STATS_NAME_MAX + 8];
	uint64_t connect_ok;
	uint64_t connect_failed;
	uint64_t last_ok; /* sequence number of the last good connect */
	uint64_t last_failed; /* ... and of the last failed one */
};

struct stats_fwd {
	char name[STATS_NAME_MAX];
	uint64_t results[STATS_RESULT_COUNT];
	uint64_t bytes_up;
	uint64_t bytes_down;
	uint64_t spliced;
	uint64_t copied;
	int64_t active;
	unsigned nbackends;
	struct stats_backend backends[STATS_MAX_BACKENDS];
};

struct stats_area {
	int lock; /* taken only to add a forward or a backend */
	uint64_t seq; /* orders connect results, across workers too */
	unsigned nfwd;
	struct stats_fwd fwd[STATS_MAX_FORWARDS];
};

struct stats_conn {
	struct stats_conn *next;
	struct stats_conn **pprev;
	ev_io io;
	ev_timer timer;
	int fd;
	size_t len;
	size_t sent;
	char *out; /* response, once built */
	size_t outlen;
	char req[STATS_REQ_MAX];
};

static struct stats_area *stats_area;
static struct stats_fwd *const *stats_cur;
static size_t stats_ncur;
static struct ev_loop *stats_loop;
static ev_io stats_accept_io;
static ev_timer stats_resume_timer; /* accept again after EMFILE */
static int stats_fd = -1;
static struct stats_conn *stats_conns;
static unsigned stats_nconns;

static const char *const stats_result_names[STATS_RESULT_COUNT] = {
	"forwarded", "denied",	"limited", "backend_unavailable",
	"tls_failed", "timeout", "error",
};

#define STATS_ADD(field, v) __atomic_add_fetch(&(field), (v), __ATOMIC_RELAXED)
#define STATS_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

const char *stats_result_str(enum stats_result r)
{
	return r < STATS_RESULT_COUNT ? stats_result_names[r] : "?";
}

int stats_share(void)
{
	struct stats_area *a = shared_alloc(sizeof(*a));

	if (a == NULL)
		return -1;
	if (stats_area != NULL)
		*a = *stats_area; /* keep what was counted so far */
	stats_area = a;
	return 0;
}

static struct stats_area *stats_get_area(void)
{
	if (stats_area == NULL)
		stats_area = calloc(1, sizeof(*stats_area));
	return stats_area;
}

struct stats_fwd *stats_forward(const char *name)
{
	struct stats_area *a = stats_get_area();
	struct stats_fwd *f = NULL;
	unsigned i;

	if (a == NULL)
		return NULL;
	shared_lock(&a->lock);
	for (i = 0; i < a->nfwd; i++)
		if (strncmp(a->fwd[i].name, name, STATS_NAME_MAX - 1) == 0) {
			f = &a->fwd[i];
			break;
		}
	if (f == NULL && a->nfwd < STATS_MAX_FORWARDS) {
		f = &a->fwd[a->nfwd];
		snprintf(f->name, sizeof(f->name), "%s", name);
		/* Release: a reader that sees the count sees the name. */
		__atomic_store_n(&a->nfwd, a->nfwd + 1, __ATOMIC_RELEASE);
	}
	shared_unlock(&a->lock);
	return f;
}

void stats_session_open(struct stats_fwd *f)
{
	if (f != NULL)
		STATS_ADD(f->active, 1);
}

void stats_session_close(struct stats_fwd *f, enum stats_result r,
			 uint64_t bytes_up, uint64_t bytes_down, bool spliced,
			 bool copied)
{
	if (f == NULL)
		return;
	STATS_ADD(f->active, -1);
	if (r < STATS_RESULT_COUNT)
		STATS_ADD(f->results[r], 1);
	STATS_ADD(f->bytes_up, bytes_up);
	STATS_ADD(f->bytes_down, bytes_down);
	if (spliced)
		STATS_ADD(f->spliced, 1);
	else if (copied)
		STATS_ADD(f->copied, 1);
}

void stats_backend_result(struct stats_fwd *f, const char *backend, bool ok)
{
	struct stats_backend *b = NULL;
	unsigned i;

	if (f == NULL)
		return;
	shared_lock(&stats_area->lock);
	/* Compared as stored: a name too long for the entry was cut. */
	for (i = 0; i < f->nbackends; i++)
		if (strncmp(f->backends[i].name, backend,
			    sizeof(f->backends[i].name) - 1) == 0) {
			b = &f->backends[i];
			break;
		}
	if (b == NULL && f->nbackends < STATS_MAX_BACKENDS) {
		b = &f->backends[f->nbackends];
		snprintf(b->name, sizeof(b->name), "%s", backend);
		/* Release: a reader that sees the count sees the name. */
		__atomic_store_n(&f->nbackends, f->nbackends + 1,
				 __ATOMIC_RELEASE);
	}
	shared_unlock(&stats_area->lock);
	if (b == NULL)
		return;
	if (ok)
		STATS_ADD(b->connect_ok, 1);
	else
		STATS_ADD(b->connect_failed, 1);
	/* "Last" by sequence, not by clock: two results in one loop
	 * iteration still have an order. */
	__atomic_store_n(ok ? &b->last_ok : &b->last_failed,
			 __atomic_add_fetch(&stats_area->seq, 1, __ATOMIC_RELAXED),
			 __ATOMIC_RELAXED);
}

void stats_set_current(struct stats_fwd *const *fwd, size_t n)
{
	stats_cur = fwd;
	stats_ncur = n;
}

bool stats_forward_healthy(const struct stats_fwd *f)
{
	unsigned i, n;

	if (f == NULL)
		return true;
	n = __atomic_load_n(&f->nbackends, __ATOMIC_ACQUIRE);
	if (n == 0)
		return true; /* nothing tried yet */
	/* Healthy while some backend's latest result was good. */
	for (i = 0; i < n; i++) {
		uint64_t ok = __atomic_load_n(&f->backends[i].last_ok,
					      __ATOMIC_RELAXED);
		uint64_t failed = __atomic_load_n(&f->backends[i].last_failed,
						  __ATOMIC_RELAXED);

		if (ok > failed)
			return true;
	}
	return false;
}

/* ---- responses ---- */

/* Label values: names come from the config and may hold anything
 * printable; Prometheus wants \\ \" \n escaped. */
static void stats_label(FILE *o, const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\\' || *v == '"')
			fprintf(o, "\\%c", *v);
		else if (*v == '\n')
			fputs("\\n", o);
		else
			fputc(*v, o);
	}
}

/* One sample: metric{forward="f"[,key="value"]} v */
static void stats_sample(FILE *o, const char *metric, const char *fwd,
			 const char *key, const char *value, long long v)
{
	fprintf(o, "%s{forward=\"", metric);
	stats_label(o, fwd);
	if (key != NULL) {
		fprintf(o, "\",%s=\"", key);
		stats_label(o, value);
	}
	fprintf(o, "\"} %lld\n", v);
}

static void stats_metrics(FILE *o)
{
	const struct stats_area *a = stats_get_area();
	unsigned i, j, n = a != NULL ? __atomic_load_n(&a->nfwd, __ATOMIC_ACQUIRE) : 0;
	int r;

	fputs("# HELP smtpfwd_sessions_total Sessions ended, by result.\n"
	      "# TYPE smtpfwd_sessions_total counter\n", o);
	for (i = 0; i < n; i++)
		for (r = 0; r < STATS_RESULT_COUNT; r++)
			stats_sample(o, "smtpfwd_sessions_total", a->fwd[i].name,
				     "result", stats_result_names[r],
				     (long long)STATS_GET(a->fwd[i].results[r]));
	fputs("# HELP smtpfwd_sessions_active Sessions open now.\n"
	      "# TYPE smtpfwd_sessions_active gauge\n", o);
	for (i = 0; i < n; i++)
		stats_sample(o, "smtpfwd_sessions_active", a->fwd[i].name, NULL,
			     NULL, (long long)STATS_GET(a->fwd[i].active));
	fputs("# HELP smtpfwd_bytes_total Bytes relayed: up is client to backend.\n"
	      "# TYPE smtpfwd_bytes_total counter\n", o);
	for (i = 0; i < n; i++) {
		stats_sample(o, "smtpfwd_bytes_total", a->fwd[i].name, "direction",
			     "up", (long long)STATS_GET(a->fwd[i].bytes_up));
		stats_sample(o, "smtpfwd_bytes_total", a->fwd[i].name, "direction",
			     "down", (long long)STATS_GET(a->fwd[i].bytes_down));
	}
	fputs("# HELP smtpfwd_pump_sessions_total Sessions by how bytes moved.\n"
	      "# TYPE smtpfwd_pump_sessions_total counter\n", o);
	for (i = 0; i < n; i++) {
		stats_sample(o, "smtpfwd_pump_sessions_total", a->fwd[i].name,
			     "pump", "splice", (long long)STATS_GET(a->fwd[i].spliced));
		stats_sample(o, "smtpfwd_pump_sessions_total", a->fwd[i].name,
			     "pump", "copy", (long long)STATS_GET(a->fwd[i].copied));
	}
	fputs("# HELP smtpfwd_backend_connects_total Backend connect attempts, by outcome.\n"
	      "# TYPE smtpfwd_backend_connects_total counter\n", o);
	for (i = 0; i < n; i++) {
		const struct stats_fwd *f = &a->fwd[i];
		unsigned nb = __atomic_load_n(&f->nbackends, __ATOMIC_ACQUIRE);

		for (j = 0; j < nb; j++) {
			const struct stats_backend *b = &f->backends[j];

			/* Two labels: written out rather than generalised. */
			fprintf(o, "smtpfwd_backend_connects_total{forward=\"");
			stats_label(o, f->name);
			fprintf(o, "\",backend=\"");
			stats_label(o, b->name);
			fprintf(o, "\",result=\"ok\"} %llu\n",
				(unsigned long long)STATS_GET(b->connect_ok));
			fprintf(o, "smtpfwd_backend_connects_total{forward=\"");
			stats_label(o, f->name);
			fprintf(o, "\",backend=\"");
			stats_label(o, b->name);
			fprintf(o, "\",result=\"failed\"} %llu\n",
				(unsigned long long)STATS_GET(b->connect_failed));
		}
	}
}

static int stats_health(FILE *o)
{
	size_t i;
	int status = 200;

	for (i = 0; i < stats_ncur; i++) {
		bool ok = stats_forward_healthy(stats_cur[i]);

		if (!ok)
			status = 503;
		fprintf(o, "%s %s\n", stats_cur[i] != NULL ? stats_cur[i]->name : "?",
			ok ? "ok" : "failing");
	}
	return status;
}

char *stats_response(const char *req, size_t n, size_t *len)
{
	char *body = NULL, *out = NULL;
	size_t blen = 0, olen = 0;
	const char *reason = "OK", *eol;
	FILE *o = open_memstream(&body, &blen);
	int status = 200;
	size_t line;

	if (o == NULL)
		return NULL;
	eol = memchr(req, '\n', n);
	line = eol != NULL ? (size_t)(eol - req) : n;
	if (line > 0 && req[line - 1] == '\r')
		line--;
	if (line > 4 && memcmp(req, "GET ", 4) != 0) {
		status = 405;
	} else if ((line == 12 || (line > 12 && req[12] == ' ')) &&
		   memcmp(req, "GET /metrics", 12) == 0) {
		stats_metrics(o);
	} else if ((line == 11 || (line > 11 && req[11] == ' ')) &&
		   memcmp(req, "GET /health", 11) == 0) {
		status = stats_health(o);
	} else {
		status = 404;
	}
	if (status == 404)
		fputs("not found: try /metrics or /health\n", o);
	else if (status == 405)
		fputs("only GET\n", o);
	if (fclose(o) != 0) {
		free(body);
		return NULL;
	}
	switch (status) {
	case 404:
		reason = "Not Found";
		break;
	case 405:
		reason = "Method Not Allowed";
		break;
	case 503:
		reason = "Service Unavailable";
		break;
	}
	o = open_memstream(&out, &olen);
	if (o == NULL) {
		free(body);
		return NULL;
	}
	fprintf(o,
		"HTTP/1.0 %d %s\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
		"Content-Length: %zu\r\n%sConnection: close\r\n\r\n",
		status, reason, blen, status == 405 ? "Allow: GET\r\n" : "");
	fwrite(body, 1, blen, o);
	free(body);
	if (fclose(o) != 0) {
		free(out);
		return NULL;
	}
	*len = olen;
	return out;
}

/* ---- the endpoint ---- */

static void stats_conn_close(struct stats_conn *c)
{
	ev_io_stop(stats_loop, &c->io);
	ev_timer_stop(stats_loop, &c->timer);
	close(c->fd);
	*c->pprev = c->next;
	if (c->next != NULL)
		c->next->pprev = c->pprev;
	stats_nconns--;
	free(c->out);
	free(c);
}

static void stats_conn_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct stats_conn *c = container_of(w, struct stats_conn, io);
	ssize_t r;

	(void)revents;
	if (c->out == NULL) {
		r = recv(c->fd, c->req + c->len, sizeof(c->req) - c->len, 0);
		if (r == -1 && (errno == EAGAIN || errno == EINTR))
			return;
		if (r <= 0) {
			stats_conn_close(c);
			return;
		}
		c->len += (size_t)r;
		/* The request line is all we use; wait for the head's end
		 * (or a full buffer) so the client is done sending. */
		if (memmem(c->req, c->len, "\r\n\r\n", 4) == NULL &&
		    memmem(c->req, c->len, "\n\n", 2) == NULL &&
		    c->len < sizeof(c->req))
			return;
		c->out = stats_response(c->req, c->len, &c->outlen);
		if (c->out == NULL) {
			stats_conn_close(c);
			return;
		}
		ev_io_stop(loop, &c->io);
		ev_io_set(&c->io, c->fd, EV_WRITE);
		ev_io_start(loop, &c->io);
	}
	r = send(c->fd, c->out + c->sent, c->outlen - c->sent, MSG_NOSIGNAL);
	if (r == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (r > 0)
		c->sent += (size_t)r;
	if (r <= 0 || c->sent == c->outlen)
		stats_conn_close(c);
}

static void stats_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	stats_conn_close(container_of(w, struct stats_conn, timer));
}

static void stats_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	if (stats_fd != -1)
		ev_io_start(loop, &stats_accept_io);
}

static void stats_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	int fd;

	(void)w;
	(void)revents;
	for (;;) {
		struct stats_conn *c;

		fd = accept4(stats_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN) {
				/* EMFILE and friends: the scrape waits in the
				 * backlog; a watcher left armed would spin. */
				ev_io_stop(loop, &stats_accept_io);
				ev_timer_stop(loop, &stats_resume_timer);
				ev_timer_set(&stats_resume_timer, 0.25, 0);
				ev_timer_start(loop, &stats_resume_timer);
			}
			return;
		}
		/* A scrape is tiny; more than a few at once is abuse. */
		if (stats_nconns >= STATS_CONN_MAX ||
		    (c = calloc(1, sizeof(*c))) == NULL) {
			close(fd);
			continue;
		}
		c->fd = fd;
		ev_io_init(&c->io, stats_conn_cb, fd, EV_READ);
		ev_timer_init(&c->timer, stats_timeout_cb, STATS_TIMEOUT, 0);
		ev_io_start(loop, &c->io);
		ev_timer_start(loop, &c->timer);
		c->next = stats_conns;
		if (stats_conns != NULL)
			stats_conns->pprev = &c->next;
		stats_conns = c;
		c->pprev = &stats_conns;
		stats_nconns++;
	}
}

int stats_listen(struct ev_loop *loop, const union sockname *addr)
{
	int fd, one = 1, saved;

	fd = socket(addr->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    0);
	if (fd == -1)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    bind(fd, &addr->sa, addr_len(addr)) == -1 || listen(fd, 16) == -1) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	stats_close();
	stats_fd = fd;
	stats_loop = loop;
	ev_io_init(&stats_accept_io, stats_accept_cb, fd, EV_READ);
	ev_io_start(loop, &stats_accept_io);
	ev_timer_init(&stats_resume_timer, stats_resume_cb, 0.25, 0);
	return 0;
}

void stats_close(void)
{
	while (stats_conns != NULL)
		stats_conn_close(stats_conns);
	if (stats_fd != -1) {
		ev_io_stop(stats_loop, &stats_accept_io);
		ev_timer_stop(stats_loop, &stats_resume_timer);
		close(stats_fd);
		stats_fd = -1;
	}
}
