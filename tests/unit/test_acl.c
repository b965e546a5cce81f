/* Unit tests for acl: CIDR parsing and matching, allow/deny order, and
 * the per-address session counts (an open-addressing table with
 * backward-shift deletion, checked against a plain model). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl.h"

static union sockname ip(const char *text)
{
	union sockname a;

	if (addr_parse_ip(text, &a) != 0)
		fail_msg("bad test address %s", text);
	addr_set_port(&a, 12345);
	return a;
}

static struct cidr rule(const char *text)
{
	struct cidr c;
	enum acl_parse_result r = acl_parse_cidr(text, &c);

	if (r == ACL_PARSE_BAD)
		fail_msg("bad test rule %s", text);
	return c;
}

static bool match(const char *r, const char *client)
{
	struct cidr c = rule(r);
	union sockname a = ip(client);

	return acl_cidr_match(&c, &a);
}

static void test_parse_ipv4(void **state)
{
	struct cidr c;
	static const uint8_t net24[16] = { 192, 0, 2, 0 };

	(void)state;
	assert_int_equal(acl_parse_cidr("192.0.2.0/24", &c), ACL_PARSE_OK);
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 24);
	assert_memory_equal(c.net, net24, 16);

	/* A bare address is a host rule. */
	assert_int_equal(acl_parse_cidr("192.0.2.7", &c), ACL_PARSE_OK);
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 32);
	assert_int_equal(c.net[3], 7);

	assert_int_equal(acl_parse_cidr("0.0.0.0/0", &c), ACL_PARSE_OK);
	assert_int_equal(c.prefix, 0);
	assert_int_equal(acl_parse_cidr("10.0.0.0/8", &c), ACL_PARSE_OK);
	assert_int_equal(acl_parse_cidr("192.0.2.128/25", &c), ACL_PARSE_OK);
	assert_int_equal(c.net[3], 128);
	assert_int_equal(acl_parse_cidr("192.0.2.1/32", &c), ACL_PARSE_OK);
}

static void test_parse_hostbits(void **state)
{
	struct cidr c;
	static const uint8_t want[16] = { 192, 0, 2, 0 };

	(void)state;
	/* Valid, but the host bits are reported and masked away. */
	assert_int_equal(acl_parse_cidr("192.0.2.77/24", &c),
			 ACL_PARSE_HOSTBITS);
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 24);
	assert_memory_equal(c.net, want, 16);
	assert_int_equal(acl_parse_cidr("192.0.2.129/25", &c),
			 ACL_PARSE_HOSTBITS);
	assert_int_equal(c.net[3], 128);
	assert_int_equal(acl_parse_cidr("10.1.0.0/15", &c), ACL_PARSE_HOSTBITS);
	assert_int_equal(c.net[1], 0);
	assert_int_equal(acl_parse_cidr("10.2.0.0/15", &c), ACL_PARSE_OK);
	assert_int_equal(acl_parse_cidr("1.2.3.4/0", &c), ACL_PARSE_HOSTBITS);
	assert_int_equal(c.net[0], 0);
	assert_int_equal(acl_parse_cidr("2001:db8::1/32", &c),
			 ACL_PARSE_HOSTBITS);
	assert_int_equal(c.net[15], 0);
	assert_int_equal(acl_parse_cidr("2001:db8:8000::/33", &c),
			 ACL_PARSE_OK);
	assert_int_equal(acl_parse_cidr("2001:db8:4000::/33", &c),
			 ACL_PARSE_HOSTBITS);
	/* A host bit in the last byte of a /127. */
	assert_int_equal(acl_parse_cidr("2001:db8::3/127", &c),
			 ACL_PARSE_HOSTBITS);
	assert_int_equal(c.net[15], 2);
}

static void test_parse_ipv6(void **state)
{
	struct cidr c;
	struct in6_addr want;

	(void)state;
	assert_int_equal(acl_parse_cidr("2001:db8::/32", &c), ACL_PARSE_OK);
	assert_int_equal(c.family, AF_INET6);
	assert_int_equal(c.prefix, 32);
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::", &want), 1);
	assert_memory_equal(c.net, &want, 16);
	assert_int_equal(acl_parse_cidr("::1", &c), ACL_PARSE_OK);
	assert_int_equal(c.prefix, 128);
	assert_int_equal(acl_parse_cidr("::/0", &c), ACL_PARSE_OK);
	assert_int_equal(c.prefix, 0);
	assert_int_equal(acl_parse_cidr("2001:db8::/128", &c), ACL_PARSE_OK);
}

