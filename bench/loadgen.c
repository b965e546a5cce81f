/*
 * loadgen: the load tool of smtpfwd's benchmark (bench/run builds it).
 *
 *   loadgen [-t SECS] [-j THREADS] serve PORT    (aliases: sink, echo)
 *   loadgen [-t SECS] bulk HOST PORT BYTES STREAMS
 *   loadgen [-t SECS] pingpong HOST PORT COUNT
 *   loadgen [-t SECS] idle HOST PORT N [N2 ...]
 *   loadgen [-t SECS] check HOST PORT
 *
 * The server speaks a small SMTP-shaped protocol, so that a forwarder that
 * watches the SMTP greeting and the first command (smtpfwd) leaves its
 * inspection phase after one exchange, exactly as with a mail server:
 *
 *   server: 220 loadgen ready          (on accept)
 *   client: EHLO bench        server: 250 loadgen
 *   client: BULK <n> + n bytes server: 250 <bytes received>   (byte count check)
 *   client: ECHO              server: 250 echo, then echoes every byte
 *   client: IDLE              server: 250 idle; an EOF later is answered
 *                                     with an abortive close (RST)
 *   client: QUIT              server: 221 bye, close
 *   anything else             server: 250 ok
 *
 * The RST close of IDLE connections (and the idle client's own RST close)
 * leaves no TIME_WAIT sockets behind, which would otherwise expire in the
 * middle of the next slab measurement.
 *
 * Every mode stops by itself: -t sets a wall-clock limit (SIGALRM ends the
 * process with status 3), every client socket has send/receive timeouts,
 * and the servers and the idle client die with their parent.
 *
 * Output is one line of key=value pairs (servers: "ready port=P"; idle:
 * "ready n=N" per stage and "verified n=N" at the end).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define LG_BUF (256 * 1024)     /* server read buffer per thread */
#define LG_SENDBUF (1024 * 1024) /* bulk client send buffer (static) */
#define LG_LINE 256
#define LG_IO_SECS 30           /* per-socket send/receive timeout */
#define LG_INFLIGHT 128         /* idle client: connects in progress at once */
#define LG_MAX_THREADS 64

static unsigned lg_limit_secs;

static void lg_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void lg_die(const char *fmt, ...)
{
	va_list ap;

	fputs("loadgen: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void lg_alarm(int sig)
{
	static const char msg[] = "loadgen: time limit reached\n";

	(void)sig;
	(void)!write(2, msg, sizeof(msg) - 1);
	_exit(3);
}

static double lg_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void lg_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void lg_resolve(const char *host, const char *port, struct sockaddr_storage *ss,
		       socklen_t *len)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
	int rc = getaddrinfo(host, port, &hints, &ai);

	if (rc != 0)
		lg_die("resolve %s:%s: %s", host, port, gai_strerror(rc));
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*len = ai->ai_addrlen;
	freeaddrinfo(ai);
}

static void lg_timeouts(int fd)
{
	struct timeval tv = { .tv_sec = LG_IO_SECS };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static void lg_nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* RST instead of FIN: no TIME_WAIT left behind. */
static void lg_abort_close(int fd)
{
	struct linger lin = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lin, sizeof(lin));
	close(fd);
}

static int lg_send_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n > 0) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);

		if (w == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* ---- blocking client connection with a line reader ---- */

struct lg_conn {
	int fd;
	char buf[LG_LINE];
	size_t len;
};

static int lg_connect(struct lg_conn *c, const struct sockaddr_storage *ss, socklen_t sl)
{
	c->len = 0;
	c->fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd == -1)
		return -1;
	lg_timeouts(c->fd);
	if (connect(c->fd, (const struct sockaddr *)ss, sl) == -1) {
		int e = errno;

		close(c->fd);
		c->fd = -1;
		errno = e;
		return -1;
	}
	return 0;
}

/* Reads one reply line (without CRLF) into out; -1 on EOF, error, timeout
 * or an over-long line. The server sends nothing unasked, so the buffer
 * never holds more than the current line. */
static int lg_read_line(struct lg_conn *c, char *out, size_t outsz)
{
	for (;;) {
		char *nl = memchr(c->buf, '\n', c->len);

		if (nl != NULL) {
			size_t n = (size_t)(nl - c->buf) + 1;
			size_t l = n;

			while (l > 0 && (c->buf[l - 1] == '\n' || c->buf[l - 1] == '\r'))
				l--;
			if (l >= outsz)
				l = outsz - 1;
			memcpy(out, c->buf, l);
			out[l] = '\0';
			memmove(c->buf, c->buf + n, c->len - n);
			c->len -= n;
			return 0;
		}
		if (c->len == sizeof(c->buf))
			return -1;
		ssize_t r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);

		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		c->len += (size_t)r;
	}
}

