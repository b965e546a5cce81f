/* pipepool: pipes for splice(2), taken when bytes are about to move and
 * given back when drained. An empty pipe returns to the pool; a pipe that
 * still holds bytes is killed, never pooled. The bookkeeping is pure; the
 * two system calls go through ops that tests replace. */
#ifndef SMTPFWD_PIPEPOOL_H
#define SMTPFWD_PIPEPOOL_H

#include <stddef.h>

struct pipepool_ops {
	int (*create)(int fds[2]); /* 0, or -1 with errno set */
	void (*destroy)(int fds[2]);
};

/* pooled: empty pipes kept for reuse; limit: pipes open at once (pooled
 * plus in use), 0 = no limit of our own. */
void pipepool_configure(size_t pooled, size_t limit);
void pipepool_set_ops(const struct pipepool_ops *ops); /* NULL: real pipes */

/* 0 and fds filled, or -1 with errno (EMFILE/ENFILE from the system,
 * EAGAIN when the limit is reached). The caller then copies instead. */
int pipepool_get(int fds[2]);
/* An empty pipe back to the pool; fds set to -1. */
void pipepool_put(int fds[2]);
/* A pipe that may hold bytes: closed; fds set to -1. */
void pipepool_kill(int fds[2]);

size_t pipepool_in_use(void);
size_t pipepool_pooled(void);
/* Close every pooled pipe. */
void pipepool_drain(void);

/* Size the kernel gives new pipes, set once (F_SETPIPE_SZ); 0 = default. */
void pipepool_set_pipe_size(int bytes);
int pipepool_pipe_size(void);

#endif
