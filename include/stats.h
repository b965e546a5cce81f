/* stats: counters per forward and per backend, kept across reloads
 * (looked up by name), and the tiny HTTP/1.0 endpoint that serves them:
 * GET /metrics (Prometheus text format) and GET /health. Nothing else is
 * ever served. */
#ifndef SMTPFWD_STATS_H
#define SMTPFWD_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"

struct ev_loop;
struct stats_fwd;

enum stats_result {
	STATS_FORWARDED,
	STATS_DENIED,
	STATS_LIMITED,
	STATS_BACKEND_UNAVAILABLE,
	STATS_TLS_FAILED,
	STATS_TIMEOUT,
	STATS_ERROR,
	STATS_RESULT_COUNT
};

const char *stats_result_str(enum stats_result r);

/* Move the counters into memory shared with worker processes forked
 * later (workers > 1). Returns -1 when the memory cannot be had. */
int stats_share(void);

/* The counters of the forward with this name (created on first use; a
 * reload finds the same ones). NULL when memory is out or 64 forwards
 * already have counters; every function below accepts NULL and does
 * nothing (the forward then simply has no metrics). */
struct stats_fwd *stats_forward(const char *name);

void stats_session_open(struct stats_fwd *f);
void stats_session_close(struct stats_fwd *f, enum stats_result r,
			 uint64_t bytes_up, uint64_t bytes_down, bool spliced,
			 bool copied);
/* A connect (or health check) to backend, as configured, succeeded or
 * failed. The latest result of a forward feeds /health. */
void stats_backend_result(struct stats_fwd *f, const char *backend, bool ok);

/* Forwards of the running configuration: /health looks only at these.
 * Called by the server after start and each reload. */
void stats_set_current(struct stats_fwd *const *fwd, size_t n);

/* Healthy: no backend of the forward was tried yet, or the latest
 * result (connect or health check) of at least one of them was good. */
bool stats_forward_healthy(const struct stats_fwd *f);

/* Serve /metrics and /health on addr. Returns -1 with errno set. */
int stats_listen(struct ev_loop *loop, const union sockname *addr);
void stats_close(void);

/* The whole HTTP/1.0 response to the request head in req (pure apart
 * from reading the counters; for tests and fuzzing). malloc'ed; NULL
 * when memory is out. */
char *stats_response(const char *req, size_t n, size_t *len);

#endif
