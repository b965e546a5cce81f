/* Unit tests for buffer: lazy 16 KiB chunks, the freelist, release when
 * drained, and byte order through fills, partial drains and slides. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "buffer.h"

/* Every test starts with no chunk in use and none cached (the counts
 * are process-wide; a test that failed with a chunk held makes the next
 * setup fail, loudly, rather than skew its numbers). */
static int setup(void **state)
{
	(void)state;
	buffer_trim();
	return buffer_chunks_used() == 0 && buffer_chunks_free() == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	buffer_trim();
	return 0;
}

static void fill_pattern(char *p, size_t n, size_t start)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (char)((start + i) * 7 + 3);
}

static void check_pattern(const char *p, size_t n, size_t start)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (char)((start + i) * 7 + 3))
			fail_msg("byte %zu of the stream is wrong", start + i);
}

static void test_lazy(void **state)
{
	struct buffer b = { 0 };
	size_t avail = 99;

	(void)state;
	assert_true(buffer_empty(&b));
	assert_int_equal(buffer_used(&b), 0);
	assert_null(buffer_read_ptr(&b, &avail));
	assert_int_equal(avail, 0);
	assert_int_equal(buffer_chunks_used(), 0);
	/* Nothing to drop: no storage taken. */
	buffer_consume(&b, 0);
	buffer_release(&b);
	assert_null(b.data);
	assert_int_equal(buffer_chunks_used(), 0);
	assert_int_equal(buffer_append(&b, "", 0), 0);
	assert_null(b.data);
	assert_int_equal(buffer_chunks_used(), 0);
}

static void test_write_produce_read_consume(void **state)
{
	struct buffer b = { 0 };
	size_t space, avail;
	char *w;
	const char *r;

	(void)state;
	w = buffer_write_ptr(&b, &space);
	assert_non_null(w);
	assert_int_equal(space, BUFFER_SIZE);
	assert_int_equal(buffer_chunks_used(), 1);
	memcpy(w, "EHLO x\r\n", 8);
	buffer_produce(&b, 8);
	assert_int_equal(buffer_used(&b), 8);
	assert_false(buffer_empty(&b));

	r = buffer_read_ptr(&b, &avail);
	assert_int_equal(avail, 8);
	assert_memory_equal(r, "EHLO x\r\n", 8);
	buffer_consume(&b, 5);
	r = buffer_read_ptr(&b, &avail);
	assert_int_equal(avail, 3);
	assert_memory_equal(r, "x\r\n", 3);
	assert_int_equal(buffer_chunks_used(), 1);

	/* Drained: the chunk goes back to the freelist. */
	buffer_consume(&b, 3);
	assert_null(b.data);
	assert_true(buffer_empty(&b));
	assert_int_equal(b.head, 0);
	assert_int_equal(b.tail, 0);
	assert_int_equal(buffer_chunks_used(), 0);
	assert_int_equal(buffer_chunks_free(), 1);

	/* The next write reuses it. */
	w = buffer_write_ptr(&b, &space);
	assert_non_null(w);
	assert_int_equal(buffer_chunks_free(), 0);
	assert_int_equal(buffer_chunks_used(), 1);
	buffer_produce(&b, 0);
	/* A read that produced nothing gives the storage back at once. */
	assert_null(b.data);
	assert_int_equal(buffer_chunks_used(), 0);
	assert_int_equal(buffer_chunks_free(), 1);
}

static void test_full_and_slide(void **state)
{
	struct buffer b = { 0 };
	size_t space, avail;
	char *w;
	const char *r;

	(void)state;
	w = buffer_write_ptr(&b, &space);
	assert_int_equal(space, BUFFER_SIZE);
	fill_pattern(w, BUFFER_SIZE, 0);
	buffer_produce(&b, BUFFER_SIZE);
	assert_int_equal(buffer_used(&b), BUFFER_SIZE);

	/* Full: no room, and the bytes are untouched. */
	assert_null(buffer_write_ptr(&b, &space));
	assert_int_equal(space, 0);
	assert_int_equal(buffer_append(&b, "x", 1), -1);
	assert_int_equal(buffer_used(&b), BUFFER_SIZE);

	/* Read part; the room at the front is offered after a slide. */
	r = buffer_read_ptr(&b, &avail);
	check_pattern(r, 1000, 0);
	buffer_consume(&b, 1000);
	w = buffer_write_ptr(&b, &space);
	assert_non_null(w);
	assert_int_equal(space, 1000);
	assert_int_equal(b.head, 0);
	fill_pattern(w, 1000, BUFFER_SIZE);
	buffer_produce(&b, 1000);
	r = buffer_read_ptr(&b, &avail);
	assert_int_equal(avail, BUFFER_SIZE);
	check_pattern(r, avail, 1000);
	buffer_release(&b);
	assert_int_equal(buffer_chunks_used(), 0);
}

