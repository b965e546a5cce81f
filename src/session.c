/* session: one client connection. States:
 *
 *   ACCEPTED   just taken from the listener (admitted or not)
 *   HANDSHAKE  TLS with the client: tls = implicit before anything else,
 *              tls = starttls after the client's STARTTLS
 *   CONNECT    trying backends in order (healthy ones first), one attempt
 *              at a time, each bounded by connect_timeout
 *   XCLIENT    client_identity = xclient: EHLO + XCLIENT to the backend
 *              before the client hears anything
 *   STARTTLS   tls = starttls: the plaintext dialogue, one command at a
 *              time, through the starttls state machine
 *   RELAY      two flows (up: client -> backend, down: backend -> client);
 *              while the SMTP phase lasts both flows copy through user
 *              space with an observer (greeting, first command); then
 *              they splice (plaintext both sides) or copy (TLS)
 *   REPLY      sending the proxy's own reply (554/421), then shutdown(WR)
 *   LINGER     reply sent: reading the client to EOF so that closing does
 *              not reset the connection under the reply
 *
 * Every path ends in sess_close(), which logs the one summary line. */
#include "session.h"

#include <errno.h>
#include <ev.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "acl.h"
#include "backend.h"
#include "container.h"
#include "log.h"
#include "pipepool.h"
#include "proxyproto.h"
#include "pump.h"
#include "shared.h"
#include "smtp.h"
#include "starttls.h"
#include "stats.h"
#include "tls.h"
#include "xclient.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

/* The SMTP phase ends this long after the relay started even if the
 * greeting or the first command never completed: inspection must never
 * hold a session back. */
#define SESS_SMTP_GRACE 10.0
/* A client gets this long to take our own reply before we hang up. */
#define SESS_REPLY_SECS 5.0
/* Bytes of client input we are willing to read and drop while lingering. */
#define SESS_LINGER_BYTES (64 * 1024)
/* A TLS handshake must finish within this (or idle_timeout if less). */
#define SESS_HANDSHAKE_SECS 30.0
/* Client bytes held while the STARTTLS dialogue waits for a reply. */
#define SESS_STARTTLS_IN (4 * SMTP_LINE_MAX)
/* Text kept for the log. */
#define SESS_HELO_LOG_MAX 128
#define SESS_JUNK_LOG_MAX 64

static const char sess_reply_denied[] =
	"554 5.7.1 Access denied: connections from your address are not accepted\r\n";
static const char sess_reply_limit_ip[] =
	"421 4.7.0 Too many connections from your address, try again later\r\n";
static const char sess_reply_limit_total[] =
	"421 4.7.0 Too many connections, try again later\r\n";
static const char sess_reply_early[] =
	"554 5.5.1 Protocol error: you talked before the greeting\r\n";
static const char sess_reply_identity[] =
	"421 4.7.0 Cannot pass on your identity to the mail server, try again later\r\n";
static const char sess_reply_busy[] =
	"421 4.3.2 System busy, try again later\r\n";
static const char sess_reply_unavailable[] =
	"421 4.4.1 Mail server temporarily unavailable, try again later\r\n";

enum sess_state {
	SESS_ACCEPTED, /* just taken from the listener */
	SESS_HANDSHAKE, /* TLS handshake with the client */
	SESS_CONNECT,
	SESS_XCLIENT, /* telling the backend who the client is */
	SESS_STARTTLS, /* the plaintext dialogue of tls=starttls */
	SESS_RELAY,
	SESS_REPLY,
	SESS_LINGER,
};

/* What the SMTP phase watches; freed when the phase ends. */
struct sess_smtp {
	struct smtp_reply greeting;
	struct smtp_reply answer; /* the reply after the greeting */
	struct smtp_cmd cmd;
};

struct sess {
	struct sess *next;
	struct sess **pprev;
	struct ev_loop *loop;
	struct sess_forward *fwd;
	enum sess_state state;
	int cfd;
	int bfd;
	ev_io cio;
	ev_io bio;
	ev_timer timer;
	ev_tstamp started;
	ev_tstamp last_active;
	ev_tstamp deadline; /* connect attempt, or reply, ends here */
	union sockname client;
	union sockname local;
	union sockname baddr; /* backend being tried or connected */
	size_t bi; /* backend index being tried */
	size_t ai; /* next address index of that backend */
	uint8_t pass; /* 0: healthy backends; 1: then those health checks skipped */
	bool skipped; /* pass 0 skipped a backend */
	struct flow up; /* client -> backend */
	struct flow down; /* backend -> client */
	unsigned up_want;
	unsigned down_want;
	struct sess_smtp *smtp; /* taken at the first byte of the SMTP phase */
	bool smtp_on; /* the SMTP phase lasts */
	SSL *ssl; /* client side, once TLS is started */
	struct starttls *st; /* during the STARTTLS dialogue */
	struct xclient *xc; /* during the XCLIENT exchange */
	struct buffer cin; /* client bytes the dialogue has not taken yet */
	char *greeting; /* for the log, once the phase is over */
	char *helo;
	char *backend_error; /* first line of a 4xx/5xx answer */
	uint16_t greeting_code;
	bool counted;
	bool connected;
	bool early_talker;
	bool up_done;
	bool down_done;
	bool tls_up; /* handshake finished */
	bool hold_up; /* reject_early_talkers: client unread until greeting */
	size_t lingered; /* client bytes dropped while lingering */
	const char *reply; /* our own reply, if any */
	enum stats_result reply_result; /* logged once the reply is out */
	const char *first_close; /* "client closed" / "backend closed" */
	char *why; /* last failure (malloc'ed: most sessions never fail) */
};

static const char *sess_state_str(enum sess_state st)
{
	switch (st) {
	case SESS_ACCEPTED:
		return "accepted";
	case SESS_HANDSHAKE:
		return "handshake";
	case SESS_CONNECT:
		return "connect";
	case SESS_XCLIENT:
		return "xclient";
	case SESS_STARTTLS:
		return "starttls";
	case SESS_RELAY:
		return "relay";
	case SESS_REPLY:
		return "reply";
	case SESS_LINGER:
		return "linger";
	}
	return "?";
}

/* Every state change passes here, so a debug log shows a session's path. */
static void sess_set_state(struct sess *s, enum sess_state st)
{
	if (s->state != st && log_enabled(LOG_LVL_DEBUG)) {
		char buf[ADDR_STRLEN];

		log_msg(LOG_LVL_DEBUG, "state", "forward %s client %s: %s -> %s",
			s->fwd->cfg->name,
			addr_format(&s->client, buf, sizeof(buf)),
			sess_state_str(s->state), sess_state_str(st));
	}
	s->state = st;
}

