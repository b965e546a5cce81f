/* shared: memory that worker processes share (workers > 1): the total of
 * open sessions, the per-address counts and the metrics, so limits and
 * /metrics cover all workers. Taken once, before the workers fork; with
 * one worker nothing here is used. */
#ifndef SMTPFWD_SHARED_H
#define SMTPFWD_SHARED_H

#include <stddef.h>

/* Zeroed memory shared with processes forked later; NULL on failure. */
void *shared_alloc(size_t size);

/* A lock for short critical sections in shared memory (a spinlock: the
 * holders never block while holding it). */
void shared_lock(int *lock);
void shared_unlock(int *lock);

#endif