static void test_parse_mapped(void **state)
{
	struct cidr c;

	(void)state;
	/* An IPv4-mapped rule is an IPv4 rule; its prefix counts the 96
	 * mapping bits. */
	assert_int_equal(acl_parse_cidr("::ffff:192.0.2.0/120", &c),
			 ACL_PARSE_OK);
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 24);
	assert_int_equal(c.net[0], 192);
	assert_int_equal(c.net[2], 2);
	assert_int_equal(acl_parse_cidr("::ffff:192.0.2.5", &c), ACL_PARSE_OK);
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 32);
	assert_int_equal(acl_parse_cidr("::ffff:0.0.0.0/96", &c), ACL_PARSE_OK);
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 0);
	assert_int_equal(acl_parse_cidr("::ffff:192.0.2.5/120", &c),
			 ACL_PARSE_HOSTBITS);
	assert_int_equal(c.net[3], 0);
	/* Fewer than 96 bits would reach into the mapping prefix. */
	assert_int_equal(acl_parse_cidr("::ffff:192.0.2.0/64", &c),
			 ACL_PARSE_BAD);
}

static void test_parse_bad(void **state)
{
	static const char *const bad[] = {
		"",		 "/24",		   "192.0.2.0/",
		"192.0.2.0/33",	 "192.0.2.0/-1",   "192.0.2.0/+8",
		"192.0.2.0/ 8",	 "192.0.2.0/8 ",   "192.0.2.0 /8",
		" 192.0.2.0/8",	 "192.0.2.0/8/8",  "192.0.2.0/8x",
		"192.0.2/24",	 "192.0.2.256/24", "2001:db8::/129",
		"2001:db8::/",	 "2001:db8:::/32", "example.com/24",
		"192.0.2.0/99999999999999999999999",
		"[2001:db8::]/32",
		"1234:1234:1234:1234:1234:1234:1234:1234:1234/64",
	};
	struct cidr c;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (acl_parse_cidr(bad[i], &c) != ACL_PARSE_BAD)
			fail_msg("accepted \"%s\"", bad[i]);
	}
}

static void test_match_ipv4(void **state)
{
	(void)state;
	assert_true(match("192.0.2.0/24", "192.0.2.0"));
	assert_true(match("192.0.2.0/24", "192.0.2.255"));
	assert_false(match("192.0.2.0/24", "192.0.3.0"));
	assert_false(match("192.0.2.0/24", "192.0.1.255"));
	assert_true(match("192.0.2.128/25", "192.0.2.200"));
	assert_false(match("192.0.2.128/25", "192.0.2.127"));
	assert_true(match("10.0.0.0/9", "10.127.255.255"));
	assert_false(match("10.0.0.0/9", "10.128.0.0"));
	assert_true(match("192.0.2.7", "192.0.2.7"));
	assert_false(match("192.0.2.7", "192.0.2.6"));
	assert_true(match("0.0.0.0/0", "203.0.113.1"));
	/* A masked host-bits rule matches the whole network. */
	assert_true(match("192.0.2.77/24", "192.0.2.1"));
	/* Families do not mix. */
	assert_false(match("0.0.0.0/0", "2001:db8::1"));
	assert_false(match("::/0", "192.0.2.1"));
}

static void test_match_ipv6(void **state)
{
	(void)state;
	assert_true(match("2001:db8::/32", "2001:db8:ffff::1"));
	assert_false(match("2001:db8::/32", "2001:db9::1"));
	assert_true(match("2001:db8::/33", "2001:db8:7fff::1"));
	assert_false(match("2001:db8::/33", "2001:db8:8000::1"));
	assert_true(match("::/0", "::1"));
	assert_true(match("::1", "::1"));
	assert_false(match("::1", "::2"));
	assert_true(match("2001:db8::2/127", "2001:db8::3"));
	assert_false(match("2001:db8::2/127", "2001:db8::4"));
}

static void test_match_mapped_client(void **state)
{
	(void)state;
	/* A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d. */
	assert_true(match("192.0.2.0/24", "::ffff:192.0.2.9"));
	assert_false(match("192.0.2.0/24", "::ffff:192.0.3.9"));
	assert_true(match("192.0.2.9", "::ffff:192.0.2.9"));
	assert_true(match("0.0.0.0/0", "::ffff:8.8.8.8"));
	assert_false(match("::/0", "::ffff:8.8.8.8"));
	/* A mapped rule matches both forms. */
	assert_true(match("::ffff:192.0.2.0/120", "192.0.2.9"));
	assert_true(match("::ffff:192.0.2.0/120", "::ffff:192.0.2.9"));
	assert_false(match("::ffff:192.0.2.0/120", "192.0.3.9"));
	/* ::a.b.c.d (IPv4-compatible) is not mapped. */
	assert_false(match("192.0.2.0/24", "::192.0.2.9"));
	/* The unspecified family matches nothing. */
	{
		struct cidr c = rule("0.0.0.0/0");
		union sockname a;

		memset(&a, 0, sizeof(a));
		assert_false(acl_cidr_match(&c, &a));
	}
}