static struct sess *sess_list;
static unsigned sess_count;
/* With several workers: sessions of all of them (shared memory). */
static unsigned *sess_total_shared;
static unsigned sess_sockets;
static void (*sess_empty_cb)(void *);
static void *sess_empty_arg;

static void sess_update(struct sess *s, bool run_up, bool run_down);
static void sess_connect_next(struct sess *s);
static void sess_smtp_end(struct sess *s);

unsigned sess_active(void)
{
	return sess_count;
}

unsigned sess_total(void)
{
	if (sess_total_shared != NULL)
		return __atomic_load_n(sess_total_shared, __ATOMIC_RELAXED);
	return sess_count;
}

int sess_share_total(void)
{
	sess_total_shared = shared_alloc(sizeof(*sess_total_shared));
	return sess_total_shared != NULL ? 0 : -1;
}

unsigned sess_fds(void)
{
	return sess_sockets +
	       2 * (unsigned)(pipepool_in_use() + pipepool_pooled());
}

void sess_on_empty(void (*cb)(void *arg), void *arg)
{
	sess_empty_cb = cb;
	sess_empty_arg = arg;
}

/* ---- forwards ---- */

struct sess_forward *sess_forward_new(struct ev_loop *loop,
				      struct config *config,
				      const struct forward_cfg *cfg, char *err,
				      size_t errlen)
{
	struct sess_forward *f = calloc(1, sizeof(*f));
	size_t i;

	snprintf(err, errlen, "out of memory");
	if (f == NULL)
		return NULL;
	f->backends = calloc(cfg->nbackend, sizeof(*f->backends));
	if (f->backends == NULL) {
		free(f);
		return NULL;
	}
	f->cfg = cfg;
	f->config = config_ref(config);
	f->refs = 1;
	f->stats = stats_forward(cfg->name);
	if (cfg->tls != TLS_OFF) {
		f->tls = tls_ctx_new(cfg->tls_cert, cfg->tls_key,
				     cfg->tls_protocols, cfg->tls_ciphers, err,
				     errlen);
		if (f->tls == NULL) {
			sess_forward_unref(f);
			return NULL;
		}
	}
	for (i = 0; i < cfg->nbackend; i++) {
		f->backends[i] = backend_new(loop, &cfg->backend[i]);
		if (f->backends[i] == NULL) {
			f->nbackends = i;
			sess_forward_unref(f);
			return NULL;
		}
		backend_health_start(f->backends[i], config->health_interval,
				     cfg->proxy_protocol, f->stats);
		if (backend_addrs(f->backends[i], &(const union sockname *){0}) == 0)
			log_msg(LOG_LVL_WARN, "resolve",
				"forward %s: backend %s: %s", cfg->name,
				backend_name(f->backends[i]),
				backend_error(f->backends[i]));
	}
	f->nbackends = cfg->nbackend;
	return f;
}

void sess_forward_ref(struct sess_forward *f)
{
	f->refs++;
}

void sess_forward_unref(struct sess_forward *f)
{
	size_t i;

	if (f == NULL || --f->refs > 0)
		return;
	for (i = 0; i < f->nbackends; i++)
		backend_free(f->backends[i]);
	free(f->backends);
	tls_ctx_free(f->tls);
	config_unref(f->config);
	free(f);
}

/* ---- watchers ---- */

static struct sess *sess_of_cio(ev_io *w)
{
	return container_of(w, struct sess, cio);
}

static struct sess *sess_of_bio(ev_io *w)
{
	return container_of(w, struct sess, bio);
}

/* Point a watcher at fd with these events, touching libev only when
 * something changes. */
static void sess_watch(struct sess *s, ev_io *w, int fd, int events)
{
	if (ev_is_active(w)) {
		if (w->fd == fd && (w->events & (EV_READ | EV_WRITE)) == events)
			return;
		ev_io_stop(s->loop, w);
	}
	if (fd == -1 || events == 0)
		return;
	ev_io_set(w, fd, events);
	ev_io_start(s->loop, w);
}

static void sess_arm_timer(struct sess *s, ev_tstamp after)
{
	if (after < 0.001)
		after = 0.001;
	s->timer.repeat = after;
	ev_timer_again(s->loop, &s->timer);
}

