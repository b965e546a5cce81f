/* resolve: getaddrinfo() off the event loop. Each request runs on its own
 * short-lived thread; the answer comes back on the loop through ev_async,
 * so a slow DNS server never stalls other sessions. */
#ifndef SMTPFWD_RESOLVE_H
#define SMTPFWD_RESOLVE_H

#include <stddef.h>
#include <stdint.h>

#include "addr.h"

struct ev_loop;
struct resolve_req;

/* err: 0, or a getaddrinfo() EAI_* code (resolve_strerror() names it).
 * addrs is valid only during the call. */
typedef void resolve_cb(void *arg, int err, const union sockname *addrs,
			size_t n);

/* Start resolving host (both families, TCP) for port. Returns NULL when
 * the request could not be started (out of memory or threads). */
struct resolve_req *resolve_start(struct ev_loop *loop, const char *host,
				  uint16_t port, resolve_cb *cb, void *arg);

/* The callback will not be called; the request is freed when done. */
void resolve_cancel(struct resolve_req *req);

/* Blocking form, for start-up. Returns 0 or EAI_*; *out is malloc'ed
 * (free() it). IPv4 answers come before IPv6 ones only when the
 * system's address ordering says so (gai.conf). */
int resolve_now(const char *host, uint16_t port, union sockname **out,
		size_t *n);

const char *resolve_strerror(int err);

#endif
