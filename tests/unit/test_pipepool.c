/* Unit tests for pipepool: the bookkeeping with fake create/destroy
 * (which pipes are reused, killed, refused), then a short check with
 * real pipes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "pipepool.h"

/* Fake pipes: numbered fd pairs (2k+1000, 2k+1001). Each is tracked, so
 * a double destroy or the destroy of an unknown pipe fails the test. */
#define FAKE_MAX 256

static struct {
	int created;
	int destroyed;
	int fail_errno; /* next create fails with this, once */
	unsigned char open[FAKE_MAX];
} fake;

static int fake_create(int fds[2])
{
	int k;

	if (fake.fail_errno != 0) {
		errno = fake.fail_errno;
		fake.fail_errno = 0;
		return -1;
	}
	k = fake.created++;
	if (k >= FAKE_MAX)
		fail_msg("too many fake pipes");
	fake.open[k] = 1;
	fds[0] = 1000 + 2 * k;
	fds[1] = 1001 + 2 * k;
	return 0;
}

static void fake_destroy(int fds[2])
{
	int k = (fds[0] - 1000) / 2;

	if (fds[0] < 1000 || k >= fake.created || fds[1] != fds[0] + 1)
		fail_msg("destroy of a pipe never made: %d %d", fds[0], fds[1]);
	if (!fake.open[k])
		fail_msg("pipe %d destroyed twice", k);
	fake.open[k] = 0;
	fake.destroyed++;
}

static const struct pipepool_ops fake_ops = {
	.create = fake_create,
	.destroy = fake_destroy,
};

static int fake_open_count(void)
{
	return fake.created - fake.destroyed;
}

static int setup(void **state)
{
	(void)state;
	/* Drains whatever a previous test pooled, with its own ops. */
	pipepool_set_ops(&fake_ops);
	memset(&fake, 0, sizeof(fake));
	pipepool_configure(4, 0);
	return pipepool_in_use() == 0 && pipepool_pooled() == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	pipepool_drain();
	return 0;
}

static void test_get_put_reuse(void **state)
{
	int a[2], b[2], c[2];

	(void)state;
	assert_int_equal(pipepool_get(a), 0);
	assert_int_equal(a[0], 1000);
	assert_int_equal(a[1], 1001);
	assert_int_equal(pipepool_in_use(), 1);
	assert_int_equal(pipepool_pooled(), 0);
	assert_int_equal(pipepool_get(b), 0);
	assert_int_equal(b[0], 1002);
	assert_int_equal(fake.created, 2);

	/* An empty pipe goes back to the pool, and the caller's fds are
	 * cleared. */
	pipepool_put(a);
	assert_int_equal(a[0], -1);
	assert_int_equal(a[1], -1);
	assert_int_equal(pipepool_in_use(), 1);
	assert_int_equal(pipepool_pooled(), 1);
	assert_int_equal(fake.destroyed, 0);

	/* The next get reuses it: nothing created. */
	assert_int_equal(pipepool_get(c), 0);
	assert_int_equal(c[0], 1000);
	assert_int_equal(c[1], 1001);
	assert_int_equal(fake.created, 2);
	assert_int_equal(pipepool_pooled(), 0);
	assert_int_equal(pipepool_in_use(), 2);

	pipepool_put(b);
	pipepool_put(c);
	assert_int_equal(pipepool_in_use(), 0);
	assert_int_equal(pipepool_pooled(), 2);
	/* Last in, first out. */
	assert_int_equal(pipepool_get(a), 0);
	assert_int_equal(a[0], 1000);
	pipepool_put(a);

	/* A put of an already returned pipe does nothing. */
	pipepool_put(a);
	assert_int_equal(pipepool_pooled(), 2);
	assert_int_equal(pipepool_in_use(), 0);
	assert_int_equal(fake_open_count(), 2);
}

static void test_kill_never_pools(void **state)
{
	int a[2], b[2];

	(void)state;
	assert_int_equal(pipepool_get(a), 0);
	/* A pipe that may still hold bytes is closed, never pooled, even
	 * when the pool has room. */
	pipepool_kill(a);
	assert_int_equal(a[0], -1);
	assert_int_equal(a[1], -1);
	assert_int_equal(fake.destroyed, 1);
	assert_int_equal(pipepool_pooled(), 0);
	assert_int_equal(pipepool_in_use(), 0);
	/* So the next get makes a fresh one. */
	assert_int_equal(pipepool_get(b), 0);
	assert_int_equal(b[0], 1002);
	assert_int_equal(fake.created, 2);
	pipepool_kill(b);
	pipepool_kill(b); /* second kill: nothing */
	assert_int_equal(fake.destroyed, 2);
	assert_int_equal(pipepool_in_use(), 0);
	assert_int_equal(fake_open_count(), 0);
}

