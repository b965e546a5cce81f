/* pump: moves bytes one way, from flow->src to flow->dst. Small
 * exchanges copy through a lazily allocated buffer; once a read fills
 * half of it (bulk), and with splice allowed and nothing buffered in
 * user space, it goes socket -> pipe -> socket (the pipe comes from the
 * pool only while bytes are in flight). With no pipe to be had it keeps
 * copying. One function serves both directions; the session owns the
 * watchers and turns the returned wants into events. */
#ifndef SMTPFWD_PUMP_H
#define SMTPFWD_PUMP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "buffer.h"

struct flow;
struct ssl_st;

/* Called with each chunk read while set (copy mode only: a flow with an
 * observer never splices). */
typedef void pump_observe_fn(struct flow *f, const char *data, size_t n);

enum pump_where { PUMP_ERR_NONE, PUMP_ERR_READ, PUMP_ERR_WRITE };

struct flow {
	int src; /* read from; -1: no source (only buffered bytes, then EOF) */
	int dst; /* write to */
	int pipe[2]; /* -1 while no pipe is held */
	uint32_t in_pipe; /* bytes sitting in the pipe */
	struct buffer buf; /* bytes read but not yet written */
	uint64_t bytes; /* bytes delivered to dst */
	pump_observe_fn *observe;
	struct ssl_st *src_ssl; /* read src through TLS (borrowed) */
	struct ssl_st *dst_ssl; /* write dst through TLS (borrowed) */
	uint32_t ssl_wlen; /* length of an SSL_write to retry, 0 */
	int err; /* errno of the failure, 0 */
	uint8_t err_where; /* enum pump_where */
	bool eof; /* src reached end of stream */
	bool shut; /* shutdown(dst, SHUT_WR) done */
	bool splice_ok; /* the session allows splice on this flow */
	bool bulk; /* a large read was seen: splice from now on */
	bool spliced; /* splice moved bytes at least once */
	bool copied; /* the copy path moved bytes at least once */
};

/* What pump_run() waits for (a bit mask). */
enum pump_want {
	PUMP_SRC_READ = 1 << 0,
	PUMP_SRC_WRITE = 1 << 1, /* TLS on src needs to write to read */
	PUMP_DST_READ = 1 << 2, /* TLS on dst needs to read to write */
	PUMP_DST_WRITE = 1 << 3,
	PUMP_DONE = 1 << 4, /* EOF passed on: nothing more will move */
	PUMP_FAILED = 1 << 5, /* see err, err_where */
};

void pump_init(struct flow *f, int src, int dst, bool splice_ok);

/* Move what can be moved now (bounded per call for fairness). Returns
 * the wants; with PUMP_DONE or PUMP_FAILED no other bit is set. */
unsigned pump_run(struct flow *f);

/* Queue bytes to be written to dst before anything read from src (a PROXY
 * header, or the proxy's own reply). Returns -1 when they do not fit. */
int pump_queue(struct flow *f, const void *data, size_t n);

/* For code that looks at every byte (the STARTTLS dialogue): read from
 * src into buf (TLS-aware, counted in bytes). Returns >0, 0 at EOF, or
 * -1 with the wants (or PUMP_FAILED) in *want. */
ssize_t pump_read(struct flow *f, char *buf, size_t n, unsigned *want);

/* Deliver what is queued, without reading src. Returns 0 once nothing
 * is left, else the wants (or PUMP_FAILED). */
unsigned pump_flush(struct flow *f);

/* Bytes read but not yet delivered (buffer plus pipe). */
size_t pump_pending(const struct flow *f);

/* Give back the pipe (killed if it holds bytes) and the buffer. */
void pump_release(struct flow *f);

/* Whether splice(2) works here; probed once, on first use. */
bool pump_splice_supported(void);
/* Force the copy path for every flow (tests and benchmarks). */
void pump_disable_splice(void);

#endif
