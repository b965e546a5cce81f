/* backend: the addresses one configured backend stands for. A literal
 * address is fixed. A hostname is resolved when the backend is created
 * (start and reload), and again, off the event loop, after a connect to
 * it failed — so a container that moved is found — at most once per
 * BACKEND_RERESOLVE_SECS. Until an answer arrives the last known
 * addresses stay in use. */
#ifndef SMTPFWD_BACKEND_H
#define SMTPFWD_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

#include "addr.h"
#include "config.h"

#define BACKEND_RERESOLVE_SECS 2.0
/* A health check gets this long (or the interval, if shorter). */
#define BACKEND_HEALTH_TIMEOUT 10.0

struct ev_loop;
struct backend;

/* Resolves a hostname at once (blocking); a failure is not fatal: the
 * backend has no addresses and backend_error() says why. NULL only when
 * memory is out. */
struct backend *backend_new(struct ev_loop *loop,
			    const struct backend_cfg *cfg);
void backend_free(struct backend *b);

/* As configured, e.g. "mail.lan:2525". */
const char *backend_name(const struct backend *b);

/* The addresses known now (borrowed: valid until control returns to the
 * event loop). 0 when none; backend_error() then says why. */
size_t backend_addrs(const struct backend *b, const union sockname **addrs);
const char *backend_error(const struct backend *b);

/* A connect to one of its addresses failed: look the name up again. */
void backend_connect_failed(struct backend *b);

struct stats_fwd;

/* Active SMTP health checks every interval seconds: connect, (PROXY
 * LOCAL header when pp is on), expect a 220 greeting, QUIT. A failing
 * backend is skipped in failover until a check passes again. Results
 * feed stats (metrics and /health). */
void backend_health_start(struct backend *b, double interval,
			  enum proxy_version pp, struct stats_fwd *stats);

/* False only while health checks say it is down. */
bool backend_healthy(const struct backend *b);

#endif