static void test_pool_cap(void **state)
{
	int p[6][2];

	(void)state;
	for (int i = 0; i < 6; i++)
		assert_int_equal(pipepool_get(p[i]), 0);
	assert_int_equal(pipepool_in_use(), 6);
	for (int i = 0; i < 6; i++)
		pipepool_put(p[i]);
	/* Four kept (the configured pool size), two closed. */
	assert_int_equal(pipepool_pooled(), 4);
	assert_int_equal(pipepool_in_use(), 0);
	assert_int_equal(fake.destroyed, 2);
	assert_int_equal(fake_open_count(), 4);

	/* Shrinking the pool closes the extra pipes at once. */
	pipepool_configure(1, 0);
	assert_int_equal(pipepool_pooled(), 1);
	assert_int_equal(fake_open_count(), 1);
	/* Pool of 0: every put closes. */
	pipepool_configure(0, 0);
	assert_int_equal(pipepool_pooled(), 0);
	assert_int_equal(fake_open_count(), 0);
	assert_int_equal(pipepool_get(p[0]), 0);
	pipepool_put(p[0]);
	assert_int_equal(pipepool_pooled(), 0);
	assert_int_equal(fake_open_count(), 0);
	/* Growing it again keeps puts. */
	pipepool_configure(8, 0);
	for (int i = 0; i < 6; i++)
		assert_int_equal(pipepool_get(p[i]), 0);
	for (int i = 0; i < 6; i++)
		pipepool_put(p[i]);
	assert_int_equal(pipepool_pooled(), 6);
	assert_int_equal(fake_open_count(), 6);
}