/* Sends cmd (may be NULL) and expects a reply starting with code. */
static int lg_exchange(struct lg_conn *c, const char *cmd, const char *code, char *reply,
		       size_t rsz)
{
	char tmp[LG_LINE];

	if (reply == NULL) {
		reply = tmp;
		rsz = sizeof(tmp);
	}
	if (cmd != NULL && lg_send_all(c->fd, cmd, strlen(cmd)) == -1)
		return -1;
	if (lg_read_line(c, reply, rsz) == -1)
		return -1;
	return strncmp(reply, code, strlen(code)) == 0 ? 0 : -1;
}

static int lg_hello(struct lg_conn *c)
{
	if (lg_exchange(c, NULL, "220", NULL, 0) == -1)
		return -1;
	return lg_exchange(c, "EHLO bench\r\n", "250", NULL, 0);
}

/* ---- server (sink and echo) ---- */

enum lg_mode { LG_CMD, LG_BULK, LG_ECHO, LG_IDLE };

struct lg_sconn {
	int fd;
	enum lg_mode mode;
	uint64_t want, got;
	size_t llen;
	char line[LG_LINE];
};

struct lg_server {
	int lfd;
};

static int lg_reply(struct lg_sconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int lg_reply(struct lg_sconn *c, const char *fmt, ...)
{
	char out[LG_LINE];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(out, sizeof(out), fmt, ap);
	va_end(ap);
	/* Replies are tiny and the peer waits for them: a short write here
	 * means a broken peer. */
	return send(c->fd, out, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) == n ? 0 : -1;
}

/* Writes all of p to a non-blocking socket, waiting for room if needed. */
static int lg_write_wait(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w == -1) {
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };

			if (errno == EINTR)
				continue;
			if (errno != EAGAIN || poll(&pfd, 1, LG_IO_SECS * 1000) != 1)
				return -1;
			continue;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* A complete command line; returns -1 to close the connection. */
static int lg_command(struct lg_sconn *c)
{
	char *l = c->line;

	if (strncasecmp(l, "EHLO", 4) == 0 || strncasecmp(l, "HELO", 4) == 0)
		return lg_reply(c, "250 loadgen\r\n");
	if (strncasecmp(l, "BULK ", 5) == 0) {
		c->want = strtoull(l + 5, NULL, 10);
		c->got = 0;
		c->mode = LG_BULK;
		if (c->want == 0) {
			c->mode = LG_CMD;
			return lg_reply(c, "250 0\r\n");
		}
		return 0;
	}
	if (strncasecmp(l, "ECHO", 4) == 0) {
		c->mode = LG_ECHO;
		lg_nodelay(c->fd);
		return lg_reply(c, "250 echo\r\n");
	}
	if (strncasecmp(l, "IDLE", 4) == 0) {
		c->mode = LG_IDLE;
		return lg_reply(c, "250 idle\r\n");
	}
	if (strncasecmp(l, "QUIT", 4) == 0) {
		lg_reply(c, "221 bye\r\n");
		return -1;
	}
	return lg_reply(c, "250 ok\r\n");
}

/* Feeds received bytes through the state machine; -1 closes. */
static int lg_feed(struct lg_sconn *c, const char *p, size_t n)
{
	while (n > 0) {
		if (c->mode == LG_BULK) {
			uint64_t take = c->want - c->got < n ? c->want - c->got : n;

			c->got += take;
			p += take;
			n -= (size_t)take;
			if (c->got == c->want) {
				c->mode = LG_CMD;
				if (lg_reply(c, "250 %" PRIu64 "\r\n", c->got) == -1)
					return -1;
			}
			continue;
		}
		if (c->mode == LG_ECHO)
			return lg_write_wait(c->fd, p, n);
		/* LG_CMD and LG_IDLE: lines. */
		const char *nl = memchr(p, '\n', n);
		size_t take = nl != NULL ? (size_t)(nl - p) + 1 : n;

		if (c->llen + take >= sizeof(c->line))
			return -1;
		memcpy(c->line + c->llen, p, take);
		c->llen += take;
		p += take;
		n -= take;
		if (nl != NULL) {
			c->line[c->llen] = '\0';
			c->llen = 0;
			if (lg_command(c) == -1)
				return -1;
		}
	}
	return 0;
}

static void lg_sclose(struct lg_sconn *c, bool abort)
{
	if (abort)
		lg_abort_close(c->fd);
	else
		close(c->fd);
	free(c);
}

static void *lg_server_thread(void *arg)
{
	struct lg_server *srv = arg;
	char *buf = malloc(LG_BUF);
	struct epoll_event evs[256];
	struct epoll_event lev = { .events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = NULL };
	int ep = epoll_create1(EPOLL_CLOEXEC);

	if (buf == NULL || ep == -1 || epoll_ctl(ep, EPOLL_CTL_ADD, srv->lfd, &lev) == -1)
		lg_die("epoll: %s", strerror(errno));
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);

		if (n == -1) {
			if (errno == EINTR)
				continue;
			lg_die("epoll_wait: %s", strerror(errno));
		}
		for (int i = 0; i < n; i++) {
			struct lg_sconn *c = evs[i].data.ptr;

			if (c == NULL) {
				/* Drain the backlog, bounded. */
				for (int k = 0; k < 256; k++) {
					int fd = accept4(srv->lfd, NULL, NULL,
							 SOCK_NONBLOCK | SOCK_CLOEXEC);

					if (fd == -1)
						break;
					c = calloc(1, sizeof(*c));
					if (c == NULL) {
						close(fd);
						continue;
					}
					c->fd = fd;
					struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };

					if (lg_reply(c, "220 loadgen ready\r\n") == -1 ||
					    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == -1)
						lg_sclose(c, false);
				}
				continue;
			}
			/* Bounded reads per wake-up keep connections fair. */
			for (int k = 0; k < 16; k++) {
				ssize_t r = recv(c->fd, buf, LG_BUF, 0);

				if (r > 0) {
					if (lg_feed(c, buf, (size_t)r) == -1) {
						lg_sclose(c, false);
						break;
					}
					if ((size_t)r < LG_BUF)
						break;
					continue;
				}
				if (r == -1 && (errno == EAGAIN || errno == EINTR))
					break;
				/* EOF or error: an unfinished BULK still gets its count. */
				if (r == 0 && c->mode == LG_BULK)
					lg_reply(c, "550 %" PRIu64 "\r\n", c->got);
				lg_sclose(c, c->mode == LG_IDLE);
				break;
			}
		}
	}
	return NULL;
}

