/* backend: address bookkeeping for one configured backend. */
#include "backend.h"

#include <ev.h>
#include <stdlib.h>
#include <string.h>

#include "resolve.h"

struct backend {
	const struct backend_cfg *cfg;
	struct ev_loop *loop;
	union sockname *addrs; /* malloc'ed, or &cfg->ep.sa for a literal */
	size_t n;
	const char *error; /* why n is 0 */
	struct resolve_req *pending;
	ev_tstamp last_lookup;
};

static void backend_set_addrs(struct backend *b, int err,
			      const union sockname *addrs, size_t n)
{
	union sockname *copy;

	if (err != 0) {
		/* Keep what we knew: a DNS hiccup should not empty the list. */
		if (b->n == 0)
			b->error = resolve_strerror(err);
		return;
	}
	copy = malloc(n * sizeof(*copy));
	if (copy == NULL)
		return;
	memcpy(copy, addrs, n * sizeof(*copy));
	free(b->addrs);
	b->addrs = copy;
	b->n = n;
	b->error = NULL;
}

struct backend *backend_new(struct ev_loop *loop,
			    const struct backend_cfg *cfg)
{
	struct backend *b = calloc(1, sizeof(*b));
	union sockname *addrs;
	size_t n;
	int err;

	if (b == NULL)
		return NULL;
	b->cfg = cfg;
	b->loop = loop;
	if (cfg->ep.literal)
		return b;
	err = resolve_now(cfg->ep.host, cfg->ep.port, &addrs, &n);
	backend_set_addrs(b, err, addrs, n);
	free(addrs);
	b->last_lookup = ev_now(loop);
	return b;
}

void backend_free(struct backend *b)
{
	if (b == NULL)
		return;
	if (b->pending != NULL)
		resolve_cancel(b->pending);
	free(b->addrs);
	free(b);
}

const char *backend_name(const struct backend *b)
{
	return b->cfg->text;
}

size_t backend_addrs(const struct backend *b, const union sockname **addrs)
{
	if (b->cfg->ep.literal) {
		*addrs = &b->cfg->ep.sa;
		return 1;
	}
	*addrs = b->addrs;
	return b->n;
}

const char *backend_error(const struct backend *b)
{
	return b->error != NULL ? b->error : "no address";
}

static void backend_resolved(void *arg, int err, const union sockname *addrs,
			     size_t n)
{
	struct backend *b = arg;

	b->pending = NULL;
	backend_set_addrs(b, err, addrs, n);
}

void backend_connect_failed(struct backend *b)
{
	if (b->cfg->ep.literal || b->pending != NULL)
		return;
	if (ev_now(b->loop) - b->last_lookup < BACKEND_RERESOLVE_SECS)
		return;
	b->last_lookup = ev_now(b->loop);
	b->pending = resolve_start(b->loop, b->cfg->ep.host, b->cfg->ep.port,
				   backend_resolved, b);
}
