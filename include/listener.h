/* listener: listening sockets and the accept loop. Each accepted client
 * goes through the acl (deny/allow, per-address and total limits) and
 * then to a session. The backlog is drained a bounded number of
 * connections per wake-up; on EMFILE/ENFILE, or when the fd budget is
 * spent, every listener pauses and a timer resumes them. */
#ifndef SMTPFWD_LISTENER_H
#define SMTPFWD_LISTENER_H

#include <stdbool.h>

#include "addr.h"
#include "config.h"

struct ev_loop;
struct listener;
struct sess_forward;

/* socket, bind, listen. Returns NULL with errno set. */
struct listener *listener_open(const union sockname *addr);

/* Start accepting for this forward (the listener takes a reference). A
 * later call swaps the forward (reload); sessions keep the old one. */
void listener_serve(struct listener *l, struct ev_loop *loop,
		    struct sess_forward *fwd);

/* Stop accepting and close the socket (open sessions are untouched). */
void listener_close(struct listener *l);

const union sockname *listener_addr(const struct listener *l);
int listener_fd(const struct listener *l);

/* Bind with SO_REUSEPORT (several worker processes on one port). */
void listener_set_reuseport(bool on);

/* Process-wide limits the accept loop applies. */
void listener_set_limits(unsigned max_connections, unsigned fd_budget);

#endif