static int lg_serve(const char *port, unsigned threads)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	struct lg_server srv;
	pthread_t tids[LG_MAX_THREADS];
	int one = 1;

	prctl(PR_SET_PDEATHSIG, SIGTERM);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((uint16_t)atoi(port));
	srv.lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (srv.lfd == -1)
		lg_die("socket: %s", strerror(errno));
	setsockopt(srv.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(srv.lfd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    listen(srv.lfd, 4096) == -1 ||
	    getsockname(srv.lfd, (struct sockaddr *)&sin, &sl) == -1)
		lg_die("listen on port %s: %s", port, strerror(errno));
	if (threads < 1)
		threads = 1;
	if (threads > LG_MAX_THREADS)
		threads = LG_MAX_THREADS;
	for (unsigned i = 0; i < threads; i++)
		if (pthread_create(&tids[i], NULL, lg_server_thread, &srv) != 0)
			lg_die("pthread_create failed");
	printf("ready port=%u\n", ntohs(sin.sin_port));
	fflush(stdout);
	for (unsigned i = 0; i < threads; i++)
		pthread_join(tids[i], NULL);
	return 0;
}

/* ---- bulk ---- */

struct lg_bulk {
	struct sockaddr_storage ss;
	socklen_t sl;
	uint64_t bytes;
	pthread_barrier_t go;
	int failed;
	char why[LG_LINE];
	pthread_mutex_t lock;
};

static char lg_sendbuf[LG_SENDBUF];

static void lg_bulk_fail(struct lg_bulk *b, const char *what)
{
	pthread_mutex_lock(&b->lock);
	if (!b->failed)
		snprintf(b->why, sizeof(b->why), "%s: %s", what, strerror(errno));
	b->failed = 1;
	pthread_mutex_unlock(&b->lock);
}

