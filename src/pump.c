/* pump: one direction of a session. The same function serves both
 * directions; the session swaps src and dst. Order of work in each round:
 * first deliver what is already held (user-space buffer, then pipe), and
 * only then read more, so bytes never overtake each other, a full
 * destination stops reading (backpressure), and splice starts only once
 * user space holds nothing for this direction. */
#include "pump.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "pipepool.h"

/* Fairness: one call moves at most this much before yielding to the loop
 * (libev's level-triggered watchers bring us back at once). */
#define PUMP_ROUND_BYTES (512 * 1024)
#define PUMP_SPLICE_CHUNK (1024 * 1024)
/* What a pipe holds unless F_SETPIPE_SZ said otherwise (16 pages). */
#define PUMP_PIPE_DEFAULT 65536
/* A copy read this large means more is waiting: switch to splice. */
#define PUMP_BULK_READ (BUFFER_SIZE / 2)

static bool pump_no_splice;

bool pump_splice_supported(void)
{
	return !pump_no_splice;
}

void pump_disable_splice(void)
{
	pump_no_splice = true;
}

void pump_init(struct flow *f, int src, int dst, bool splice_ok)
{
	memset(f, 0, sizeof(*f));
	f->src = src;
	f->dst = dst;
	f->pipe[0] = f->pipe[1] = -1;
	f->splice_ok = splice_ok;
}

int pump_queue(struct flow *f, const void *data, size_t n)
{
	return buffer_append(&f->buf, data, n);
}

size_t pump_pending(const struct flow *f)
{
	return buffer_used(&f->buf) + f->in_pipe;
}

void pump_release(struct flow *f)
{
	if (f->pipe[0] != -1) {
		if (f->in_pipe == 0)
			pipepool_put(f->pipe);
		else
			pipepool_kill(f->pipe);
		f->in_pipe = 0;
	}
	buffer_release(&f->buf);
}

static unsigned pump_fail(struct flow *f, int err, enum pump_where where)
{
	f->err = err;
	f->err_where = (uint8_t)where;
	return PUMP_FAILED;
}

/* What a failed SSL_read/SSL_write means for the pump. */
static unsigned pump_ssl_error(struct flow *f, SSL *ssl, int rc,
			       enum pump_where where, bool *eof)
{
	int e = SSL_get_error(ssl, rc);

	switch (e) {
	case SSL_ERROR_WANT_READ:
		return where == PUMP_ERR_READ ? PUMP_SRC_READ : PUMP_DST_READ;
	case SSL_ERROR_WANT_WRITE:
		return where == PUMP_ERR_READ ? PUMP_SRC_WRITE : PUMP_DST_WRITE;
	case SSL_ERROR_ZERO_RETURN:
		if (eof != NULL) {
			*eof = true;
			return 0;
		}
		return pump_fail(f, EPIPE, where);
	case SSL_ERROR_SYSCALL:
		if (errno == 0 && eof != NULL) {
			*eof = true;
			return 0;
		}
		return pump_fail(f, errno != 0 ? errno : EPIPE, where);
	default:
		ERR_clear_error();
		return pump_fail(f, EPROTO, where);
	}
}

/* One write to dst; returns bytes written, or -1 with wants in *w. */
static ssize_t pump_send(struct flow *f, const char *p, size_t n, unsigned *w)
{
	ssize_t r;

	if (f->dst_ssl != NULL) {
		int rc;

		/* OpenSSL wants a retried write to carry the same length. */
		if (f->ssl_wlen != 0 && f->ssl_wlen <= n)
			n = f->ssl_wlen;
		else if (n > 16384)
			n = 16384;
		ERR_clear_error();
		rc = SSL_write(f->dst_ssl, p, (int)n);
		if (rc > 0) {
			f->ssl_wlen = 0;
			return rc;
		}
		f->ssl_wlen = (uint32_t)n;
		*w = pump_ssl_error(f, f->dst_ssl, rc, PUMP_ERR_WRITE, NULL);
		return -1;
	}
	for (;;) {
		r = send(f->dst, p, n, MSG_NOSIGNAL);
		if (r != -1 || errno != EINTR)
			break;
	}
	if (r == -1) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			*w = PUMP_DST_WRITE;
		else
			*w = pump_fail(f, errno, PUMP_ERR_WRITE);
	}
	return r;
}