static void sess_set_why(struct sess *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void sess_set_why(struct sess *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	free(s->why);
	if (vasprintf(&s->why, fmt, ap) == -1)
		s->why = NULL;
	va_end(ap);
}

/* ---- teardown ---- */

static const char *sess_pump_str(const struct sess *s)
{
	if (s->up.spliced || s->down.spliced)
		return "splice";
	if (s->up.copied || s->down.copied)
		return "copy";
	return "none";
}

static void sess_log(struct sess *s, enum stats_result result,
		     const char *reason)
{
	struct log_line l;
	char buf[ADDR_STRLEN];

	log_begin(&l, LOG_LVL_INFO, "session");
	if (!l.active)
		return;
	log_str(&l, "forward", s->fwd->cfg->name);
	log_str(&l, "client", addr_format(&s->client, buf, sizeof(buf)));
	log_str(&l, "local", addr_format(&s->local, buf, sizeof(buf)));
	log_str(&l, "backend",
		s->connected ? addr_format(&s->baddr, buf, sizeof(buf)) : "-");
	log_str(&l, "result", stats_result_str(result));
	log_str(&l, "reason", reason != NULL ? reason : "-");
	if (s->reply != NULL)
		log_strn(&l, "reply", s->reply, strlen(s->reply) - 2);
	sess_smtp_end(s); /* if closed during the SMTP phase */
	if (s->greeting != NULL) {
		log_str(&l, "greeting", s->greeting);
		log_uint(&l, "greeting_code", s->greeting_code);
	}
	if (s->helo != NULL)
		log_str(&l, "helo", s->helo);
	if (s->backend_error != NULL)
		log_str(&l, "backend_error", s->backend_error);
	if (s->connected)
		log_bool(&l, "early_talker", s->early_talker);
	if (s->tls_up) {
		const char *sni = tls_sni(s->ssl);

		log_str(&l, "tls", tls_version(s->ssl));
		log_str(&l, "cipher", tls_cipher(s->ssl));
		if (sni != NULL)
			log_str(&l, "sni", sni);
	} else {
		log_str(&l, "tls", "no");
	}
	log_str(&l, "pump", sess_pump_str(s));
	log_uint(&l, "bytes_up", s->up.bytes);
	log_uint(&l, "bytes_down", s->down.bytes);
	log_seconds(&l, "duration", ev_now(s->loop) - s->started);
	log_end(&l);
}

static void sess_close_fd(int *fd)
{
	if (*fd != -1) {
		close(*fd);
		*fd = -1;
		sess_sockets--;
	}
}

/* The one teardown: nothing touches s after it. */
static void sess_close(struct sess *s, enum stats_result result,
		       const char *reason)
{
	ev_io_stop(s->loop, &s->cio);
	ev_io_stop(s->loop, &s->bio);
	ev_timer_stop(s->loop, &s->timer);
	sess_log(s, result, reason);
	stats_session_close(s->fwd->stats, result, s->up.bytes, s->down.bytes,
			    s->up.spliced || s->down.spliced,
			    s->up.copied || s->down.copied);
	pump_release(&s->up);
	pump_release(&s->down);
	buffer_release(&s->cin);
	if (s->ssl != NULL) {
		SSL_free(s->ssl);
		s->ssl = NULL;
	}
	free(s->st);
	free(s->xc);
	sess_close_fd(&s->cfd);
	sess_close_fd(&s->bfd);
	if (s->counted)
		acl_count_put(&s->client);
	*s->pprev = s->next;
	if (s->next != NULL)
		s->next->pprev = s->pprev;
	sess_forward_unref(s->fwd);
	free(s->smtp);
	free(s->greeting);
	free(s->helo);
	free(s->backend_error);
	free(s->why);
	free(s);
	if (sess_total_shared != NULL)
		__atomic_sub_fetch(sess_total_shared, 1, __ATOMIC_RELAXED);
	if (--sess_count == 0 && sess_empty_cb != NULL)
		sess_empty_cb(sess_empty_arg);
}

void sess_close_all(const char *reason)
{
	while (sess_list != NULL)
		sess_close(sess_list, STATS_TIMEOUT, reason);
}

/* ---- own replies ---- */

static void sess_linger_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct sess *s = sess_of_cio(w);
	char sink[4096];
	ssize_t r;

	(void)loop;
	(void)revents;
	r = recv(s->cfd, sink, sizeof(sink), 0);
	if (r > 0) {
		s->lingered += (size_t)r;
		if (s->lingered < SESS_LINGER_BYTES)
			return;
	} else if (r == -1 && (errno == EAGAIN || errno == EINTR)) {
		return;
	}
	sess_close(s, s->reply_result, s->why);
}

/* Send text (a complete reply) to the client, then close gracefully.
 * result and the reason already in s->why go to the log. */
static void sess_reply(struct sess *s, enum stats_result result,
		       const char *text)
{
	sess_close_fd(&s->bfd);
	ev_io_stop(s->loop, &s->bio);
	ev_io_stop(s->loop, &s->cio);
	pump_release(&s->up);
	pump_release(&s->down);
	pump_init(&s->down, -1, s->cfd, false);
	if (s->tls_up)
		s->down.dst_ssl = s->ssl;
	free(s->st);
	s->st = NULL;
	sess_set_state(s, SESS_REPLY);
	s->reply = text;
	s->reply_result = result;
	if (pump_queue(&s->down, text, strlen(text)) == -1) {
		sess_close(s, result, s->why);
		return;
	}
	s->deadline = ev_now(s->loop) + SESS_REPLY_SECS;
	sess_arm_timer(s, SESS_REPLY_SECS);
	sess_update(s, false, true);
}

/* ---- SMTP phase ---- */

static char *sess_dup_text(const char *text, size_t n)
{
	char *p = malloc(n + 1);

	if (p != NULL) {
		memcpy(p, text, n);
		p[n] = '\0';
	}
	return p;
}

/* Keep what the log needs, stop observing: from here on the flows may
 * splice (each once its user-space buffer is flushed). */
static void sess_smtp_end(struct sess *s)
{
	struct sess_smtp *sm = s->smtp;

	s->smtp_on = false;
	s->up.observe = NULL;
	s->down.observe = NULL;
	if (sm == NULL)
		return;
	if (sm->greeting.len > 0) {
		/* Not SMTP at all: a taste is enough to tell the operator. */
		size_t n = sm->greeting.code != 0 ? sm->greeting.len :
			   sm->greeting.len < SESS_JUNK_LOG_MAX ? sm->greeting.len :
								  SESS_JUNK_LOG_MAX;

		s->greeting = sess_dup_text(sm->greeting.text, n);
		s->greeting_code = sm->greeting.code;
	}
	if (sm->answer.code >= 400)
		s->backend_error = sess_dup_text(sm->answer.text,
						 strcspn(sm->answer.text, "\n"));
	if (sm->cmd.is_helo)
		s->helo = sess_dup_text(sm->cmd.arg,
					sm->cmd.arg_len < SESS_HELO_LOG_MAX ?
						sm->cmd.arg_len :
						SESS_HELO_LOG_MAX);
	s->smtp = NULL;
	free(sm);
}

/* The watch state, taken only once a byte moves: a connection where
 * nothing happens costs no more than the session itself. */
static struct sess_smtp *sess_smtp_get(struct sess *s)
{
	if (s->smtp == NULL) {
		s->smtp = calloc(1, sizeof(*s->smtp));
		if (s->smtp == NULL) {
			sess_smtp_end(s); /* no memory: no inspection */
			return NULL;
		}
		smtp_reply_init(&s->smtp->greeting);
		smtp_reply_init(&s->smtp->answer);
		smtp_cmd_init(&s->smtp->cmd);
	}
	return s->smtp;
}

/* The phase is over once the greeting, the client's first line and the
 * backend's answer to it (the EHLO reply, or the complaint of a backend
 * that did not expect our PROXY header) have passed. */
static bool sess_smtp_complete(const struct sess_smtp *sm)
{
	return sm->greeting.done && sm->cmd.done && sm->answer.done;
}

static void sess_observe_down(struct flow *f, const char *data, size_t n)
{
	struct sess *s = container_of(f, struct sess, down);
	struct sess_smtp *sm = sess_smtp_get(s);
	size_t used = 0;

	if (sm == NULL)
		return;
	if (!sm->greeting.done)
		used = smtp_reply_feed(&sm->greeting, data, n);
	if (used < n && !sm->answer.done)
		smtp_reply_feed(&sm->answer, data + used, n - used);
	if (sess_smtp_complete(sm))
		sess_smtp_end(s);
}

