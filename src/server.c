/* server: owns the event loop, the current configuration and its
 * listeners. Start-up binds every listener before anything else can
 * fail halfway; reload builds the new set beside the old one and swaps
 * (a listener whose address is unchanged keeps its socket, so no client
 * is refused during a reload); shutdown closes listeners at once and
 * lets sessions drain. */
#include "server.h"

#include <errno.h>
#include <ev.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "acl.h"
#include "buffer.h"
#include "listener.h"
#include "log.h"
#include "pipepool.h"
#include "pump.h"
#include "session.h"
#include "stats.h"

/* Pipes kept for reuse: enough for bursts, small enough that an idle
 * daemon holds few fds and little kernel memory. */
#define SERVER_PIPES_POOLED 64

/* One configuration as it is being served. */
struct server_gen {
	struct config *cfg;
	struct sess_forward **fwd; /* one per cfg->fwd */
	struct listener **ls; /* flat, in config order */
	struct stats_fwd **stats; /* one per cfg->fwd, for /health */
	size_t nls;
};

struct server {
	struct ev_loop *loop;
	const char *path;
	struct server_gen cur;
	ev_signal sigterm;
	ev_signal sigint;
	ev_signal sighup;
	ev_timer drain_timer;
	bool draining;
	unsigned fd_limit;
	unsigned index; /* worker number; 0 also serves the stats endpoint */
	bool managed; /* a worker of a master: SIGQUIT, not a second
		       * SIGTERM, means stop now */
	ev_signal sigquit;
};

static void server_gen_free(struct server_gen *g)
{
	size_t i;

	for (i = 0; i < g->nls; i++)
		listener_close(g->ls[i]);
	free(g->ls);
	if (g->fwd != NULL)
		for (i = 0; i < g->cfg->nfwd; i++)
			sess_forward_unref(g->fwd[i]);
	free(g->fwd);
	free(g->stats);
	config_unref(g->cfg);
	memset(g, 0, sizeof(*g));
}

/* The listener bound to addr in old, if any; take: remove it there. */
static struct listener *server_find_listener(struct server_gen *old,
					     const union sockname *addr,
					     bool take)
{
	size_t i;

	for (i = 0; old != NULL && i < old->nls; i++) {
		if (old->ls[i] != NULL &&
		    addr_equal(listener_addr(old->ls[i]), addr)) {
			struct listener *l = old->ls[i];

			if (take)
				old->ls[i] = NULL;
			return l;
		}
	}
	return NULL;
}

/* Build the forwards and listeners of g->cfg. Two passes so that a
 * failure changes nothing: first open the sockets old does not have
 * (and resolve backends), then take over old's sockets and serve.
 * Returns 0, or -1 (logged) with old untouched. */
static int server_gen_open(struct server *srv, struct server_gen *g,
			   struct server_gen *old)
{
	const struct config *cfg = g->cfg;
	size_t i, j, k, n = 0;
	char buf[512];

