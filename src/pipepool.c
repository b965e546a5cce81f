/* pipepool: a stack of empty pipes. Bookkeeping only; creating and
 * closing pipes goes through ops so tests can count without fds. */
#include "pipepool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

struct pipepool_entry {
	int fds[2];
};

static int pipepool_sys_create(int fds[2]);
static void pipepool_sys_destroy(int fds[2]);

static const struct pipepool_ops pipepool_sys_ops = {
	.create = pipepool_sys_create,
	.destroy = pipepool_sys_destroy,
};

static const struct pipepool_ops *pipepool_ops = &pipepool_sys_ops;
static struct pipepool_entry *pipepool_stack;
static size_t pipepool_npooled;
static size_t pipepool_cap; /* pooled pipes kept at most */
static size_t pipepool_limit; /* open pipes at most, 0 = none of ours */
static size_t pipepool_nused;
static int pipepool_size;

static int pipepool_sys_create(int fds[2])
{
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) == -1)
		return -1;
	/* Ask once for a larger pipe: fewer splice calls per MiB. Failing is
	 * fine (pipe-user-pages-soft, or no CAP_SYS_RESOURCE above max). */
	if (pipepool_size > 0)
		(void)fcntl(fds[1], F_SETPIPE_SZ, pipepool_size);
	return 0;
}

static void pipepool_sys_destroy(int fds[2])
{
	close(fds[0]);
	close(fds[1]);
}

void pipepool_configure(size_t pooled, size_t limit)
{
	struct pipepool_entry *s;

	while (pipepool_npooled > pooled) {
		pipepool_npooled--;
		pipepool_ops->destroy(pipepool_stack[pipepool_npooled].fds);
	}
	s = realloc(pipepool_stack, (pooled ? pooled : 1) * sizeof(*s));
	if (s != NULL) {
		pipepool_stack = s;
		pipepool_cap = pooled;
	} else if (pooled < pipepool_cap) {
		pipepool_cap = pooled;
	}
	pipepool_limit = limit;
}

void pipepool_set_ops(const struct pipepool_ops *ops)
{
	pipepool_drain();
	pipepool_ops = ops ? ops : &pipepool_sys_ops;
}

int pipepool_get(int fds[2])
{
	if (pipepool_npooled > 0) {
		pipepool_npooled--;
		fds[0] = pipepool_stack[pipepool_npooled].fds[0];
		fds[1] = pipepool_stack[pipepool_npooled].fds[1];
		pipepool_nused++;
		return 0;
	}
	if (pipepool_limit != 0 && pipepool_nused >= pipepool_limit) {
		errno = EAGAIN;
		return -1;
	}
	if (pipepool_ops->create(fds) == -1)
		return -1;
	pipepool_nused++;
	return 0;
}

void pipepool_put(int fds[2])
{
	if (fds[0] == -1)
		return;
	pipepool_nused--;
	if (pipepool_npooled < pipepool_cap) {
		pipepool_stack[pipepool_npooled].fds[0] = fds[0];
		pipepool_stack[pipepool_npooled].fds[1] = fds[1];
		pipepool_npooled++;
	} else {
		pipepool_ops->destroy(fds);
	}
	fds[0] = fds[1] = -1;
}

void pipepool_kill(int fds[2])
{
	if (fds[0] == -1)
		return;
	pipepool_nused--;
	pipepool_ops->destroy(fds);
	fds[0] = fds[1] = -1;
}

size_t pipepool_in_use(void)
{
	return pipepool_nused;
}

size_t pipepool_pooled(void)
{
	return pipepool_npooled;
}

void pipepool_drain(void)
{
	while (pipepool_npooled > 0) {
		pipepool_npooled--;
		pipepool_ops->destroy(pipepool_stack[pipepool_npooled].fds);
	}
}

void pipepool_set_pipe_size(int bytes)
{
	pipepool_size = bytes;
}

int pipepool_pipe_size(void)
{
	return pipepool_size;
}