static void test_permits(void **state)
{
	struct cidr allow[2], deny[2];
	struct acl acl = { 0 };
	union sockname a;

	(void)state;
	/* No lists: everyone. */
	a = ip("203.0.113.1");
	assert_true(acl_permits(&acl, &a));

	allow[0] = rule("192.0.2.0/24");
	allow[1] = rule("2001:db8::/32");
	deny[0] = rule("192.0.2.66");
	deny[1] = rule("2001:db8:bad::/48");
	acl.allow = allow;
	acl.nallow = 2;
	acl.has_allow = true;
	acl.deny = deny;
	acl.ndeny = 2;

	a = ip("192.0.2.1");
	assert_true(acl_permits(&acl, &a));
	a = ip("::ffff:192.0.2.1");
	assert_true(acl_permits(&acl, &a));
	a = ip("2001:db8::25");
	assert_true(acl_permits(&acl, &a));
	/* Deny is checked before allow. */
	a = ip("192.0.2.66");
	assert_false(acl_permits(&acl, &a));
	a = ip("::ffff:192.0.2.66");
	assert_false(acl_permits(&acl, &a));
	a = ip("2001:db8:bad::1");
	assert_false(acl_permits(&acl, &a));
	/* Not on the allow list. */
	a = ip("198.51.100.1");
	assert_false(acl_permits(&acl, &a));
	a = ip("2001:db9::1");
	assert_false(acl_permits(&acl, &a));

	/* Deny only: everyone but the denied. */
	acl.has_allow = false;
	acl.allow = NULL;
	acl.nallow = 0;
	a = ip("198.51.100.1");
	assert_true(acl_permits(&acl, &a));
	a = ip("192.0.2.66");
	assert_false(acl_permits(&acl, &a));

	/* An allow key whose every item was bad: nobody (not everyone). */
	acl.has_allow = true;
	acl.ndeny = 0;
	a = ip("198.51.100.1");
	assert_false(acl_permits(&acl, &a));
}

static void test_count_basic(void **state)
{
	union sockname a = ip("192.0.2.1"), b = ip("192.0.2.2");
	union sockname a6 = ip("::ffff:192.0.2.1"), v6 = ip("2001:db8::1");
	union sockname none;

	(void)state;
	assert_int_equal(acl_count_addresses(), 0);
	assert_int_equal(acl_count_get(&a), 0);
	assert_true(acl_count_take(&a, 2));
	assert_true(acl_count_take(&a, 2));
	/* At the limit: refused, nothing taken. */
	assert_false(acl_count_take(&a, 2));
	assert_int_equal(acl_count_get(&a), 2);
	/* The mapped form is the same client. */
	assert_false(acl_count_take(&a6, 2));
	assert_int_equal(acl_count_get(&a6), 2);
	/* The port does not matter. */
	addr_set_port(&a6, 1);
	assert_int_equal(acl_count_get(&a6), 2);
	/* Limit 0: unlimited. */
	assert_true(acl_count_take(&a, 0));
	assert_int_equal(acl_count_get(&a), 3);
	assert_true(acl_count_take(&b, 1));
	assert_false(acl_count_take(&b, 1));
	assert_true(acl_count_take(&v6, 1));
	assert_int_equal(acl_count_addresses(), 3);

	acl_count_put(&a6);
	acl_count_put(&a);
	assert_int_equal(acl_count_get(&a), 1);
	assert_true(acl_count_take(&a, 2));
	acl_count_put(&a);
	acl_count_put(&a);
	assert_int_equal(acl_count_get(&a), 0);
	assert_int_equal(acl_count_addresses(), 2);
	acl_count_put(&b);
	acl_count_put(&v6);
	assert_int_equal(acl_count_addresses(), 0);
	/* A put with nothing taken changes nothing. */
	acl_count_put(&b);
	assert_int_equal(acl_count_addresses(), 0);
	assert_int_equal(acl_count_get(&b), 0);

	/* No family: refused, not counted. */
	memset(&none, 0, sizeof(none));
	assert_false(acl_count_take(&none, 0));
	assert_int_equal(acl_count_addresses(), 0);
	acl_count_put(&none);
}

/* A tiny deterministic generator, so failures reproduce. */
static uint64_t rng_state;

static uint32_t rng(void)
{
	rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(rng_state >> 33);
}

static union sockname nth_addr(size_t i)
{
	union sockname a;

	memset(&a, 0, sizeof(a));
	if (i % 3 == 2) {
		a.in6.sin6_family = AF_INET6;
		a.in6.sin6_addr.s6_addr[0] = 0x20;
		a.in6.sin6_addr.s6_addr[1] = 0x01;
		a.in6.sin6_addr.s6_addr[2] = 0x0d;
		a.in6.sin6_addr.s6_addr[3] = 0xb8;
		a.in6.sin6_addr.s6_addr[14] = (uint8_t)(i >> 8);
		a.in6.sin6_addr.s6_addr[15] = (uint8_t)i;
	} else {
		a.in4.sin_family = AF_INET;
		a.in4.sin_addr.s_addr = htonl(0x0A000000u + (uint32_t)i);
	}
	return a;
}