	for (i = 0; i < cfg->nfwd; i++)
		n += cfg->fwd[i].nlisten;
	g->fwd = calloc(cfg->nfwd, sizeof(*g->fwd));
	g->ls = calloc(n, sizeof(*g->ls));
	g->stats = calloc(cfg->nfwd, sizeof(*g->stats));
	if (g->fwd == NULL || g->ls == NULL || g->stats == NULL)
		goto nomem;
	g->nls = n;
	for (i = 0, k = 0; i < cfg->nfwd; i++) {
		const struct forward_cfg *f = &cfg->fwd[i];

		g->fwd[i] = sess_forward_new(srv->loop, g->cfg, f, buf,
					     sizeof(buf));
		if (g->fwd[i] == NULL) {
			log_msg(LOG_LVL_ERROR, "config", "%s:%d: [forward %s]: %s",
				cfg->path, f->line, f->name, buf);
			return -1;
		}
		g->stats[i] = g->fwd[i]->stats;
		for (j = 0; j < f->nlisten; j++, k++) {
			const union sockname *a = &f->listen[j].sa;
			int e;

			if (server_find_listener(old, a, false) != NULL)
				continue;
			g->ls[k] = listener_open(a);
			if (g->ls[k] != NULL)
				continue;
			e = errno;
			log_msg(LOG_LVL_ERROR, "listen",
				"forward %s: listen %s: %s%s", f->name,
				addr_format(a, buf, sizeof(buf)), strerror(e),
				e == EACCES && geteuid() != 0 ?
					" (ports below 1024 need root or CAP_NET_BIND_SERVICE)" :
					"");
			return -1;
		}
	}
	for (i = 0, k = 0; i < cfg->nfwd; i++) {
		const struct forward_cfg *f = &cfg->fwd[i];

		for (j = 0; j < f->nlisten; j++, k++) {
			const union sockname *a = &f->listen[j].sa;
			struct log_line ll;

			if (g->ls[k] == NULL)
				g->ls[k] = server_find_listener(old, a, true);
			listener_serve(g->ls[k], srv->loop, g->fwd[i]);
			log_begin(&ll, LOG_LVL_INFO, "listen");
			log_str(&ll, "forward", f->name);
			log_str(&ll, "addr", addr_format(a, buf, sizeof(buf)));
			log_end(&ll);
		}
	}
	stats_set_current(g->stats, cfg->nfwd);
	return 0;
nomem:
	log_msg(LOG_LVL_ERROR, "config", "out of memory");
	return -1;
}

/* (Re)open the metrics endpoint when its address changed. */
static int server_stats(struct server *srv, const struct config *old)
{
	const struct config *cfg = srv->cur.cfg;
	char buf[ADDR_STRLEN];

	if (srv->index != 0)
		return 0; /* one worker answers; the counters are shared */
	if (old != NULL && old->has_stats_listen == cfg->has_stats_listen &&
	    (!cfg->has_stats_listen ||
	     addr_equal(&old->stats_listen.sa, &cfg->stats_listen.sa)))
		return 0;
	stats_close();
	if (!cfg->has_stats_listen)
		return 0;
	if (stats_listen(srv->loop, &cfg->stats_listen.sa) == -1) {
		log_msg(LOG_LVL_ERROR, "stats", "stats_listen %s: %s",
			addr_format(&cfg->stats_listen.sa, buf, sizeof(buf)),
			strerror(errno));
		return -1;
	}
	log_msg(LOG_LVL_INFO, "stats", "serving /metrics and /health on %s",
		addr_format(&cfg->stats_listen.sa, buf, sizeof(buf)));
	return 0;
}

static void server_apply_limits(struct server *srv)
{
	const struct config *cfg = srv->cur.cfg;

	log_setup(cfg->log_level, cfg->log_format, cfg->syslog);
	listener_set_limits(cfg->max_connections, srv->fd_limit);
}

static void server_reload(struct server *srv)
{
	struct config_diag diag = { 0 };
	struct server_gen next = { 0 };
	struct config *cfg, *old;

	if (srv->path == NULL) {
		log_msg(LOG_LVL_INFO, "reload",
			"no configuration file (command-line mode): nothing to re-read");
		return;
	}
	cfg = config_load(srv->path, &diag);
	if (cfg == NULL) {
		log_text_lines(LOG_LVL_ERROR, "config", diag.text);
		log_msg(LOG_LVL_ERROR, "reload",
			"%s: %u error(s); keeping the running configuration",
			srv->path, diag.errors);
		config_diag_free(&diag);
		return;
	}
	log_text_lines(LOG_LVL_WARN, "config", diag.text);
	config_diag_free(&diag);
	next.cfg = cfg;
	if (server_gen_open(srv, &next, &srv->cur) == -1) {
		server_gen_free(&next);
		log_msg(LOG_LVL_ERROR, "reload",
			"%s: keeping the running configuration", srv->path);
		return;
	}
	config_ref(srv->cur.cfg);
	old = srv->cur.cfg;
	server_gen_free(&srv->cur); /* closes listeners not taken over */
	srv->cur = next;
	server_apply_limits(srv);
	server_stats(srv, old); /* a failure is logged; mail flows on */
	config_unref(old);
	log_msg(LOG_LVL_INFO, "reload", "%s: %zu forward(s), %zu listener(s)",
		srv->path, cfg->nfwd, next.nls);
}

