/* buffer: a fixed-size byte queue whose storage is taken only while it
 * holds bytes and given back (to a small freelist) when it drains, so an
 * idle session owns no buffer memory. Pure: no I/O. */
#ifndef SMTPFWD_BUFFER_H
#define SMTPFWD_BUFFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BUFFER_SIZE 16384

struct buffer {
	char *data; /* NULL while empty */
	uint32_t head; /* first unread byte */
	uint32_t tail; /* one past the last byte */
};

static inline size_t buffer_used(const struct buffer *b)
{
	return b->tail - b->head;
}

static inline bool buffer_empty(const struct buffer *b)
{
	return b->tail == b->head;
}

/* Room at the end (storage taken if needed); NULL when memory is out or
 * the buffer is full. *space gets the room. */
char *buffer_write_ptr(struct buffer *b, size_t *space);
void buffer_produce(struct buffer *b, size_t n);

/* The unread bytes; NULL when empty. */
const char *buffer_read_ptr(const struct buffer *b, size_t *avail);
/* Drop n read bytes; storage is released when the buffer drains. */
void buffer_consume(struct buffer *b, size_t n);

/* Copy in; returns -1 (nothing copied) when it does not fit. */
int buffer_append(struct buffer *b, const void *data, size_t n);

/* Release storage, dropping any bytes. */
void buffer_release(struct buffer *b);

/* Chunks in the freelist and in use (for tests and metrics). */
size_t buffer_chunks_free(void);
size_t buffer_chunks_used(void);
/* Free every cached chunk (at exit, so leak checkers stay quiet). */
void buffer_trim(void);

#endif