static void sess_observe_up(struct flow *f, const char *data, size_t n)
{
	struct sess *s = container_of(f, struct sess, up);
	struct sess_smtp *sm = sess_smtp_get(s);

	if (sm == NULL)
		return;
	if (!sm->greeting.done)
		s->early_talker = true;
	smtp_cmd_feed(&sm->cmd, data, n);
	if (sess_smtp_complete(sm))
		sess_smtp_end(s);
}

/* ---- relay ---- */

static void sess_flow_failed(struct sess *s, struct flow *f)
{
	bool up = f == &s->up;
	const char *side;

	if (f->err_where == PUMP_ERR_READ)
		side = up ? "read client" : "read backend";
	else
		side = up ? "write backend" : "write client";
	sess_set_why(s, "%s: %s", side, strerror(f->err));
}

/* A connect attempt failed (s->why says how): note it everywhere it
 * matters, then try the next address. */
static void sess_attempt_failed(struct sess *s)
{
	struct backend *b = s->fwd->backends[s->bi];

	log_msg(LOG_LVL_WARN, "backend_failed", "forward %s: %s",
		s->fwd->cfg->name, s->why);
	backend_connect_failed(b);
	stats_backend_result(s->fwd->stats, backend_name(b), false);
	ev_io_stop(s->loop, &s->bio);
	sess_close_fd(&s->bfd);
	sess_connect_next(s);
}

/* The backend reset the connection before saying anything (a FIN is
 * passed on like any half-close: the backend may still be reading). If
 * the client has not sent anything either, the next backend can take
 * over; otherwise the client still hears a proper 421 rather than a
 * reset. */
static bool sess_backend_vanished(struct sess *s)
{
	char buf[ADDR_STRLEN];

	/* A client that already finished sending needs nothing more: the
	 * backend's silent close is its answer. */
	if (s->down.bytes > 0 || s->up_done || s->up.eof ||
	    !(s->down_want & PUMP_FAILED) || s->down.err_where != PUMP_ERR_READ)
		return false;
	sess_set_why(s, "backend %s reset the connection before its greeting",
		     addr_format(&s->baddr, buf, sizeof(buf)));
	if (s->up.bytes == 0) {
		pump_release(&s->up);
		pump_release(&s->down);
		free(s->smtp);
		s->smtp = NULL;
		s->smtp_on = false;
		free(s->st);
		s->st = NULL;
		s->connected = false;
		ev_io_stop(s->loop, &s->cio);
		sess_set_state(s, SESS_CONNECT);
		sess_attempt_failed(s);
	} else {
		backend_connect_failed(s->fwd->backends[s->bi]);
		sess_reply(s, STATS_BACKEND_UNAVAILABLE, sess_reply_unavailable);
	}
	return true;
}

/* reject_early_talkers: until the greeting has passed, client bytes are
 * only peeked at, never relayed; any byte at all gets 554. Returns true
 * when the session was answered. */
