/* buffer: lazily allocated byte queues with a small chunk freelist, so a
 * session that stops and starts copying does not churn the heap. */
#include "buffer.h"

#include <stdlib.h>
#include <string.h>

#define BUFFER_FREELIST_MAX 64

struct buffer_chunk {
	struct buffer_chunk *next;
};

static struct buffer_chunk *buffer_freelist;
static size_t buffer_nfree;
static size_t buffer_nused;

static char *buffer_chunk_get(void)
{
	struct buffer_chunk *c = buffer_freelist;

	if (c != NULL) {
		buffer_freelist = c->next;
		buffer_nfree--;
	} else {
		c = malloc(BUFFER_SIZE);
		if (c == NULL)
			return NULL;
	}
	buffer_nused++;
	return (char *)c;
}

static void buffer_chunk_put(char *data)
{
	struct buffer_chunk *c = (struct buffer_chunk *)(void *)data;

	buffer_nused--;
	if (buffer_nfree >= BUFFER_FREELIST_MAX) {
		free(c);
		return;
	}
	c->next = buffer_freelist;
	buffer_freelist = c;
	buffer_nfree++;
}

char *buffer_write_ptr(struct buffer *b, size_t *space)
{
	if (b->data == NULL) {
		b->data = buffer_chunk_get();
		if (b->data == NULL) {
			*space = 0;
			return NULL;
		}
		b->head = b->tail = 0;
	}
	if (b->tail == BUFFER_SIZE && b->head > 0) {
		/* Slide the unread bytes down so the room is contiguous. */
		memmove(b->data, b->data + b->head, b->tail - b->head);
		b->tail -= b->head;
		b->head = 0;
	}
	*space = BUFFER_SIZE - b->tail;
	return *space ? b->data + b->tail : NULL;
}

void buffer_produce(struct buffer *b, size_t n)
{
	b->tail += (uint32_t)n;
	if (b->data != NULL && b->tail == b->head) {
		buffer_chunk_put(b->data);
		b->data = NULL;
		b->head = b->tail = 0;
	}
}

const char *buffer_read_ptr(const struct buffer *b, size_t *avail)
{
	*avail = b->tail - b->head;
	return *avail ? b->data + b->head : NULL;
}

void buffer_consume(struct buffer *b, size_t n)
{
	b->head += (uint32_t)n;
	if (b->head == b->tail)
		buffer_release(b);
}

int buffer_append(struct buffer *b, const void *data, size_t n)
{
	size_t space;
	char *p;

	if (n == 0)
		return 0;
	if (n > BUFFER_SIZE - buffer_used(b))
		return -1;
	p = buffer_write_ptr(b, &space);
	if (p == NULL || space < n) {
		if (p != NULL && b->head > 0) {
			memmove(b->data, b->data + b->head, b->tail - b->head);
			b->tail -= b->head;
			b->head = 0;
			p = b->data + b->tail;
			space = BUFFER_SIZE - b->tail;
		}
		if (p == NULL || space < n)
			return -1;
	}
	memcpy(p, data, n);
	b->tail += (uint32_t)n;
	return 0;
}

void buffer_release(struct buffer *b)
{
	if (b->data != NULL)
		buffer_chunk_put(b->data);
	b->data = NULL;
	b->head = b->tail = 0;
}

size_t buffer_chunks_free(void)
{
	return buffer_nfree;
}

size_t buffer_chunks_used(void)
{
	return buffer_nused;
}

void buffer_trim(void)
{
	while (buffer_freelist != NULL) {
		struct buffer_chunk *c = buffer_freelist;

		buffer_freelist = c->next;
		free(c);
	}
	buffer_nfree = 0;
}
