/* listener: bind/listen and the accept loop. Every client is accepted,
 * even one we will refuse: a refused client gets a proper SMTP reply
 * (554/421) from its session rather than a reset. Only when file
 * descriptors run short do we stop accepting; then the kernel backlog
 * holds the clients until a timer resumes us. */
#include "listener.h"

#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "acl.h"
#include "container.h"
#include "log.h"
#include "session.h"

#define LISTENER_BACKLOG 1024
/* Clients accepted per wake-up: drains a burst without starving the
 * sessions already open. */
#define LISTENER_BURST 64
#define LISTENER_PAUSE_SECS 0.25
/* fds kept back for logging, resolving, pipes of open sessions... */
#define LISTENER_FD_RESERVE 16
#define LISTENER_WARN_EVERY 10.0

struct listener {
	struct listener *next;
	struct listener **pprev;
	struct ev_loop *loop;
	ev_io io;
	int fd;
	bool wildcard; /* bound to 0.0.0.0 or [::]: ask the kernel for local */
	union sockname addr;
	struct sess_forward *fwd;
};

static struct listener *listener_all;
static unsigned listener_max_conn = 10000;
static unsigned listener_fd_budget;
static bool listener_paused;
static ev_timer listener_resume_timer;
static struct ev_loop *listener_loop;
static ev_tstamp listener_last_warn = -LISTENER_WARN_EVERY;
static bool listener_reuseport;

void listener_set_reuseport(bool on)
{
	listener_reuseport = on;
}

void listener_set_limits(unsigned max_connections, unsigned fd_budget)
{
	listener_max_conn = max_connections;
	listener_fd_budget = fd_budget > LISTENER_FD_RESERVE ?
				     fd_budget - LISTENER_FD_RESERVE :
				     0;
}

static bool listener_is_wildcard(const union sockname *a)
{
	if (a->sa.sa_family == AF_INET)
		return a->in4.sin_addr.s_addr == htonl(INADDR_ANY);
	return IN6_IS_ADDR_UNSPECIFIED(&a->in6.sin6_addr);
}

struct listener *listener_open(const union sockname *addr)
{
	struct listener *l;
	int fd, one = 1, saved;

	fd = socket(addr->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    0);
	if (fd == -1)
		return NULL;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1)
		goto fail;
	/* Each worker process binds its own socket; the kernel spreads the
	 * clients over them. */
	if (listener_reuseport &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1)
		goto fail;
	/* [::] must not also take IPv4, so it can sit beside 0.0.0.0. */
	if (addr->sa.sa_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == -1)
		goto fail;
	if (bind(fd, &addr->sa, addr_len(addr)) == -1)
		goto fail;
	if (listen(fd, LISTENER_BACKLOG) == -1)
		goto fail;
	l = calloc(1, sizeof(*l));
	if (l == NULL)
		goto fail;
	l->fd = fd;
	l->addr = *addr;
	l->wildcard = listener_is_wildcard(addr);
	return l;
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return NULL;
}

static void listener_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct listener *l;

	(void)w;
	(void)revents;
	if (listener_fd_budget > 0 && sess_fds() >= listener_fd_budget) {
		ev_timer_again(loop, &listener_resume_timer);
		return;
	}
	listener_paused = false;
	ev_timer_stop(loop, &listener_resume_timer);
	for (l = listener_all; l != NULL; l = l->next)
		ev_io_start(loop, &l->io);
}

/* Stop every accept watcher (not just this one: all share the fds). */
static void listener_pause(struct ev_loop *loop, const char *why)
{
	struct listener *l;

	for (l = listener_all; l != NULL; l = l->next)
		ev_io_stop(loop, &l->io);
	if (!listener_paused) {
		listener_paused = true;
		ev_timer_init(&listener_resume_timer, listener_resume_cb,
			      LISTENER_PAUSE_SECS, LISTENER_PAUSE_SECS);
		ev_timer_start(loop, &listener_resume_timer);
	}
	if (ev_now(loop) - listener_last_warn >= LISTENER_WARN_EVERY) {
		listener_last_warn = ev_now(loop);
		log_msg(LOG_LVL_WARN, "accept_paused",
			"%s; %u sessions open, accepting again when fds free up",
			why, sess_active());
	}
}

static enum sess_admit listener_admit(const struct forward_cfg *cfg,
				      const union sockname *client,
				      bool *counted)
{
	*counted = false;
	if (!acl_permits(&cfg->acl, client))
		return SESS_DENIED;
	if (sess_total() >= listener_max_conn)
		return SESS_LIMIT_TOTAL;
	if (cfg->max_per_ip > 0) {
		if (!acl_count_take(client, cfg->max_per_ip))
			return SESS_LIMIT_IP;
		*counted = true;
	}
	return SESS_ADMIT;
}

static void listener_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener *l = container_of(w, struct listener, io);
	int i;

	(void)revents;
	for (i = 0; i < LISTENER_BURST; i++) {
		union sockname client, local;
		socklen_t len = sizeof(client);
		enum sess_admit admit;
		bool counted;
		int fd;

		if (listener_fd_budget > 0 && sess_fds() + 2 > listener_fd_budget) {
			listener_pause(loop, "file descriptor budget reached");
			return;
		}
		fd = accept4(l->fd, &client.sa, &len,
			     SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			switch (errno) {
			case EAGAIN:
				return;
			case EINTR:
			case ECONNABORTED:
			case EPROTO:
				continue;
			case EMFILE:
			case ENFILE:
			case ENOBUFS:
			case ENOMEM:
				listener_pause(loop, strerror(errno));
				return;
			default:
				log_msg(LOG_LVL_ERROR, "accept", "%s",
					strerror(errno));
				return;
			}
		}
		local = l->addr;
		if (l->wildcard) {
			len = sizeof(local);
			if (getsockname(fd, &local.sa, &len) == -1)
				local = l->addr;
		}
		admit = listener_admit(l->fwd->cfg, &client, &counted);
		sess_start(loop, l->fwd, fd, &client, &local, admit, counted);
	}
}

void listener_serve(struct listener *l, struct ev_loop *loop,
		    struct sess_forward *fwd)
{
	sess_forward_ref(fwd);
	if (l->fwd != NULL) {
		sess_forward_unref(l->fwd);
		l->fwd = fwd;
		return;
	}
	l->fwd = fwd;
	l->loop = loop;
	listener_loop = loop;
	ev_io_init(&l->io, listener_accept_cb, l->fd, EV_READ);
	l->next = listener_all;
	if (listener_all != NULL)
		listener_all->pprev = &l->next;
	listener_all = l;
	l->pprev = &listener_all;
	if (!listener_paused)
		ev_io_start(loop, &l->io);
}

void listener_close(struct listener *l)
{
	if (l == NULL)
		return;
	if (l->loop != NULL) {
		ev_io_stop(l->loop, &l->io);
		*l->pprev = l->next;
		if (l->next != NULL)
			l->next->pprev = l->pprev;
	}
	if (listener_all == NULL && listener_paused && listener_loop != NULL) {
		ev_timer_stop(listener_loop, &listener_resume_timer);
		listener_paused = false;
	}
	close(l->fd);
	sess_forward_unref(l->fwd);
	free(l);
}

const union sockname *listener_addr(const struct listener *l)
{
	return &l->addr;
}

int listener_fd(const struct listener *l)
{
	return l->fd;
}