static void *lg_bulk_thread(void *arg)
{
	struct lg_bulk *b = arg;
	struct lg_conn c;
	char line[LG_LINE], expect[64];
	uint64_t left = b->bytes;
	bool ok = lg_connect(&c, &b->ss, b->sl) == 0 && lg_hello(&c) == 0;

	if (!ok)
		lg_bulk_fail(b, "connect/greeting");
	pthread_barrier_wait(&b->go);
	if (!ok)
		return NULL;
	snprintf(line, sizeof(line), "BULK %" PRIu64 "\r\n", b->bytes);
	if (lg_send_all(c.fd, line, strlen(line)) == -1) {
		lg_bulk_fail(b, "send");
		goto out;
	}
	while (left > 0) {
		size_t n = left < sizeof(lg_sendbuf) ? (size_t)left : sizeof(lg_sendbuf);

		if (lg_send_all(c.fd, lg_sendbuf, n) == -1) {
			lg_bulk_fail(b, "send");
			goto out;
		}
		left -= n;
	}
	snprintf(expect, sizeof(expect), "250 %" PRIu64, b->bytes);
	if (lg_read_line(&c, line, sizeof(line)) == -1) {
		lg_bulk_fail(b, "reading the byte count");
		goto out;
	}
	if (strcmp(line, expect) != 0) {
		errno = 0;
		pthread_mutex_lock(&b->lock);
		snprintf(b->why, sizeof(b->why), "byte count: sent %" PRIu64 ", sink says \"%.64s\"",
			 b->bytes, line);
		b->failed = 1;
		pthread_mutex_unlock(&b->lock);
	}
out:
	close(c.fd);
	return NULL;
}

static int lg_cmd_bulk(const char *host, const char *port, uint64_t total, unsigned streams)
{
	struct lg_bulk b = { .failed = 0 };
	pthread_t tids[LG_MAX_THREADS];
	double t0, t1;

	if (streams < 1 || streams > LG_MAX_THREADS)
		lg_die("streams must be 1..%d", LG_MAX_THREADS);
	lg_resolve(host, port, &b.ss, &b.sl);
	b.bytes = total / streams;
	for (size_t i = 0; i < sizeof(lg_sendbuf); i++)
		lg_sendbuf[i] = (char)('a' + i % 26);
	pthread_mutex_init(&b.lock, NULL);
	pthread_barrier_init(&b.go, NULL, streams + 1);
	for (unsigned i = 0; i < streams; i++)
		if (pthread_create(&tids[i], NULL, lg_bulk_thread, &b) != 0)
			lg_die("pthread_create failed");
	pthread_barrier_wait(&b.go);
	t0 = lg_now();
	for (unsigned i = 0; i < streams; i++)
		pthread_join(tids[i], NULL);
	t1 = lg_now();
	if (b.failed) {
		fprintf(stderr, "loadgen bulk: %s\n", b.why);
		return 1;
	}
	printf("bulk bytes=%" PRIu64 " streams=%u seconds=%.6f gbps=%.3f verified=yes\n",
	       b.bytes * streams, streams, t1 - t0,
	       (double)(b.bytes * streams) * 8 / (t1 - t0) / 1e9);
	return 0;
}

/* ---- ping-pong ---- */

static int lg_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int lg_cmd_pingpong(const char *host, const char *port, unsigned count)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	struct lg_conn c;
	char out[64], in[64];
	unsigned warm = count / 10 < 200 ? 200 : count / 10;
	double *lat = calloc(count ? count : 1, sizeof(double)), sum = 0;

	if (lat == NULL || count == 0)
		lg_die("pingpong: bad count");
	lg_resolve(host, port, &ss, &sl);
	if (lg_connect(&c, &ss, sl) == -1 || lg_hello(&c) == -1 ||
	    lg_exchange(&c, "ECHO\r\n", "250", NULL, 0) == -1)
		lg_die("pingpong: connect/greeting: %s", strerror(errno));
	lg_nodelay(c.fd);
	memset(out, 'p', sizeof(out));
	for (unsigned i = 0; i < warm + count; i++) {
		double t0 = lg_now();
		size_t got = 0;

		if (lg_send_all(c.fd, out, sizeof(out)) == -1)
			lg_die("pingpong: send: %s", strerror(errno));
		while (got < sizeof(in)) {
			ssize_t r = recv(c.fd, in + got, sizeof(in) - got, 0);

			if (r == -1 && errno == EINTR)
				continue;
			if (r <= 0)
				lg_die("pingpong: recv: %s", r == 0 ? "EOF" : strerror(errno));
			got += (size_t)r;
		}
		if (i >= warm)
			lat[i - warm] = (lg_now() - t0) * 1e6;
	}
	close(c.fd);
	for (unsigned i = 0; i < count; i++)
		sum += lat[i];
	qsort(lat, count, sizeof(double), lg_cmp_double);
	printf("pingpong count=%u p50_us=%.2f p99_us=%.2f mean_us=%.2f min_us=%.2f\n", count,
	       lat[count / 2], lat[(size_t)((double)count * 0.99)], sum / count, lat[0]);
	free(lat);
	return 0;
}