static void server_stop_loop(void *arg)
{
	struct server *srv = arg;

	if (srv->draining)
		ev_break(srv->loop, EVBREAK_ALL);
}

static void server_drain_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	log_msg(LOG_LVL_WARN, "shutdown",
		"shutdown_timeout reached: closing %u open session(s)",
		sess_active());
	sess_close_all("shutdown");
	ev_break(loop, EVBREAK_ALL);
}

static void server_shutdown(struct server *srv, int sig)
{
	size_t i;

	if (srv->draining) {
		log_msg(LOG_LVL_WARN, "shutdown", "%s again: closing %u session(s) now",
			strsignal(sig), sess_active());
		sess_close_all("shutdown");
		ev_break(srv->loop, EVBREAK_ALL);
		return;
	}
	srv->draining = true;
	for (i = 0; i < srv->cur.nls; i++) {
		listener_close(srv->cur.ls[i]);
		srv->cur.ls[i] = NULL;
	}
	log_msg(LOG_LVL_INFO, "shutdown",
		"%s: listeners closed, %u session(s) draining (up to %gs)",
		strsignal(sig), sess_active(), srv->cur.cfg->shutdown_timeout);
	if (sess_active() == 0) {
		ev_break(srv->loop, EVBREAK_ALL);
		return;
	}
	ev_timer_init(&srv->drain_timer, server_drain_timeout,
		      srv->cur.cfg->shutdown_timeout, 0);
	ev_timer_start(srv->loop, &srv->drain_timer);
}

static void server_signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct server *srv = ev_userdata(loop);

	(void)revents;
	if (w->signum == SIGHUP) {
		if (!srv->draining)
			server_reload(srv);
		return;
	}
	if (w->signum == SIGQUIT) {
		srv->draining = true; /* the master says: now */
		server_shutdown(srv, SIGQUIT);
		return;
	}
	/* A worker gets SIGTERM twice when the whole process group is
	 * signalled (systemd, Ctrl-C): once from the kernel, once from the
	 * master. Only the master decides that a drain is cut short. */
	if (srv->managed && srv->draining)
		return;
	server_shutdown(srv, w->signum);
}

/* Raise the soft fd limit to the hard one: each session needs two
 * sockets and, while bytes move, a pipe. */
static unsigned server_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return 1024;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 1u << 24)
		return 1u << 24;
	return (unsigned)rl.rlim_cur;
}

/* Drop root after binding. Refuses (returns -1, logged) unless the drop
 * is complete and cannot be undone. */
static int server_drop_privileges(const char *user, const char *group)
{
	struct passwd *pw;
	gid_t gid;

	if (user == NULL)
		return 0;
	if (geteuid() != 0) {
		log_msg(LOG_LVL_INFO, "privileges",
			"not root: user = %s ignored, running as uid %u", user,
			(unsigned)geteuid());
		return 0;
	}
	errno = 0;
	pw = getpwnam(user);
	if (pw == NULL) {
		log_msg(LOG_LVL_ERROR, "privileges", "user %s: %s", user,
			errno != 0 ? strerror(errno) : "no such user");
		return -1;
	}
	gid = pw->pw_gid;
	if (group != NULL) {
		struct group *gr;

		errno = 0;
		gr = getgrnam(group);
		if (gr == NULL) {
			log_msg(LOG_LVL_ERROR, "privileges", "group %s: %s", group,
				errno != 0 ? strerror(errno) : "no such group");
			return -1;
		}
		gid = gr->gr_gid;
	}
	if (setgroups(1, &gid) == -1 || setgid(gid) == -1 ||
	    setuid(pw->pw_uid) == -1) {
		log_msg(LOG_LVL_ERROR, "privileges", "cannot become %s: %s",
			user, strerror(errno));
		return -1;
	}
	if (pw->pw_uid != 0 && (setuid(0) != -1 || geteuid() == 0 ||
				getegid() != gid)) {
		log_msg(LOG_LVL_ERROR, "privileges",
			"still able to regain root after dropping to %s", user);
		return -1;
	}
	log_msg(LOG_LVL_INFO, "privileges",
		"running as %s (uid %u, gid %u); a reload cannot bind ports below 1024",
		user, (unsigned)pw->pw_uid, (unsigned)gid);
	return 0;
}