/* One read from src; returns >0, 0 at EOF, or -1 with wants in *w. */
static ssize_t pump_recv(struct flow *f, char *p, size_t n, unsigned *w)
{
	ssize_t r;

	if (f->src_ssl != NULL) {
		bool eof = false;
		int rc;

		ERR_clear_error();
		errno = 0;
		rc = SSL_read(f->src_ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
		if (rc > 0)
			return rc;
		*w = pump_ssl_error(f, f->src_ssl, rc, PUMP_ERR_READ, &eof);
		return eof ? 0 : -1;
	}
	for (;;) {
		r = recv(f->src, p, n, 0);
		if (r != -1 || errno != EINTR)
			break;
	}
	if (r == -1) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			*w = PUMP_SRC_READ;
		else
			*w = pump_fail(f, errno, PUMP_ERR_READ);
	}
	return r;
}

/* Write buffered bytes. Returns 0 when the buffer drained, or wants. */
static unsigned pump_flush_buffer(struct flow *f)
{
	while (!buffer_empty(&f->buf)) {
		size_t avail;
		const char *p = buffer_read_ptr(&f->buf, &avail);
		unsigned w = 0;
		ssize_t r = pump_send(f, p, avail, &w);

		if (r == -1)
			return w;
		buffer_consume(&f->buf, (size_t)r);
	}
	return 0;
}

/* Empty the pipe into dst; an empty pipe goes back to the pool so an
 * idle session holds none. Returns 0 when drained, or wants. */
static unsigned pump_flush_pipe(struct flow *f)
{
	while (f->in_pipe > 0) {
		ssize_t w = splice(f->pipe[0], NULL, f->dst, NULL, f->in_pipe,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);

		if (w == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return PUMP_DST_WRITE;
			return pump_fail(f, errno, PUMP_ERR_WRITE);
		}
		f->in_pipe -= (uint32_t)w;
	}
	if (f->pipe[0] != -1)
		pipepool_put(f->pipe);
	return 0;
}

/* src EOF and everything delivered: pass the EOF on. */
static unsigned pump_finish(struct flow *f)
{
	if (!f->shut) {
		/* close_notify first, best effort: the TCP FIN follows. */
		if (f->dst_ssl != NULL) {
			ERR_clear_error();
			SSL_shutdown(f->dst_ssl);
			ERR_clear_error();
		}
		/* ENOTCONN: the peer already went away; nothing to tell it. */
		if (shutdown(f->dst, SHUT_WR) == -1 && errno != ENOTCONN)
			return pump_fail(f, errno, PUMP_ERR_WRITE);
		f->shut = true;
	}
	return PUMP_DONE;
}

/* Returns >0 bytes moved into the pipe, 0 on EOF, -1 with wants in *w,
 * or -2 when splice cannot be used (the caller copies instead). */