/* ---- check ---- */

static int lg_cmd_check(const char *host, const char *port)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	struct lg_conn c;

	lg_resolve(host, port, &ss, &sl);
	if (lg_connect(&c, &ss, sl) == -1 || lg_hello(&c) == -1 ||
	    lg_exchange(&c, "QUIT\r\n", "221", NULL, 0) == -1)
		return 1;
	close(c.fd);
	return 0;
}

/* ---- idle ---- */

/* Steps of one idle connection: what reply it waits for next. */
enum lg_istep { LG_I_CONNECT, LG_I_GREETING, LG_I_EHLO, LG_I_IDLE, LG_I_HELD, LG_I_NOOP };

struct lg_iconn {
	int fd;
	enum lg_istep step;
	unsigned char len;
	char buf[64];
};

struct lg_idle {
	int ep;
	struct sockaddr_storage ss;
	socklen_t sl;
	struct lg_iconn *conns;
	size_t opened, inflight, done;
};

static int lg_idle_open(struct lg_idle *st, struct lg_iconn *c)
{
	struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };

	c->fd = socket(st->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd == -1)
		return -1;
	c->step = LG_I_CONNECT;
	c->len = 0;
	if (connect(c->fd, (struct sockaddr *)&st->ss, st->sl) == -1 && errno != EINPROGRESS)
		return -1;
	return epoll_ctl(st->ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/* Advances c on readiness; returns 1 when it reached its resting step,
 * 0 to keep waiting, -1 on failure. */
static int lg_idle_step(struct lg_idle *st, struct lg_iconn *c)
{
	static const char *const send_after[] = {
		[LG_I_GREETING] = "EHLO bench\r\n",
		[LG_I_EHLO] = "IDLE\r\n",
	};

	if (c->step == LG_I_CONNECT) {
		int e = 0;
		socklen_t el = sizeof(e);
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };

		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &el) == -1 || e != 0) {
			errno = e;
			return -1;
		}
		c->step = LG_I_GREETING;
		return epoll_ctl(st->ep, EPOLL_CTL_MOD, c->fd, &ev) == -1 ? -1 : 0;
	}
	for (;;) {
		ssize_t r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);
		char *nl;

		if (r == -1 && errno == EAGAIN)
			return 0;
		if (r <= 0) {
			if (r == 0)
				errno = ECONNRESET;
			return -1;
		}
		c->len = (unsigned char)(c->len + r);
		c->buf[c->len] = '\0';
		nl = strchr(c->buf, '\n');
		if (nl == NULL) {
			if (c->len >= sizeof(c->buf) - 1)
				return -1;
			continue;
		}
		if (strncmp(c->buf, c->step == LG_I_GREETING ? "220" : "250", 3) != 0) {
			errno = EPROTO;
			return -1;
		}
		c->len = 0;
		switch (c->step) {
		case LG_I_GREETING:
		case LG_I_EHLO:
			if (lg_send_all(c->fd, send_after[c->step], strlen(send_after[c->step])) == -1)
				return -1;
			c->step++;
			continue;
		case LG_I_IDLE:
		case LG_I_NOOP:
			c->step = LG_I_HELD;
			return 1;
		default:
			errno = EPROTO;
			return -1;
		}
	}
}

/* Runs the event loop until `target` connections rest in LG_I_HELD. */
static void lg_idle_run(struct lg_idle *st, size_t target)
{
	struct epoll_event evs[256];

	while (st->done < target) {
		while (st->opened < target && st->inflight < LG_INFLIGHT) {
			if (lg_idle_open(st, &st->conns[st->opened]) == -1)
				lg_die("idle: connection %zu: %s", st->opened + 1, strerror(errno));
			st->opened++;
			st->inflight++;
		}
		int n = epoll_wait(st->ep, evs, 256, 1000);

		if (n == -1 && errno != EINTR)
			lg_die("idle: epoll_wait: %s", strerror(errno));
		for (int i = 0; i < n; i++) {
			struct lg_iconn *c = evs[i].data.ptr;
			int rc = lg_idle_step(st, c);

			if (rc == -1)
				lg_die("idle: connection %zu (step %d): %s",
				       (size_t)(c - st->conns) + 1, (int)c->step, strerror(errno));
			if (rc == 1) {
				st->done++;
				st->inflight--;
			}
		}
	}
}