/* One worker: the event loop and everything on it. */
static int server_worker(struct config *cfg, const char *path, unsigned index,
			 bool managed)
{
	struct server srv = { .index = index, .managed = managed };
	int status = 0;

	srv.loop = ev_default_loop(EVFLAG_AUTO);
	if (srv.loop == NULL) {
		log_msg(LOG_LVL_ERROR, "start", "cannot initialise libev");
		config_unref(cfg);
		return 1;
	}
	ev_set_userdata(srv.loop, &srv);
	srv.path = path;
	srv.cur.cfg = cfg;
	signal(SIGPIPE, SIG_IGN);
	srv.fd_limit = server_raise_nofile();
	pipepool_configure(SERVER_PIPES_POOLED, 0);
	server_apply_limits(&srv);

	if (server_gen_open(&srv, &srv.cur, NULL) == -1 ||
	    server_stats(&srv, NULL) == -1 ||
	    server_drop_privileges(cfg->user, cfg->group) == -1) {
		status = 1;
		goto out;
	}
	sess_on_empty(server_stop_loop, &srv);
	ev_signal_init(&srv.sigterm, server_signal_cb, SIGTERM);
	ev_signal_init(&srv.sigint, server_signal_cb, SIGINT);
	ev_signal_init(&srv.sighup, server_signal_cb, SIGHUP);
	ev_signal_start(srv.loop, &srv.sigterm);
	ev_signal_start(srv.loop, &srv.sigint);
	ev_signal_start(srv.loop, &srv.sighup);
	if (managed) {
		ev_signal_init(&srv.sigquit, server_signal_cb, SIGQUIT);
		ev_signal_start(srv.loop, &srv.sigquit);
	}
	log_msg(LOG_LVL_INFO, "ready",
		"smtpfwd %s: %zu forward(s), %zu listener(s), splice %s, worker %u (pid %ld)",
		SMTPFWD_VERSION, cfg->nfwd, srv.cur.nls,
		pump_splice_supported() ? "on" : "off", index, (long)getpid());

	ev_run(srv.loop, 0);
	log_msg(LOG_LVL_INFO, "exit", "stopped");
out:
	sess_close_all("shutdown");
	stats_close();
	server_gen_free(&srv.cur);
	pipepool_drain();
	buffer_trim();
	ev_loop_destroy(srv.loop);
	return status;
}

/* ---- several workers ----
 *
 * workers > 1 runs that many worker processes, each the whole single-loop
 * server above with its own SO_REUSEPORT sockets. Processes rather than
 * threads: the modules keep per-loop state in plain statics, a crashed
 * worker takes no other down, and the few things that must be counted
 * across workers (open sessions for max_connections, per-address counts
 * for max_per_ip, the metrics) live in shared memory taken before the
 * fork. The master only forks, forwards signals and restarts a worker
 * that died; it never touches a client. */

#define SERVER_RESPAWN_SECS 1

struct server_child {
	pid_t pid; /* 0: not running */
	time_t respawn_at; /* when to start it again, 0: not due */
};

static pid_t server_spawn(struct config *cfg, const char *path, unsigned i,
			  const sigset_t *old)
{
	pid_t pid = fork();

	if (pid == 0) {
		sigprocmask(SIG_SETMASK, old, NULL);
		exit(server_worker(config_ref(cfg), path, i, true));
	}
	if (pid == -1)
		log_msg(LOG_LVL_ERROR, "worker", "fork worker %u: %s", i,
			strerror(errno));
	return pid == -1 ? 0 : pid;
}

static void server_signal_children(struct server_child *c, unsigned n, int sig)
{
	unsigned i;

	for (i = 0; i < n; i++)
		if (c[i].pid != 0)
			kill(c[i].pid, sig);
}