static bool sess_early_check(struct sess *s)
{
	char c;
	ssize_t r;

	if (s->ssl != NULL) {
		/* Implicit TLS: what counts is application data. */
		int rc;

		ERR_clear_error();
		rc = SSL_peek(s->ssl, &c, 1);
		if (rc > 0) {
			r = 1;
		} else {
			int e = SSL_get_error(s->ssl, rc);

			r = (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? -1 : 0;
			errno = r == -1 ? EAGAIN : 0;
			ERR_clear_error();
		}
	} else {
		r = recv(s->cfd, &c, 1, MSG_PEEK);
	}
	if (r == 1) {
		s->early_talker = true;
		sess_set_why(s, "client talked before the greeting");
		sess_reply(s, STATS_DENIED, sess_reply_early);
		return true;
	}
	if (r == 0 || (errno != EAGAIN && errno != EINTR))
		s->hold_up = false; /* closed or failed: let the flow see it */
	return false;
}

static void sess_update_relay(struct sess *s, bool run_up, bool run_down)
{
	int cev = 0, bev = 0;

	if (run_down && !s->down_done)
		s->down_want = pump_run(&s->down);
	if (s->hold_up) {
		if (!s->smtp_on || (s->smtp != NULL && s->smtp->greeting.done)) {
			s->hold_up = false;
			run_up = true; /* bytes may be waiting */
		} else {
			if (run_up && sess_early_check(s))
				return;
			run_up = !s->hold_up;
		}
		if (s->hold_up) {
			/* The client waits, but our PROXY header must go. */
			unsigned w = pump_flush(&s->up);

			if (w & PUMP_FAILED) {
				sess_flow_failed(s, &s->up);
				sess_close(s, STATS_ERROR, s->why);
				return;
			}
			s->up_want = w | PUMP_SRC_READ;
		}
	}
	if (run_up && !s->up_done)
		s->up_want = pump_run(&s->up);

	if ((s->down_want & (PUMP_FAILED | PUMP_DONE)) && !s->down_done) {
		if (sess_backend_vanished(s))
			return;
		s->down_done = true;
		if (s->down_want & PUMP_FAILED) {
			sess_flow_failed(s, &s->down);
			sess_close(s, STATS_ERROR, s->why);
			return;
		}
		if (s->first_close == NULL)
			s->first_close = "backend closed";
	}
	if ((s->up_want & (PUMP_FAILED | PUMP_DONE)) && !s->up_done) {
		s->up_done = true;
		/* A reset after the backend said goodbye (221 to QUIT) ends
		 * nothing that mattered: many clients close that way. */
		if ((s->up_want & PUMP_FAILED) && s->down_done &&
		    s->up.err_where == PUMP_ERR_READ && s->up.err == ECONNRESET)
			s->up_want = PUMP_DONE;
		if (s->up_want & PUMP_FAILED) {
			sess_flow_failed(s, &s->up);
			sess_close(s, STATS_ERROR, s->why);
			return;
		}
		if (s->first_close == NULL)
			s->first_close = "client closed";
	}
	if (s->up_done && s->down_done) {
		sess_close(s, STATS_FORWARDED, s->first_close);
		return;
	}
	if (!s->up_done) {
		if (s->up_want & PUMP_SRC_READ)
			cev |= EV_READ;
		if (s->up_want & PUMP_DST_WRITE)
			bev |= EV_WRITE;
	}
	if (!s->down_done) {
		if (s->down_want & PUMP_SRC_READ)
			bev |= EV_READ;
		if (s->down_want & PUMP_DST_WRITE)
			cev |= EV_WRITE;
	}
	sess_watch(s, &s->cio, s->cfd, cev);
	sess_watch(s, &s->bio, s->bfd, bev);
}

static void sess_update_reply(struct sess *s)
{
	unsigned w = pump_run(&s->down);

	if (w & PUMP_FAILED) {
		sess_close(s, s->reply_result, s->why);
		return;
	}
	if (w & PUMP_DONE) {
		/* Reply delivered and FIN sent: read until the client closes
		 * so our close() does not turn into a reset. */
		sess_set_state(s, SESS_LINGER);
		ev_io_stop(s->loop, &s->cio);
		ev_set_cb(&s->cio, sess_linger_cb);
		sess_watch(s, &s->cio, s->cfd, EV_READ);
		return;
	}
	sess_watch(s, &s->cio, s->cfd, EV_WRITE);
}

/* ---- client_identity = xclient ---- */

/* Our name in the EHLO we send on the client's behalf. */
static const char *sess_hostname(void)
{
	static char name[SMTP_DOMAIN_MAX + 1];

	if (name[0] == '\0' && (gethostname(name, sizeof(name) - 1) == -1 ||
				name[0] == '\0'))
		snprintf(name, sizeof(name), "smtpfwd");
	return name;
}

static void sess_relay_start(struct sess *s);
static int sess_events(unsigned want);

static void sess_xclient_run(struct sess *s)
{
	struct xclient *x = s->xc;
	char tmp[2048];
	unsigned w = 0, bw = 0;
	ssize_t r;
	long used;

	for (;;) {
		w = pump_flush(&s->up);
		if (w & PUMP_FAILED) {
			sess_flow_failed(s, &s->up);
			sess_close(s, STATS_ERROR, s->why);
			return;
		}
		bw = w;
		r = pump_read(&s->down, tmp, sizeof(tmp), &w);
		if (r == -1 && (w & PUMP_FAILED)) {
			sess_flow_failed(s, &s->down);
			sess_close(s, STATS_ERROR, s->why);
			return;
		}
		if (r == -1) {
			bw |= w;
			break;
		}
		if (r == 0) {
			sess_set_why(s, "XCLIENT: backend closed the connection");
			sess_reply(s, STATS_BACKEND_UNAVAILABLE, sess_reply_unavailable);
			return;
		}
		used = xclient_backend(x, tmp, (size_t)r, &s->up.buf, &s->down.buf);
		if (used == -1) {
			sess_set_why(s, "XCLIENT: reply too large");
			sess_reply(s, STATS_ERROR, sess_reply_identity);
			return;
		}
		if (x->phase == XCLIENT_FAILED) {
			sess_set_why(s, "XCLIENT: %s", x->failure);
			log_msg(LOG_LVL_WARN, "xclient_failed", "forward %s: %s",
				s->fwd->cfg->name, s->why);
			sess_reply(s, STATS_ERROR, sess_reply_identity);
			return;
		}
		if (x->phase == XCLIENT_DONE) {
			/* What followed the new greeting is the backend's own. */
			if (used < r && pump_queue(&s->down, tmp + used,
						   (size_t)(r - used)) == -1) {
				sess_set_why(s, "XCLIENT: backend talked too much");
				sess_reply(s, STATS_ERROR, sess_reply_identity);
				return;
			}
			free(s->xc);
			s->xc = NULL;
			sess_relay_start(s);
			return;
		}
	}
	sess_watch(s, &s->bio, s->bfd, sess_events(bw));
}

/* ---- tls = starttls: the plaintext dialogue ---- */

static int sess_events(unsigned want)
{
	int ev = 0;

	if (want & (PUMP_SRC_READ | PUMP_DST_READ))
		ev |= EV_READ;
	if (want & (PUMP_SRC_WRITE | PUMP_DST_WRITE))
		ev |= EV_WRITE;
	return ev;
}

static void sess_tls_begin(struct sess *s);

/* The dialogue is over: everything from here is relayed blindly. Client
 * bytes the dialogue has not examined go on only when it decided so
 * (carry); otherwise they are dropped, never relayed unexamined. */
static void sess_starttls_to_relay(struct sess *s, bool carry)
{
	size_t avail;
	const char *p = buffer_read_ptr(&s->cin, &avail);

	if (carry && p != NULL && pump_queue(&s->up, p, avail) == -1) {
		sess_set_why(s, "STARTTLS dialogue: client input too large");
		sess_close(s, STATS_ERROR, s->why);
		return;
	}
	buffer_release(&s->cin);
	free(s->st);
	s->st = NULL;
	sess_set_state(s, SESS_RELAY);
	s->up_want = s->down_want = PUMP_SRC_READ;
	sess_update(s, true, true);
}

/* Read client input while the dialogue can use it. Returns false when
 * the session ended. */
static bool sess_starttls_client_in(struct sess *s, unsigned *cw,
				    bool *progress)
{
	struct starttls *st = s->st;
	size_t space, used = buffer_used(&s->cin);
	unsigned w = 0;
	ssize_t r;
	char *p;

	/* Never read during the handshake phase: those bytes are TLS. */
	if (s->up.eof || used >= SESS_STARTTLS_IN ||
	    (st->phase != STARTTLS_GREETING && st->phase != STARTTLS_COMMAND &&
	     st->phase != STARTTLS_REPLY))
		return true;
	p = buffer_write_ptr(&s->cin, &space);
	if (p == NULL) {
		sess_set_why(s, "out of memory");
		sess_close(s, STATS_ERROR, s->why);
		return false;
	}
	if (space > SESS_STARTTLS_IN - used)
		space = SESS_STARTTLS_IN - used;
	r = pump_read(&s->up, p, space, &w);
	if (r > 0) {
		if (s->smtp_on)
			sess_observe_up(&s->up, p, (size_t)r);
		buffer_produce(&s->cin, (size_t)r);
		*progress = true;
		if (st->phase == STARTTLS_GREETING &&
		    s->fwd->cfg->reject_early_talkers) {
			s->early_talker = true;
			sess_set_why(s, "client talked before the greeting");
			sess_reply(s, STATS_DENIED, sess_reply_early);
			return false;
		}
	} else if (r == -1 && (w & PUMP_FAILED)) {
		sess_flow_failed(s, &s->up);
		sess_close(s, STATS_ERROR, s->why);
		return false;
	} else {
		*cw |= w;
	}
	if (buffer_empty(&s->cin))
		buffer_release(&s->cin);
	return true;
}

static bool sess_starttls_backend_in(struct sess *s, unsigned *bw,
				     bool *progress)
{
	struct starttls *st = s->st;
	char tmp[2048];
	unsigned w = 0;
	ssize_t r;
	long used;

	if (s->down.eof || st->phase == STARTTLS_HANDSHAKE ||
	    st->phase == STARTTLS_RELAY)
		return true;
	r = pump_read(&s->down, tmp, sizeof(tmp), &w);
	if (r == -1) {
		if (!(w & PUMP_FAILED)) {
			*bw |= w;
			return true;
		}
		sess_flow_failed(s, &s->down);
		sess_close(s, STATS_ERROR, s->why);
		return false;
	}
	if (r == 0)
		return true; /* eof: the caller switches to relaying */
	*progress = true;
	if (s->smtp_on)
		sess_observe_down(&s->down, tmp, (size_t)r);
	used = starttls_backend(st, tmp, (size_t)r, &s->down.buf);
	if (used == -1 || (used < r && pump_queue(&s->down, tmp + used,
						  (size_t)(r - used)) == -1)) {
		sess_set_why(s, "STARTTLS dialogue: backend reply too large");
		sess_close(s, STATS_ERROR, s->why);
		return false;
	}
	return true;
}

static void sess_starttls_run(struct sess *s)
{
	struct starttls *st = s->st;
	bool progress = true;
	unsigned cw = 0, bw = 0, w;

	while (progress) {
		progress = false;
		cw = bw = 0;
		if (!sess_starttls_client_in(s, &cw, &progress))
			return;
		/* Stop answering while our replies pile up unread (a client
		 * pipelining refused commands): reading resumes as they go. */
		while (!buffer_empty(&s->cin) &&
		       buffer_used(&s->down.buf) < BUFFER_SIZE / 2 &&
		       (st->phase == STARTTLS_COMMAND ||
			st->phase == STARTTLS_HANDSHAKE)) {
			size_t avail;
			const char *p = buffer_read_ptr(&s->cin, &avail);
			long used = starttls_client(st, p, avail, &s->up.buf,
						    &s->down.buf);

			if (used == -1) {
				sess_set_why(s, "STARTTLS dialogue: output too large");
				sess_close(s, STATS_ERROR, s->why);
				return;
			}
			if (used == 0)
				break;
			buffer_consume(&s->cin, (size_t)used);
			progress = true;
		}
		if (!sess_starttls_backend_in(s, &bw, &progress))
			return;
		w = pump_flush(&s->up);
		if (w & PUMP_FAILED) {
			sess_flow_failed(s, &s->up);
			sess_close(s, STATS_ERROR, s->why);
			return;
		}
		bw |= w;
		w = pump_flush(&s->down);
		if (w & PUMP_FAILED) {
			sess_flow_failed(s, &s->down);
			sess_close(s, STATS_ERROR, s->why);
			return;
		}
		cw |= w;
	}
	if (st->phase == STARTTLS_HANDSHAKE && buffer_empty(&s->down.buf)) {
		/* The 220 is out. Whatever the client sent after STARTTLS is
		 * gone; the next byte from it must be TLS. */
		buffer_release(&s->cin);
		ev_io_stop(s->loop, &s->bio);
		sess_tls_begin(s);
		return;
	}
	if (st->phase == STARTTLS_RELAY) {
		sess_starttls_to_relay(s, true);
		return;
	}
	/* The backend is gone: nothing more to examine or to say. */
	if (s->down.eof) {
		sess_starttls_to_relay(s, false);
		return;
	}
	/* The client is done sending: keep stepping through what it sent,
	 * one command per reply, and pass its EOF on only after the last
	 * one (a half-close must not smuggle commands past the dialogue). */
	if (s->up.eof && buffer_empty(&s->cin) &&
	    st->phase != STARTTLS_HANDSHAKE && !st->have_held && st->blen == 0) {
		/* Nothing unexamined is left; the EOF itself cannot smuggle
		 * anything, and a backend may answer only once it sees it. */
		sess_starttls_to_relay(s, false);
		return;
	}
	sess_watch(s, &s->cio, s->cfd, sess_events(cw));
	sess_watch(s, &s->bio, s->bfd, sess_events(bw));
}

static void sess_update(struct sess *s, bool run_up, bool run_down)
{
	if (s->state == SESS_RELAY)
		sess_update_relay(s, run_up, run_down);
	else if (s->state == SESS_REPLY)
		sess_update_reply(s);
	else if (s->state == SESS_STARTTLS)
		sess_starttls_run(s);
	else if (s->state == SESS_XCLIENT)
		sess_xclient_run(s);
}

/* ---- TLS with the client ---- */

static void sess_connected(struct sess *s);

/* The handshake finished (implicit TLS: before the backend is chosen;
 * STARTTLS: in the middle of the dialogue). */
static void sess_tls_ready(struct sess *s)
{
	s->tls_up = true;
	ev_io_stop(s->loop, &s->cio);
	if (s->st == NULL) {
		sess_connect_next(s);
		return;
	}
	/* Whatever the backend sent while nobody asked (during the
	 * handshake) is dropped now, before the first command over TLS can
	 * make it look like an answer. */
	for (;;) {
		char tmp[2048];
		unsigned w = 0;
		ssize_t r = pump_read(&s->down, tmp, sizeof(tmp), &w);

		if (r <= 0) {
			if (r == -1 && (w & PUMP_FAILED)) {
				sess_flow_failed(s, &s->down);
				sess_close(s, STATS_ERROR, s->why);
				return;
			}
			break;
		}
		starttls_backend(s->st, tmp, (size_t)r, &s->down.buf);
	}
	starttls_tls_done(s->st);
	s->up.src_ssl = s->ssl;
	s->down.dst_ssl = s->ssl;
	s->up.splice_ok = s->down.splice_ok = false;
	sess_set_state(s, SESS_STARTTLS);
	s->last_active = ev_now(s->loop);
	sess_arm_timer(s, s->fwd->cfg->idle_timeout);
	sess_starttls_run(s);
}

static void sess_handshake_step(struct sess *s)
{
	char err[200];
	int want = 0;
	int rc = tls_handshake(s->ssl, &want, err, sizeof(err));

	if (rc == 1) {
		sess_watch(s, &s->cio, s->cfd,
			   want == TLS_WANT_READ ? EV_READ : EV_WRITE);
		return;
	}
	if (rc == -1) {
		sess_set_why(s, "TLS handshake: %s", err);
		sess_close(s, STATS_TLS_FAILED, s->why);
		return;
	}
	sess_tls_ready(s);
}

static void sess_tls_begin(struct sess *s)
{
	double limit = s->fwd->cfg->idle_timeout < SESS_HANDSHAKE_SECS ?
			       s->fwd->cfg->idle_timeout :
			       SESS_HANDSHAKE_SECS;

	s->ssl = tls_new(s->fwd->tls, s->cfd);
	if (s->ssl == NULL) {
		sess_set_why(s, "TLS: cannot set up a session");
		sess_close(s, STATS_TLS_FAILED, s->why);
		return;
	}
	sess_set_state(s, SESS_HANDSHAKE);
	s->deadline = ev_now(s->loop) + limit;
	sess_arm_timer(s, limit);
	sess_handshake_step(s);
}

static void sess_client_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct sess *s = sess_of_cio(w);

	s->last_active = ev_now(loop);
	if (s->state == SESS_HANDSHAKE) {
		sess_handshake_step(s);
		return;
	}
	/* Over TLS either flow may be waiting on either direction. */
	if (s->ssl != NULL)
		sess_update(s, true, true);
	else
		sess_update(s, revents & EV_READ, revents & EV_WRITE);
}