static void test_limit(void **state)
{
	int p[4][2], q[2];

	(void)state;
	pipepool_configure(4, 3);
	for (int i = 0; i < 3; i++)
		assert_int_equal(pipepool_get(p[i]), 0);
	/* At the limit: EAGAIN, nothing created, nothing counted. */
	errno = 0;
	assert_int_equal(pipepool_get(q), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(fake.created, 3);
	assert_int_equal(pipepool_in_use(), 3);

	/* The limit counts pooled pipes too: one put, one get (reused). */
	pipepool_put(p[0]);
	assert_int_equal(pipepool_get(p[0]), 0);
	assert_int_equal(fake.created, 3);
	assert_int_equal(pipepool_get(q), -1);
	assert_int_equal(errno, EAGAIN);

	/* A killed pipe frees a place. */
	pipepool_kill(p[1]);
	assert_int_equal(pipepool_get(p[1]), 0);
	assert_int_equal(fake.created, 4);
	assert_int_equal(pipepool_get(q), -1);

	/* Lowering the limit below what is in use refuses new pipes but
	 * touches none in use; raising it (0 = none) allows them again. */
	pipepool_configure(4, 1);
	assert_int_equal(pipepool_in_use(), 3);
	assert_int_equal(pipepool_get(q), -1);
	assert_int_equal(errno, EAGAIN);
	pipepool_configure(4, 0);
	assert_int_equal(pipepool_get(q), 0);
	assert_int_equal(pipepool_in_use(), 4);
	for (int i = 0; i < 3; i++)
		pipepool_put(p[i]);
	pipepool_put(q);
	assert_int_equal(pipepool_in_use(), 0);
	assert_int_equal(pipepool_pooled(), 4);
}

static void test_create_fails(void **state)
{
	int p[2] = { -1, -1 }, q[2];

	(void)state;
	fake.fail_errno = EMFILE;
	errno = 0;
	assert_int_equal(pipepool_get(p), -1);
	assert_int_equal(errno, EMFILE);
	assert_int_equal(pipepool_in_use(), 0);
	assert_int_equal(fake.created, 0);
	/* The caller copies instead, and keeps no pipe: put/kill of its
	 * (-1) fds are no-ops. */
	p[0] = p[1] = -1;
	pipepool_put(p);
	pipepool_kill(p);
	assert_int_equal(pipepool_in_use(), 0);
	fake.fail_errno = ENFILE;
	assert_int_equal(pipepool_get(p), -1);
	assert_int_equal(errno, ENFILE);
	/* A pooled pipe is still handed out when creating would fail. */
	assert_int_equal(pipepool_get(p), 0);
	pipepool_put(p);
	fake.fail_errno = EMFILE;
	assert_int_equal(pipepool_get(q), 0);
	assert_int_equal(q[0], 1000);
	assert_int_equal(fake.created, 1);
	pipepool_put(q);
}

static void test_drain_and_set_ops(void **state)
{
	int p[3][2];

	(void)state;
	for (int i = 0; i < 3; i++)
		assert_int_equal(pipepool_get(p[i]), 0);
	pipepool_put(p[0]);
	pipepool_put(p[1]);
	assert_int_equal(pipepool_pooled(), 2);
	pipepool_drain();
	assert_int_equal(pipepool_pooled(), 0);
	assert_int_equal(fake.destroyed, 2);
	/* The pipe in use is not the pool's to close. */
	assert_int_equal(pipepool_in_use(), 1);
	assert_int_equal(fake_open_count(), 1);
	pipepool_put(p[2]);
	assert_int_equal(pipepool_pooled(), 1);
	/* Changing the ops closes pooled pipes with the old ones. */
	pipepool_set_ops(&fake_ops);
	assert_int_equal(pipepool_pooled(), 0);
	assert_int_equal(fake_open_count(), 0);
}

static void test_pipe_size_setting(void **state)
{
	(void)state;
	assert_int_equal(pipepool_pipe_size(), 0);
	pipepool_set_pipe_size(1 << 20);
	assert_int_equal(pipepool_pipe_size(), 1 << 20);
	pipepool_set_pipe_size(0);
	assert_int_equal(pipepool_pipe_size(), 0);
}

/* The real ops: non-blocking, close-on-exec pipes, closed on kill. */
static void test_real_pipes(void **state)
{
	int p[2], q[2], flags, r0, w0;
	char c = 'x';

	(void)state;
	pipepool_set_ops(NULL);
	pipepool_configure(2, 0);
	pipepool_set_pipe_size(128 * 1024);
	assert_int_equal(pipepool_get(p), 0);
	flags = fcntl(p[0], F_GETFL);
	assert_true(flags != -1 && (flags & O_NONBLOCK));
	flags = fcntl(p[1], F_GETFL);
	assert_true(flags != -1 && (flags & O_NONBLOCK));
	assert_true(fcntl(p[0], F_GETFD) & FD_CLOEXEC);
	assert_true(fcntl(p[1], F_GETFD) & FD_CLOEXEC);
	/* The size is asked for but may be refused (pipe-user-pages-soft):
	 * at least the default 64 KiB. */
	assert_true(fcntl(p[1], F_GETPIPE_SZ) >= 64 * 1024);
	assert_int_equal(write(p[1], &c, 1), 1);
	assert_int_equal(read(p[0], &c, 1), 1);
	/* Empty again: pooled and handed out again, still open. */
	r0 = p[0];
	w0 = p[1];
	pipepool_put(p);
	assert_int_equal(pipepool_get(q), 0);
	assert_int_equal(q[0], r0);
	assert_int_equal(q[1], w0);
	assert_int_equal(write(q[1], &c, 1), 1);
	/* Holding a byte: killed, both ends closed. */
	pipepool_kill(q);
	assert_int_equal(fcntl(r0, F_GETFD), -1);
	assert_int_equal(errno, EBADF);
	assert_int_equal(fcntl(w0, F_GETFD), -1);
	assert_int_equal(pipepool_in_use(), 0);
	assert_int_equal(pipepool_pooled(), 0);
	/* A pooled real pipe is closed by drain. */
	assert_int_equal(pipepool_get(p), 0);
	r0 = p[0];
	pipepool_put(p);
	pipepool_drain();
	assert_int_equal(fcntl(r0, F_GETFD), -1);
	pipepool_set_pipe_size(0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_get_put_reuse, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_kill_never_pools, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_pool_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_fails, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_drain_and_set_ops, setup,
						teardown),
		cmocka_unit_test(test_pipe_size_setting),
		cmocka_unit_test_setup_teardown(test_real_pipes, setup,
						teardown),
	};
	int rc = cmocka_run_group_tests_name("pipepool", tests, NULL, NULL);

	pipepool_set_ops(NULL);
	pipepool_configure(0, 0);
	return rc;
}