static int server_master(struct config *cfg, const char *path, unsigned n)
{
	struct server_child *c = calloc(n, sizeof(*c));
	sigset_t set, old;
	bool draining = false;
	unsigned i, alive;
	int status = 0;

	if (c == NULL || acl_count_share(2 * (size_t)cfg->max_connections) == -1 ||
	    sess_share_total() == -1 || stats_share() == -1) {
		log_msg(LOG_LVL_ERROR, "start", "cannot set up %u workers: %s", n,
			strerror(errno));
		free(c);
		config_unref(cfg);
		return 1;
	}
	listener_set_reuseport(true);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, &old);
	log_msg(LOG_LVL_INFO, "start", "starting %u worker processes", n);
	for (i = 0; i < n; i++)
		c[i].pid = server_spawn(cfg, path, i, &old);

	for (;;) {
		struct timespec tick = { SERVER_RESPAWN_SECS, 0 };
		siginfo_t info;
		int sig = sigtimedwait(&set, &info, &tick);
		time_t now = time(NULL);
		pid_t pid;
		int wstatus;

		if (sig == SIGTERM || sig == SIGINT) {
			if (!draining) {
				log_msg(LOG_LVL_INFO, "shutdown",
					"%s: draining %u workers", strsignal(sig), n);
				server_signal_children(c, n, SIGTERM);
			} else {
				log_msg(LOG_LVL_WARN, "shutdown",
					"%s again: stopping the workers now",
					strsignal(sig));
				server_signal_children(c, n, SIGQUIT);
			}
			draining = true;
		} else if (sig == SIGHUP && !draining) {
			struct config_diag diag = { 0 };
			struct config *next = path != NULL ? config_load(path, &diag) : NULL;

			if (next != NULL) {
				config_unref(cfg);
				cfg = next;
				server_signal_children(c, n, SIGHUP);
			} else if (path != NULL) {
				log_text_lines(LOG_LVL_ERROR, "config", diag.text);
				log_msg(LOG_LVL_ERROR, "reload",
					"%s: %u error(s); workers keep the running configuration",
					path, diag.errors);
			}
			config_diag_free(&diag);
		}
		while ((pid = waitpid(-1, &wstatus, WNOHANG)) > 0) {
			for (i = 0; i < n && c[i].pid != pid; i++)
				;
			if (i == n)
				continue;
			c[i].pid = 0;
			if (draining) {
				if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0)
					status = 1;
				continue;
			}
			if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) != 0) {
				/* It refused to start (a socket it cannot bind,
				 * say): a new one would fail the same way. */
				log_msg(LOG_LVL_ERROR, "worker",
					"worker %u exited with status %d: stopping all",
					i, WEXITSTATUS(wstatus));
				draining = true;
				status = 1;
				server_signal_children(c, n, SIGTERM);
				continue;
			}
			log_msg(LOG_LVL_ERROR, "worker",
				"worker %u (pid %ld) %s %d; starting it again", i,
				(long)pid,
				WIFSIGNALED(wstatus) ? "killed by signal" : "exited with",
				WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) :
						       WEXITSTATUS(wstatus));
			c[i].respawn_at = now + SERVER_RESPAWN_SECS;
		}
		for (i = 0, alive = 0; i < n; i++) {
			if (c[i].pid != 0) {
				alive++;
			} else if (!draining && c[i].respawn_at != 0 &&
				   now >= c[i].respawn_at) {
				c[i].respawn_at = 0;
				c[i].pid = server_spawn(cfg, path, i, &old);
				alive += c[i].pid != 0;
			}
		}
		if (draining && alive == 0)
			break;
	}
	log_msg(LOG_LVL_INFO, "exit", "all workers stopped");
	free(c);
	config_unref(cfg);
	return status;
}

int server_run(struct config *cfg, const char *path)
{
	unsigned n = cfg->workers;

	if (n == 0) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);

		n = cpus > 0 ? (unsigned)cpus : 1;
	}
	if (n == 1)
		return server_worker(cfg, path, 0, false);
	return server_master(cfg, path, n);
}