static int lg_cmd_idle(const char *host, const char *port, char **counts, int ncounts)
{
	struct lg_idle st = { .opened = 0 };
	size_t max = 0;
	char line[64];

	prctl(PR_SET_PDEATHSIG, SIGTERM);
	for (int i = 0; i < ncounts; i++) {
		size_t n = strtoul(counts[i], NULL, 10);

		if (n <= max)
			lg_die("idle: counts must grow");
		max = n;
	}
	lg_resolve(host, port, &st.ss, &st.sl);
	st.conns = calloc(max, sizeof(*st.conns));
	st.ep = epoll_create1(EPOLL_CLOEXEC);
	if (st.conns == NULL || st.ep == -1)
		lg_die("idle: out of memory");
	for (int i = 0; i < ncounts; i++) {
		lg_idle_run(&st, strtoul(counts[i], NULL, 10));
		printf("ready n=%zu\n", st.done);
		fflush(stdout);
		/* Hold until told to go on (a line) or to finish (EOF). */
		if (fgets(line, sizeof(line), stdin) == NULL)
			break;
	}
	/* Still all working? One NOOP round trip on every connection. */
	st.inflight = st.done;
	for (size_t i = 0; i < st.done; i++) {
		struct lg_iconn *c = &st.conns[i];

		c->step = LG_I_NOOP;
		if (lg_send_all(c->fd, "NOOP\r\n", 6) == -1)
			lg_die("idle: connection %zu no longer works: %s", i + 1, strerror(errno));
	}
	size_t held = st.done;

	st.done = 0;
	st.opened = held; /* nothing more to open */
	lg_idle_run(&st, held);
	printf("verified n=%zu\n", st.done);
	fflush(stdout);
	for (size_t i = 0; i < held; i++)
		lg_abort_close(st.conns[i].fd);
	free(st.conns);
	return 0;
}

/* ---- main ---- */

static void lg_usage(void)
{
	fputs("usage: loadgen [-t SECS] [-j THREADS] serve|sink|echo PORT\n"
	      "       loadgen [-t SECS] bulk HOST PORT BYTES STREAMS\n"
	      "       loadgen [-t SECS] pingpong HOST PORT COUNT\n"
	      "       loadgen [-t SECS] idle HOST PORT N [N2 ...]\n"
	      "       loadgen [-t SECS] check HOST PORT\n",
	      stderr);
	exit(2);
}

int main(int argc, char **argv)
{
	unsigned threads = 2;
	int opt;
	const char *cmd;

	while ((opt = getopt(argc, argv, "+t:j:")) != -1) {
		switch (opt) {
		case 't':
			lg_limit_secs = (unsigned)atoi(optarg);
			break;
		case 'j':
			threads = (unsigned)atoi(optarg);
			break;
		default:
			lg_usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		lg_usage();
	cmd = argv[0];
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, lg_alarm);
	lg_raise_nofile();
	if (strcmp(cmd, "serve") == 0 || strcmp(cmd, "sink") == 0 || strcmp(cmd, "echo") == 0) {
		if (argc != 2)
			lg_usage();
		alarm(lg_limit_secs ? lg_limit_secs : 7200);
		return lg_serve(argv[1], threads);
	}
	if (strcmp(cmd, "bulk") == 0 && argc == 5) {
		alarm(lg_limit_secs ? lg_limit_secs : 300);
		return lg_cmd_bulk(argv[1], argv[2], strtoull(argv[3], NULL, 10),
				   (unsigned)atoi(argv[4]));
	}
	if (strcmp(cmd, "pingpong") == 0 && argc == 4) {
		alarm(lg_limit_secs ? lg_limit_secs : 120);
		return lg_cmd_pingpong(argv[1], argv[2], (unsigned)atoi(argv[3]));
	}
	if (strcmp(cmd, "idle") == 0 && argc >= 4) {
		alarm(lg_limit_secs ? lg_limit_secs : 600);
		return lg_cmd_idle(argv[1], argv[2], argv + 3, argc - 3);
	}
	if (strcmp(cmd, "check") == 0 && argc == 3) {
		alarm(lg_limit_secs ? lg_limit_secs : 5);
		return lg_cmd_check(argv[1], argv[2]);
	}
	lg_usage();
}