static void test_append(void **state)
{
	struct buffer b = { 0 };
	char *big = malloc(2 * BUFFER_SIZE);
	size_t avail;
	const char *r;

	(void)state;
	assert_non_null(big);
	fill_pattern(big, 2 * BUFFER_SIZE, 0);
	/* Larger than a chunk: refused without taking storage. */
	assert_int_equal(buffer_append(&b, big, BUFFER_SIZE + 1), -1);
	assert_null(b.data);
	assert_int_equal(buffer_chunks_used(), 0);

	assert_int_equal(buffer_append(&b, big, 10000), 0);
	assert_int_equal(buffer_used(&b), 10000);
	/* 6385 more does not fit; nothing is copied. */
	assert_int_equal(buffer_append(&b, big + 10000, 6385), -1);
	assert_int_equal(buffer_used(&b), 10000);
	buffer_consume(&b, 4000);
	/* Now 10384 is free, but only 6384 at the end: the unread bytes
	 * slide to the front. */
	assert_int_equal(buffer_append(&b, big + 10000, 10384), 0);
	assert_int_equal(buffer_used(&b), BUFFER_SIZE);
	r = buffer_read_ptr(&b, &avail);
	assert_int_equal(avail, BUFFER_SIZE);
	check_pattern(r, avail, 4000);
	assert_int_equal(buffer_append(&b, "x", 1), -1);
	buffer_consume(&b, BUFFER_SIZE);
	assert_null(b.data);
	assert_int_equal(buffer_chunks_used(), 0);
	free(big);
}

/* A stream pushed through in odd-sized pieces comes out in order. */
static void test_stream_order(void **state)
{
	struct buffer b = { 0 };
	size_t in = 0, out = 0, total = 3 * 1024 * 1024;
	unsigned x = 12345;

	(void)state;
	while (out < total) {
		size_t space, avail, n;
		char *w;
		const char *r;

		x = x * 1103515245u + 12345u;
		if (in < total && (x >> 16) % 3 != 0) {
			w = buffer_write_ptr(&b, &space);
			if (w != NULL) {
				n = ((x >> 8) % 7000) + 1;
				if (n > space)
					n = space;
				if (n > total - in)
					n = total - in;
				fill_pattern(w, n, in);
				buffer_produce(&b, n);
				in += n;
			} else {
				assert_int_equal(buffer_used(&b), BUFFER_SIZE);
			}
		} else {
			r = buffer_read_ptr(&b, &avail);
			if (r == NULL) {
				assert_int_equal(avail, 0);
				assert_null(b.data);
				continue;
			}
			n = ((x >> 4) % 9000) + 1;
			if (n > avail)
				n = avail;
			check_pattern(r, n, out);
			buffer_consume(&b, n);
			out += n;
		}
		assert_int_equal(buffer_used(&b), in - out);
		/* Storage is held exactly while bytes are held. */
		assert_int_equal(buffer_chunks_used(), in > out ? 1 : 0);
	}
	assert_null(b.data);
}

static void test_freelist(void **state)
{
	enum { N = 80 };
	struct buffer b[N];
	size_t space;

	(void)state;
	memset(b, 0, sizeof(b));
	for (int i = 0; i < N; i++) {
		assert_int_equal(buffer_append(&b[i], "abc", 3), 0);
		assert_non_null(buffer_write_ptr(&b[i], &space));
		assert_int_equal(space, BUFFER_SIZE - 3);
	}
	assert_int_equal(buffer_chunks_used(), N);
	assert_int_equal(buffer_chunks_free(), 0);
	/* Distinct storage for each. */
	for (int i = 1; i < N; i++)
		assert_ptr_not_equal(b[i].data, b[i - 1].data);

	for (int i = 0; i < N; i++)
		buffer_release(&b[i]);
	assert_int_equal(buffer_chunks_used(), 0);
	/* The freelist keeps at most 64; the rest went back to malloc. */
	assert_int_equal(buffer_chunks_free(), 64);
	for (int i = 0; i < 10; i++)
		assert_int_equal(buffer_append(&b[i], "x", 1), 0);
	assert_int_equal(buffer_chunks_free(), 54);
	assert_int_equal(buffer_chunks_used(), 10);
	for (int i = 0; i < 10; i++) {
		buffer_consume(&b[i], 1);
		assert_null(b[i].data);
	}
	assert_int_equal(buffer_chunks_free(), 64);
	buffer_trim();
	assert_int_equal(buffer_chunks_free(), 0);
	/* Release of an empty buffer and a double release are harmless. */
	buffer_release(&b[0]);
	buffer_release(&b[0]);
	assert_int_equal(buffer_chunks_used(), 0);
	assert_int_equal(buffer_chunks_free(), 0);
}

static void test_release_drops_bytes(void **state)
{
	struct buffer b = { 0 };
	size_t avail;

	(void)state;
	assert_int_equal(buffer_append(&b, "QUIT\r\n", 6), 0);
	buffer_release(&b);
	assert_true(buffer_empty(&b));
	assert_null(buffer_read_ptr(&b, &avail));
	assert_int_equal(buffer_chunks_used(), 0);
	assert_int_equal(buffer_chunks_free(), 1);
	/* Usable again afterwards. */
	assert_int_equal(buffer_append(&b, "RSET\r\n", 6), 0);
	assert_memory_equal(buffer_read_ptr(&b, &avail), "RSET\r\n", 6);
	assert_int_equal(avail, 6);
	buffer_release(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_lazy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_produce_read_consume,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_and_slide, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_append, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stream_order, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_freelist, setup, teardown),
		cmocka_unit_test_setup_teardown(test_release_drops_bytes, setup,
						teardown),
	};

	return cmocka_run_group_tests_name("buffer", tests, NULL, NULL);
}
