/* resolve: one detached thread per lookup. Lookups are rare (start,
 * reload, after a failed connect to a named backend), so a pool would be
 * more code than it saves. The thread only fills in the request and
 * signals its ev_async; everything else happens on the loop. */
#include "resolve.h"

#include <errno.h>
#include <ev.h>
#include <netdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct resolve_req {
	ev_async done; /* signalled by the thread */
	struct ev_loop *loop;
	char *host;
	uint16_t port;
	resolve_cb *cb;
	void *arg;
	bool cancelled;
	int err;
	union sockname *addrs;
	size_t n;
};

int resolve_now(const char *host, uint16_t port, union sockname **out,
		size_t *n)
{
	struct addrinfo hints = { 0 }, *res, *ai;
	char service[8];
	size_t count = 0, i = 0;
	int rc;

	*out = NULL;
	*n = 0;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG;
	snprintf(service, sizeof(service), "%u", (unsigned)port);
	rc = getaddrinfo(host, service, &hints, &res);
	if (rc != 0)
		return rc;
	for (ai = res; ai != NULL; ai = ai->ai_next)
		if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6)
			count++;
	if (count == 0) {
		freeaddrinfo(res);
		return EAI_NONAME;
	}
	*out = calloc(count, sizeof(**out));
	if (*out == NULL) {
		freeaddrinfo(res);
		return EAI_MEMORY;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
			continue;
		memcpy(&(*out)[i++], ai->ai_addr, ai->ai_addrlen);
	}
	freeaddrinfo(res);
	*n = count;
	return 0;
}

const char *resolve_strerror(int err)
{
	return gai_strerror(err);
}

static void resolve_free(struct resolve_req *req)
{
	free(req->addrs);
	free(req->host);
	free(req);
}

static void resolve_done_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct resolve_req *req = (struct resolve_req *)w;

	(void)revents;
	ev_async_stop(loop, &req->done);
	if (!req->cancelled)
		req->cb(req->arg, req->err, req->addrs, req->n);
	resolve_free(req);
}

static void *resolve_thread(void *arg)
{
	struct resolve_req *req = arg;

	req->err = resolve_now(req->host, req->port, &req->addrs, &req->n);
	ev_async_send(req->loop, &req->done);
	return NULL;
}

struct resolve_req *resolve_start(struct ev_loop *loop, const char *host,
				  uint16_t port, resolve_cb *cb, void *arg)
{
	struct resolve_req *req = calloc(1, sizeof(*req));
	pthread_attr_t attr;
	pthread_t tid;
	int rc;

	if (req == NULL)
		return NULL;
	req->host = strdup(host);
	if (req->host == NULL) {
		free(req);
		return NULL;
	}
	req->loop = loop;
	req->port = port;
	req->cb = cb;
	req->arg = arg;
	ev_async_init(&req->done, resolve_done_cb);
	ev_async_start(loop, &req->done);

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	/* getaddrinfo needs little stack; keep the thread small. */
	pthread_attr_setstacksize(&attr, 256 * 1024);
	rc = pthread_create(&tid, &attr, resolve_thread, req);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		ev_async_stop(loop, &req->done);
		resolve_free(req);
		errno = rc;
		return NULL;
	}
	return req;
}

void resolve_cancel(struct resolve_req *req)
{
	req->cancelled = true;
}
