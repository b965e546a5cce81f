/* backend: what one configured backend resolves to. Literal addresses
 * are fixed; hostnames are resolved at start, again when a connect to
 * them fails, and when nothing is known yet (a session then waits for
 * the answer, bounded by its connect timeout). */
#ifndef SMTPFWD_BACKEND_H
#define SMTPFWD_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

#include "addr.h"
#include "config.h"

struct ev_loop;
struct backend;

/* A session waiting for a hostname to resolve. */
struct backend_waiter {
	struct backend_waiter *next;
	struct backend_waiter **pprev;
	void (*ready)(struct backend_waiter *w);
};

struct backend *backend_new(struct ev_loop *loop,
			    const struct backend_cfg *cfg);
void backend_free(struct backend *b);

const char *backend_name(const struct backend *b);

/* The known addresses (borrowed: valid until control returns to the
 * loop). Returns 0 with n >= 1; 1 when resolution is under way and w was
 * queued (w->ready is called when it ends, whatever its result); -1 when
 * resolution failed (*why says why). */
int backend_addrs(struct backend *b, struct backend_waiter *w,
		  const union sockname **addrs, size_t *n, const char **why);

void backend_unwait(struct backend_waiter *w);

/* A connect to one of this backend's addresses failed: refresh names. */
void backend_connect_failed(struct backend *b);

#endif