/* Random takes and puts over `naddr` addresses, every count checked
 * after every step against a plain array. With the table kept at most
 * half full, probe runs form, wrap around the end of the table and are
 * repaired by deletions; a broken backward shift loses or duplicates an
 * entry and a later lookup disagrees with the model. */
static void churn(size_t naddr, size_t steps, unsigned limit, uint64_t seed)
{
	unsigned *model = calloc(naddr, sizeof(*model));
	size_t live = 0;

	assert_non_null(model);
	rng_state = seed;
	for (size_t step = 0; step < steps; step++) {
		size_t i = rng() % naddr;
		union sockname a = nth_addr(i);

		if (rng() % 2 == 0) {
			bool ok = acl_count_take(&a, limit);
			bool want = limit == 0 || model[i] < limit;

			assert_int_equal(ok, want);
			if (ok) {
				if (model[i] == 0)
					live++;
				model[i]++;
			}
		} else {
			acl_count_put(&a);
			if (model[i] > 0 && --model[i] == 0)
				live--;
		}
		assert_int_equal(acl_count_addresses(), live);
		if (step % 64 == 0 || naddr <= 64) {
			for (size_t k = 0; k < naddr; k++) {
				union sockname b = nth_addr(k);

				if (acl_count_get(&b) != model[k])
					fail_msg("step %zu: address %zu count %u, want %u",
						 step, k, acl_count_get(&b),
						 model[k]);
			}
		}
	}
	/* Drain everything: the table ends empty. */
	for (size_t k = 0; k < naddr; k++) {
		union sockname b = nth_addr(k);

		while (model[k] > 0) {
			acl_count_put(&b);
			model[k]--;
		}
	}
	assert_int_equal(acl_count_addresses(), 0);
	for (size_t k = 0; k < naddr; k++) {
		union sockname b = nth_addr(k);

		assert_int_equal(acl_count_get(&b), 0);
	}
	free(model);
}

static void test_count_churn_small(void **state)
{
	(void)state;
	churn(40, 20000, 3, 1);
	churn(60, 20000, 0, 2);
}

static void test_count_churn_large(void **state)
{
	(void)state;
	churn(5000, 200000, 2, 3);
}

/* Many addresses at once: the table grows (rehash) while counts are
 * held, then everything is deleted in an order unrelated to insertion. */
static void test_count_grow_and_delete(void **state)
{
	const size_t n = 20000;

	(void)state;
	for (size_t i = 0; i < n; i++) {
		union sockname a = nth_addr(i);

		assert_true(acl_count_take(&a, 0));
		if (i % 2 == 0)
			assert_true(acl_count_take(&a, 0));
	}
	assert_int_equal(acl_count_addresses(), n);
	for (size_t i = 0; i < n; i++) {
		union sockname a = nth_addr(i);

		assert_int_equal(acl_count_get(&a), i % 2 == 0 ? 2 : 1);
	}
	/* Delete with a stride coprime to n. */
	for (size_t k = 0, i = 0; k < n; k++, i = (i + 7919) % n) {
		union sockname a = nth_addr(i);

		acl_count_put(&a);
		if (i % 2 == 0) {
			assert_int_equal(acl_count_get(&a), 1);
			acl_count_put(&a);
		}
		assert_int_equal(acl_count_get(&a), 0);
		assert_int_equal(acl_count_addresses(), n - k - 1);
		if (k % 997 == 0) {
			/* Everything not yet deleted is still found. */
			for (size_t m = k + 1, j = (i + 7919) % n; m < n;
			     m++, j = (j + 7919) % n) {
				union sockname b = nth_addr(j);

				if (acl_count_get(&b) == 0)
					fail_msg("lost address %zu after %zu deletes",
						 j, k + 1);
			}
		}
	}
	assert_int_equal(acl_count_addresses(), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_ipv4),
		cmocka_unit_test(test_parse_hostbits),
		cmocka_unit_test(test_parse_ipv6),
		cmocka_unit_test(test_parse_mapped),
		cmocka_unit_test(test_parse_bad),
		cmocka_unit_test(test_match_ipv4),
		cmocka_unit_test(test_match_ipv6),
		cmocka_unit_test(test_match_mapped_client),
		cmocka_unit_test(test_permits),
		cmocka_unit_test(test_count_basic),
		cmocka_unit_test(test_count_churn_small),
		cmocka_unit_test(test_count_churn_large),
		cmocka_unit_test(test_count_grow_and_delete),
	};

	return cmocka_run_group_tests_name("acl", tests, NULL, NULL);
}