static void sess_backend_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct sess *s = sess_of_bio(w);

	s->last_active = ev_now(loop);
	if (s->state == SESS_CONNECT) {
		int err = 0;
		socklen_t len = sizeof(err);
		char buf[ADDR_STRLEN];

		if (getsockopt(s->bfd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
			err = errno;
		if (err == 0) {
			sess_connected(s);
			return;
		}
		sess_set_why(s, "connect %s: %s",
			     addr_format(&s->baddr, buf, sizeof(buf)),
			     strerror(err));
		sess_attempt_failed(s);
		return;
	}
	sess_update(s, revents & EV_WRITE, revents & EV_READ);
}

static void sess_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sess *s = container_of(w, struct sess, timer);
	ev_tstamp now = ev_now(loop), next;
	char buf[ADDR_STRLEN];

	(void)revents;
	switch (s->state) {
	case SESS_CONNECT:
		sess_set_why(s, "connect %s: timed out after %gs",
			     addr_format(&s->baddr, buf, sizeof(buf)),
			     s->fwd->cfg->connect_timeout);
		sess_attempt_failed(s);
		return;
	case SESS_HANDSHAKE:
		sess_set_why(s, "TLS handshake: timed out");
		sess_close(s, STATS_TLS_FAILED, s->why);
		return;
	case SESS_REPLY:
	case SESS_LINGER:
		sess_close(s, s->reply_result, s->why);
		return;
	case SESS_ACCEPTED: /* never armed there */
	case SESS_XCLIENT:
	case SESS_STARTTLS:
	case SESS_RELAY:
		break;
	}
	next = s->last_active + s->fwd->cfg->idle_timeout - now;
	if (next <= 0) {
		sess_close(s, STATS_TIMEOUT, "idle timeout");
		return;
	}
	if (s->smtp_on) {
		if (now >= s->deadline) {
			sess_smtp_end(s);
			/* Let the flows switch to splice now. */
			sess_update(s, true, true);
			if (s->state != SESS_RELAY && s->state != SESS_STARTTLS)
				return; /* the session ended meanwhile */
		} else if (s->deadline - now < next) {
			next = s->deadline - now;
		}
	}
	sess_arm_timer(s, next);
}