static ssize_t pump_splice_in(struct flow *f, unsigned *w)
{
	ssize_t r;

	if (f->pipe[0] == -1 && pipepool_get(f->pipe) == -1)
		return -2;
	for (;;) {
		r = splice(f->src, NULL, f->pipe[1], NULL, PUMP_SPLICE_CHUNK,
			   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (r != -1 || errno != EINTR)
			break;
	}
	if (r >= 0) {
		if (r == 0)
			pipepool_put(f->pipe);
		return r;
	}
	switch (errno) {
	case EAGAIN:
		/* The pipe is empty here, so it is the socket that has
		 * nothing: give the pipe back while we wait. */
		pipepool_put(f->pipe);
		*w = PUMP_SRC_READ;
		return -1;
	case EINVAL:
	case ENOSYS:
	case EOPNOTSUPP:
		/* This pair of fds cannot splice: copy from now on. */
		pipepool_put(f->pipe);
		f->splice_ok = false;
		return -2;
	default:
		*w = pump_fail(f, errno, PUMP_ERR_READ);
		pipepool_put(f->pipe);
		return -1;
	}
}

/* Returns >0 bytes read into the buffer, 0 on EOF, -1 with wants in *w. */
static ssize_t pump_copy_in(struct flow *f, unsigned *w, size_t *asked)
{
	size_t space;
	char *p = buffer_write_ptr(&f->buf, &space);
	ssize_t r;

	*asked = space;
	if (p == NULL) {
		*w = pump_fail(f, ENOMEM, PUMP_ERR_READ);
		return -1;
	}
	r = pump_recv(f, p, space, w);
	if (r > 0) {
		if (f->observe != NULL)
			f->observe(f, p, (size_t)r);
		buffer_produce(&f->buf, (size_t)r);
	} else if (buffer_empty(&f->buf)) {
		/* Hand the unused chunk back: idle sessions hold no memory. */
		buffer_release(&f->buf);
	}
	return r;
}

ssize_t pump_read(struct flow *f, char *buf, size_t n, unsigned *want)
{
	ssize_t r = pump_recv(f, buf, n, want);

	if (r > 0) {
		f->bytes += (uint64_t)r;
		f->copied = true;
	} else if (r == 0) {
		f->eof = true;
	}
	return r;
}

unsigned pump_flush(struct flow *f)
{
	unsigned w = pump_flush_buffer(f);

	return w != 0 ? w : pump_flush_pipe(f);
}

unsigned pump_run(struct flow *f)
{
	size_t moved = 0;
	bool drained = false; /* the last read found the socket empty */

	if (f->err != 0)
		return PUMP_FAILED;
	for (;;) {
		unsigned w = pump_flush_buffer(f);
		size_t asked = 0;
		ssize_t r;

		if (w == 0)
			w = pump_flush_pipe(f);
		if (w != 0)
			return w;
		if (f->eof || f->src == -1) {
			f->eof = true;
			return pump_finish(f);
		}
		/* TLS may hold decrypted bytes no poll will announce: read
		 * those to the end rather than yield. */
		if (moved >= PUMP_ROUND_BYTES && f->src_ssl == NULL)
			return PUMP_SRC_READ;
		/* A short read already said the socket is empty: asking again
		 * would only fetch EAGAIN. Level-triggered polling brings us
		 * back if more arrived meanwhile (or the EOF). */
		if (drained)
			return PUMP_SRC_READ;

		r = -2;
		/* Small exchanges (SMTP commands and replies) copy: for a few
		 * bytes a pipe costs more than it saves. A read that fills
		 * the buffer says bulk is flowing; from then on, splice. */
		if (f->bulk && f->splice_ok && f->observe == NULL &&
		    !pump_no_splice && f->src_ssl == NULL && f->dst_ssl == NULL) {
			r = pump_splice_in(f, &w);
			if (r > 0) {
				f->in_pipe += (uint32_t)r;
				f->spliced = true;
			}
			/* The pipe was empty: less than it holds means less
			 * was there. */
			asked = pipepool_pipe_size() > 0 ?
					(size_t)pipepool_pipe_size() :
					PUMP_PIPE_DEFAULT;
		}
		if (r == -2) {
			r = pump_copy_in(f, &w, &asked);
			if (r > 0)
				f->copied = true;
			if (r >= PUMP_BULK_READ)
				f->bulk = true;
		}
		if (r == -1)
			return w;
		if (r == 0)
			f->eof = true;
		/* TLS reads stop at a record: only plain sockets tell. */
		if (r > 0 && (size_t)r < asked && f->src_ssl == NULL)
			drained = true;
		f->bytes += (uint64_t)r;
		moved += (size_t)r;
	}
}
