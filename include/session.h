/* session: one client connection from accept to the summary log line.
 * Connects the backend (failover, timeouts), sends the PROXY header,
 * watches the SMTP greeting and EHLO, then hands the bytes to the pump.
 * Owns every fd, watcher, timer, buffer and pipe of the connection;
 * sess_close() is the one teardown. */
#ifndef SMTPFWD_SESSION_H
#define SMTPFWD_SESSION_H

#include <stdbool.h>
#include <stddef.h>

#include "addr.h"
#include "config.h"

struct ev_loop;
struct backend;
struct tls_ctx;
struct stats_fwd;

/* One forward as its sessions see it. Reference-counted: the listener
 * holds one reference, each session another, so a reload can swap in a
 * new forward while old sessions finish with the old one. */
struct sess_forward {
	const struct forward_cfg *cfg;
	struct config *config; /* kept alive through config_ref() */
	struct backend **backends;
	size_t nbackends;
	struct tls_ctx *tls; /* certificates as read at start or reload */
	struct stats_fwd *stats; /* counters, shared across reloads */
	unsigned refs;
};

/* Resolves backends, loads certificates. NULL with a message in err. */
struct sess_forward *sess_forward_new(struct ev_loop *loop,
				      struct config *config,
				      const struct forward_cfg *cfg, char *err,
				      size_t errlen);
void sess_forward_ref(struct sess_forward *f);
void sess_forward_unref(struct sess_forward *f);

/* Why the listener admitted or refused the client. */
enum sess_admit {
	SESS_ADMIT, /* forward it */
	SESS_DENIED, /* acl: 554 5.7.1 */
	SESS_LIMIT_IP, /* max_per_ip: 421 4.7.0 */
	SESS_LIMIT_TOTAL, /* max_connections: 421 4.7.0 */
};

/* Take over an accepted, non-blocking socket. counted: acl_count_take()
 * succeeded for this client and the session must put it back. */
void sess_start(struct ev_loop *loop, struct sess_forward *fwd, int fd,
		const union sockname *client, const union sockname *local,
		enum sess_admit admit, bool counted);

/* Sessions open now (forwarding or replying) in this process. */
unsigned sess_active(void);
/* ... and in all worker processes together (max_connections). */
unsigned sess_total(void);
/* Count the total in memory shared with workers forked later. */
int sess_share_total(void);
/* File descriptors sessions hold (sockets and pipes). */
unsigned sess_fds(void);

/* End every session now (shutdown timeout reached). */
void sess_close_all(const char *reason);

/* Called (once per time) when the last open session has ended. */
void sess_on_empty(void (*cb)(void *arg), void *arg);

#endif