static void sess_nodelay(int fd)
{
	int one = 1;

	/* SMTP is a dialogue of short lines: do not let Nagle hold them. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void sess_connected(struct sess *s)
{
	const struct forward_cfg *cfg = s->fwd->cfg;
	bool splice_ok = pump_splice_supported() && cfg->tls == TLS_OFF;
	struct pp_tls tls_facts;
	char hdr[PP_V2_MAX];
	ssize_t n = 0;

	sess_set_state(s, SESS_RELAY);
	s->connected = true;
	stats_backend_result(s->fwd->stats, backend_name(s->fwd->backends[s->bi]), true);
	sess_nodelay(s->bfd);
	ev_io_stop(s->loop, &s->bio);
	pump_init(&s->up, s->cfd, s->bfd, splice_ok);
	pump_init(&s->down, s->bfd, s->cfd, splice_ok);
	s->up_done = s->down_done = false;
	s->up_want = PUMP_SRC_READ;
	s->down_want = PUMP_SRC_READ;
	if (s->tls_up) {
		s->up.src_ssl = s->ssl;
		s->down.dst_ssl = s->ssl;
		tls_facts.version = tls_version(s->ssl);
		tls_facts.cipher = tls_cipher(s->ssl);
		tls_facts.sni = tls_sni(s->ssl);
	}
	if (cfg->proxy_protocol == PROXY_V1)
		n = pp_encode_v1(hdr, sizeof(hdr), &s->client, &s->local);
	else if (cfg->proxy_protocol == PROXY_V2)
		n = pp_encode_v2(hdr, sizeof(hdr), &s->client, &s->local,
				 s->tls_up ? &tls_facts : NULL);
	if (n < 0 || (n > 0 && pump_queue(&s->up, hdr, (size_t)n) == -1)) {
		sess_set_why(s, "cannot build the PROXY header");
		sess_reply(s, STATS_ERROR, sess_reply_unavailable);
		return;
	}
	s->last_active = ev_now(s->loop);
	if (cfg->identity == IDENT_XCLIENT) {
		s->xc = malloc(sizeof(*s->xc));
		if (s->xc == NULL) {
			sess_set_why(s, "out of memory");
			sess_close(s, STATS_ERROR, s->why);
			return;
		}
		xclient_init(s->xc, sess_hostname(), &s->client, &s->local);
		sess_set_state(s, SESS_XCLIENT);
		sess_arm_timer(s, cfg->idle_timeout);
		/* The client hears nothing until the backend took XCLIENT. */
		ev_io_stop(s->loop, &s->cio);
		sess_xclient_run(s);
		return;
	}
	sess_relay_start(s);
}

/* The backend is ready for the client (after the PROXY header, or once
 * XCLIENT went through, with its new greeting waiting in down.buf). */
static void sess_relay_start(struct sess *s)
{
	const struct forward_cfg *cfg = s->fwd->cfg;
	char greeting[XCLIENT_REPLY_MAX];
	size_t glen = 0, avail;
	const char *p;

	if (cfg->log_greeting || cfg->reject_early_talkers) {
		s->smtp_on = true;
		s->up.observe = sess_observe_up;
		s->down.observe = sess_observe_down;
	}
	/* The relay holds the client back (plaintext, or implicit TLS once
	 * the handshake is done); STARTTLS checks in its own dialogue. */
	s->hold_up = cfg->reject_early_talkers && s->smtp_on &&
		     cfg->tls != TLS_STARTTLS;
	sess_set_state(s, SESS_RELAY);
	s->deadline = ev_now(s->loop) + SESS_SMTP_GRACE;
	sess_arm_timer(s, s->smtp_on && SESS_SMTP_GRACE < cfg->idle_timeout ?
				  SESS_SMTP_GRACE :
				  cfg->idle_timeout);
	/* A greeting already received (XCLIENT) is seen as if it had just
	 * arrived: by the log and by the STARTTLS dialogue. */
	p = buffer_read_ptr(&s->down.buf, &avail);
	if (p != NULL && avail <= sizeof(greeting)) {
		memcpy(greeting, p, avail);
		glen = avail;
		if (s->smtp_on)
			sess_observe_down(&s->down, greeting, glen);
	}
	/* XCLIENT: the client has heard nothing yet; anything it sent is
	 * early. */
	if (glen > 0 && s->hold_up && sess_early_check(s))
		return;
	if (cfg->tls == TLS_STARTTLS) {
		s->st = malloc(sizeof(*s->st));
		if (s->st == NULL) {
			sess_set_why(s, "out of memory");
			sess_close(s, STATS_ERROR, s->why);
			return;
		}
		starttls_init(s->st, cfg->tls_required);
		sess_set_state(s, SESS_STARTTLS);
		if (glen > 0) {
			long used;

			buffer_release(&s->down.buf);
			used = starttls_backend(s->st, greeting, glen, &s->down.buf);
			if (used == -1 || (used < (long)glen &&
					   pump_queue(&s->down, greeting + used,
						      glen - (size_t)used) == -1)) {
				sess_set_why(s, "STARTTLS dialogue: greeting too large");
				sess_close(s, STATS_ERROR, s->why);
				return;
			}
		}
	}
	/* Write the PROXY header (if any) and read whatever is waiting. */
	sess_update(s, true, true);
}

/* Start the next connect attempt, or give up with 421. */
static void sess_connect_next(struct sess *s)
{
	const struct forward_cfg *cfg = s->fwd->cfg;
	char buf[ADDR_STRLEN];

	for (;;) {
		struct backend *b;
		const union sockname *addrs;
		size_t n;
		int fd;

		if (s->bi >= s->fwd->nbackends) {
			/* Backends a health check marked down are still better
			 * than a 421: try them last. */
			if (s->pass == 1 || !s->skipped)
				break;
			s->pass = 1;
			s->bi = s->ai = 0;
			continue;
		}
		b = s->fwd->backends[s->bi];
		if (s->ai == 0 && backend_healthy(b) == (s->pass == 1)) {
			s->skipped = s->skipped || s->pass == 0;
			s->bi++;
			continue;
		}
		n = backend_addrs(b, &addrs);

		if (s->ai >= n) {
			if (n == 0)
				sess_set_why(s, "resolve %s: %s",
					     backend_name(b), backend_error(b));
			s->bi++;
			s->ai = 0;
			continue;
		}
		s->baddr = addrs[s->ai++];
		addr_format(&s->baddr, buf, sizeof(buf));
		fd = socket(s->baddr.sa.sa_family,
			    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd == -1) {
			/* Our own shortage (fds, memory): no backend is to
			 * blame and no other would fare better. */
			sess_set_why(s, "cannot open a socket for %s: %s", buf,
				     strerror(errno));
			sess_reply(s, STATS_ERROR, sess_reply_busy);
			return;
		}
		s->bfd = fd;
		sess_sockets++;
		if (connect(fd, &s->baddr.sa, addr_len(&s->baddr)) == 0) {
			sess_connected(s);
			return;
		}
		if (errno == EINPROGRESS) {
			sess_set_state(s, SESS_CONNECT);
			ev_set_cb(&s->bio, sess_backend_cb);
			sess_watch(s, &s->bio, fd, EV_WRITE);
			sess_arm_timer(s, cfg->connect_timeout);
			return;
		}
		sess_set_why(s, "connect %s: %s", buf, strerror(errno));
		sess_attempt_failed(s);
		return;
	}
	sess_reply(s, STATS_BACKEND_UNAVAILABLE, sess_reply_unavailable);
}

void sess_start(struct ev_loop *loop, struct sess_forward *fwd, int fd,
		const union sockname *client, const union sockname *local,
		enum sess_admit admit, bool counted)
{
	struct sess *s = calloc(1, sizeof(*s));

	if (s == NULL) {
		close(fd);
		if (counted)
			acl_count_put(client);
		return;
	}
	s->loop = loop;
	s->fwd = fwd;
	sess_forward_ref(fwd);
	s->cfd = fd;
	s->bfd = -1;
	s->client = *client;
	s->local = *local;
	s->counted = counted;
	s->started = s->last_active = ev_now(loop);
	pump_init(&s->up, -1, -1, false);
	pump_init(&s->down, -1, -1, false);
	ev_io_init(&s->cio, sess_client_cb, fd, EV_READ);
	ev_io_init(&s->bio, sess_backend_cb, -1, EV_READ);
	ev_init(&s->timer, sess_timer_cb);
	s->next = sess_list;
	if (sess_list != NULL)
		sess_list->pprev = &s->next;
	sess_list = s;
	s->pprev = &sess_list;
	sess_count++;
	if (sess_total_shared != NULL)
		__atomic_add_fetch(sess_total_shared, 1, __ATOMIC_RELAXED);
	sess_sockets++;
	stats_session_open(fwd->stats);
	sess_nodelay(fd);

	if (fwd->cfg->tls == TLS_IMPLICIT) {
		/* Replying would first cost a handshake: refuse by closing. */
		if (admit == SESS_DENIED) {
			sess_close(s, STATS_DENIED, "client address denied");
			return;
		}
		if (admit != SESS_ADMIT) {
			sess_close(s, STATS_LIMITED, admit == SESS_LIMIT_IP ?
							 "max_per_ip reached" :
							 "max_connections reached");
			return;
		}
		sess_tls_begin(s);
		return;
	}
	switch (admit) {
	case SESS_DENIED:
		sess_set_why(s, "client address denied");
		sess_reply(s, STATS_DENIED, sess_reply_denied);
		break;
	case SESS_LIMIT_IP:
		sess_set_why(s, "max_per_ip %u reached", fwd->cfg->max_per_ip);
		sess_reply(s, STATS_LIMITED, sess_reply_limit_ip);
		break;
	case SESS_LIMIT_TOTAL:
		sess_set_why(s, "max_connections %u reached",
			     fwd->config->max_connections);
		sess_reply(s, STATS_LIMITED, sess_reply_limit_total);
		break;
	case SESS_ADMIT:
		sess_connect_next(s);
		break;
	}
}
