/* Unit tests for proxyproto: exact v1 lines and v2 byte layouts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxyproto.h"

#define CANARY 0xa5

static const uint8_t sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
};

static union sockname sn(const char *ip, uint16_t port)
{
	union sockname a;

	assert_int_equal(addr_parse_ip(ip, &a), 0);
	addr_set_port(&a, port);
	return a;
}

static void expect_v1(const union sockname *src, const union sockname *dst,
		      const char *want)
{
	char buf[PP_V1_MAX];
	ssize_t n;

	memset(buf, CANARY, sizeof(buf));
	n = pp_encode_v1(buf, sizeof(buf), src, dst);
	assert_int_equal(n, (ssize_t)strlen(want));
	assert_memory_equal(buf, want, strlen(want));
	/* nothing written past the line, not even a NUL */
	if ((size_t)n < sizeof(buf))
		assert_int_equal((uint8_t)buf[n], CANARY);
}

/* Every buffer shorter than the header gives -1 and leaves the bytes
 * from len on untouched; a heap buffer of exactly len lets ASan see any
 * overflow too. */
static void expect_too_small_v1(const union sockname *src,
				const union sockname *dst, size_t need)
{
	size_t len;

	for (len = 0; len < need; len++) {
		char guard[PP_V1_MAX + 8];
		char *heap = malloc(len ? len : 1);

		assert_non_null(heap);
		memset(guard, CANARY, sizeof(guard));
		assert_int_equal(pp_encode_v1(guard, len, src, dst), -1);
		for (size_t i = len; i < sizeof(guard); i++)
			assert_int_equal((uint8_t)guard[i], CANARY);
		assert_int_equal(pp_encode_v1(heap, len, src, dst), -1);
		free(heap);
	}
	{
		char *heap = malloc(need);

		assert_non_null(heap);
		assert_int_equal(pp_encode_v1(heap, need, src, dst),
				 (ssize_t)need);
		free(heap);
	}
}

static void expect_too_small_v2(const union sockname *src,
				const union sockname *dst,
				const struct pp_tls *tls, size_t need)
{
	size_t len;

	for (len = 0; len < need; len++) {
		char guard[PP_V2_MAX + 8];
		char *heap = malloc(len ? len : 1);

		assert_non_null(heap);
		memset(guard, CANARY, sizeof(guard));
		assert_int_equal(pp_encode_v2(guard, len, src, dst, tls), -1);
		for (size_t i = len; i < sizeof(guard); i++)
			assert_int_equal((uint8_t)guard[i], CANARY);
		assert_int_equal(pp_encode_v2(heap, len, src, dst, tls), -1);
		free(heap);
	}
	{
		char *heap = malloc(need);

		assert_non_null(heap);
		assert_int_equal(pp_encode_v2(heap, need, src, dst, tls),
				 (ssize_t)need);
		free(heap);
	}
}

static void expect_v2(const union sockname *src, const union sockname *dst,
		      const struct pp_tls *tls, const uint8_t *want,
		      size_t want_len)
{
	char buf[PP_V2_MAX];
	ssize_t n;

	memset(buf, CANARY, sizeof(buf));
	n = pp_encode_v2(buf, sizeof(buf), src, dst, tls);
	assert_int_equal(n, (ssize_t)want_len);
	assert_memory_equal(buf, want, want_len);
	if (want_len < sizeof(buf))
		assert_int_equal((uint8_t)buf[want_len], CANARY);
	expect_too_small_v2(src, dst, tls, want_len);
}

/* ---- v1 ---- */

static void test_v1_tcp4(void **state)
{
	union sockname s = sn("1.2.3.4", 1111), d = sn("5.6.7.8", 25);

	(void)state;
	expect_v1(&s, &d, "PROXY TCP4 1.2.3.4 5.6.7.8 1111 25\r\n");
}

static void test_v1_tcp6(void **state)
{
	union sockname s = sn("2001:db8:0:0:0:0:0:1", 40000);
	union sockname d = sn("2001:db8::25", 587);

	(void)state;
	expect_v1(&s, &d, "PROXY TCP6 2001:db8::1 2001:db8::25 40000 587\r\n");
}

static void test_v1_loopback6(void **state)
{
	union sockname s = sn("::1", 1), d = sn("::", 65535);

	(void)state;
	expect_v1(&s, &d, "PROXY TCP6 ::1 :: 1 65535\r\n");
}

static void test_v1_mapped(void **state)
{
	union sockname s = sn("::ffff:192.0.2.10", 51000);
	union sockname d = sn("::ffff:198.51.100.1", 25);
	union sockname d4 = sn("198.51.100.1", 25);

	(void)state;
	expect_v1(&s, &d, "PROXY TCP4 192.0.2.10 198.51.100.1 51000 25\r\n");
	/* mapped on one side only is still IPv4 on both once unmapped */
	expect_v1(&s, &d4, "PROXY TCP4 192.0.2.10 198.51.100.1 51000 25\r\n");
}

static void test_v1_unknown(void **state)
{
	union sockname s4 = sn("1.2.3.4", 1111), d6 = sn("2001:db8::1", 25);
	union sockname none;

	(void)state;
	memset(&none, 0, sizeof(none));
	expect_v1(NULL, NULL, "PROXY UNKNOWN\r\n");
	expect_v1(&s4, NULL, "PROXY UNKNOWN\r\n");
	expect_v1(NULL, &d6, "PROXY UNKNOWN\r\n");
	expect_v1(&s4, &d6, "PROXY UNKNOWN\r\n");
	expect_v1(&d6, &s4, "PROXY UNKNOWN\r\n");
	expect_v1(&none, &none, "PROXY UNKNOWN\r\n");
	expect_too_small_v1(NULL, NULL, strlen("PROXY UNKNOWN\r\n"));
}

static void test_v1_max_length(void **state)
{
	union sockname s = sn("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
	union sockname d = sn("fffe:fffe:fffe:fffe:fffe:fffe:fffe:fffe", 65534);
	const char *want = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
			   "fffe:fffe:fffe:fffe:fffe:fffe:fffe:fffe "
			   "65535 65534\r\n";

	(void)state;
	assert_true(strlen(want) <= PP_V1_MAX);
	expect_v1(&s, &d, want);
	expect_too_small_v1(&s, &d, strlen(want));
}

static void test_v1_too_small(void **state)
{
	union sockname s = sn("1.2.3.4", 1111), d = sn("5.6.7.8", 25);
	union sockname s6 = sn("2001:db8::1", 40000), d6 = sn("::1", 25);

	(void)state;
	expect_too_small_v1(&s, &d,
			    strlen("PROXY TCP4 1.2.3.4 5.6.7.8 1111 25\r\n"));
	expect_too_small_v1(&s6, &d6,
			    strlen("PROXY TCP6 2001:db8::1 ::1 40000 25\r\n"));
}

/* ---- v2 ---- */

static void test_v2_tcp4(void **state)
{
	union sockname s = sn("1.2.3.4", 1111), d = sn("5.6.7.8", 25);
	uint8_t want[28];

	(void)state;
	memcpy(want, sig, 12);
	memcpy(want + 12,
	       (const uint8_t[]){ 0x21, 0x11, 0x00, 0x0c, 1, 2, 3, 4, 5, 6,
				  7, 8, 0x04, 0x57, 0x00, 0x19 },
	       16);
	expect_v2(&s, &d, NULL, want, sizeof(want));
}

static void test_v2_tcp6(void **state)
{
	union sockname s = sn("2001:db8::1", 0xabcd);
	union sockname d = sn("fe80::1:2", 587);
	uint8_t want[52] = { 0 };

	(void)state;
	memcpy(want, sig, 12);
	want[12] = 0x21;
	want[13] = 0x21;
	want[14] = 0x00;
	want[15] = 36;
	want[16] = 0x20; /* 2001:0db8::1 */
	want[17] = 0x01;
	want[18] = 0x0d;
	want[19] = 0xb8;
	want[31] = 0x01;
	want[32] = 0xfe; /* fe80::1:2 */
	want[33] = 0x80;
	want[45] = 0x01;
	want[47] = 0x02;
	want[48] = 0xab;
	want[49] = 0xcd;
	want[50] = 0x02; /* 587 */
	want[51] = 0x4b;
	expect_v2(&s, &d, NULL, want, sizeof(want));
}

static void test_v2_mapped(void **state)
{
	union sockname s = sn("::ffff:10.0.0.1", 2525);
	union sockname d = sn("::ffff:10.0.0.254", 25);
	uint8_t want[28];

	(void)state;
	memcpy(want, sig, 12);
	memcpy(want + 12,
	       (const uint8_t[]){ 0x21, 0x11, 0x00, 0x0c, 10, 0, 0, 1, 10, 0,
				  0, 254, 0x09, 0xdd, 0x00, 0x19 },
	       16);
	expect_v2(&s, &d, NULL, want, sizeof(want));
}

static void test_v2_local(void **state)
{
	union sockname s = sn("1.2.3.4", 1111);
	struct pp_tls tls = { "TLSv1.3", "TLS_AES_128_GCM_SHA256", "mx" };
	uint8_t want[16];

	(void)state;
	memcpy(want, sig, 12);
	memcpy(want + 12, (const uint8_t[]){ 0x20, 0x00, 0x00, 0x00 }, 4);
	expect_v2(NULL, NULL, NULL, want, sizeof(want));
	expect_v2(&s, NULL, NULL, want, sizeof(want));
	expect_v2(NULL, &s, NULL, want, sizeof(want));
	/* LOCAL carries no address, hence nothing to attach a TLV to */
	expect_v2(NULL, NULL, &tls, want, sizeof(want));
}

static void test_v2_mixed_families(void **state)
{
	union sockname s4 = sn("1.2.3.4", 1111), d6 = sn("2001:db8::1", 25);
	union sockname none;
	struct pp_tls tls = { "TLSv1.3", NULL, NULL };
	uint8_t want[16];

	(void)state;
	memset(&none, 0, sizeof(none));
	/* PROXY with UNSPEC: the v2 counterpart of "PROXY UNKNOWN" */
	memcpy(want, sig, 12);
	memcpy(want + 12, (const uint8_t[]){ 0x21, 0x00, 0x00, 0x00 }, 4);
	expect_v2(&s4, &d6, NULL, want, sizeof(want));
	expect_v2(&d6, &s4, &tls, want, sizeof(want));
	expect_v2(&none, &none, NULL, want, sizeof(want));
}

static void test_v2_tls(void **state)
{
	union sockname s = sn("1.2.3.4", 1111), d = sn("5.6.7.8", 465);
	struct pp_tls tls = { "TLSv1.3", "TLS_AES_256_GCM_SHA384", NULL };
	static const uint8_t tail[] = {
		0x20, 0x00, 0x28, /* PP2_TYPE_SSL, 40 bytes */
		0x01, /* PP2_CLIENT_SSL */
		0x00, 0x00, 0x00, 0x00, /* verify */
		0x21, 0x00, 0x07, 'T', 'L', 'S', 'v', '1', '.', '3',
		0x23, 0x00, 0x16, 'T', 'L', 'S', '_', 'A', 'E', 'S', '_', '2',
		'5', '6', '_', 'G', 'C', 'M', '_', 'S', 'H', 'A', '3', '8',
		'4',
	};
	uint8_t want[28 + sizeof(tail)];

	(void)state;
	memcpy(want, sig, 12);
	memcpy(want + 12,
	       (const uint8_t[]){ 0x21, 0x11, 0x00, 12 + sizeof(tail), 1, 2,
				  3, 4, 5, 6, 7, 8, 0x04, 0x57, 0x01, 0xd1 },
	       16);
	memcpy(want + 28, tail, sizeof(tail));
	expect_v2(&s, &d, &tls, want, sizeof(want));
}

static void test_v2_tls_sni(void **state)
{
	union sockname s = sn("::ffff:1.2.3.4", 1111);
	union sockname d = sn("5.6.7.8", 465);
	struct pp_tls tls = { "TLSv1.2", "AES128-SHA", "mail.example.org" };
	static const uint8_t tail[] = {
		0x20, 0x00, 0x1c, /* PP2_TYPE_SSL, 28 bytes */
		0x01, 0x00, 0x00, 0x00, 0x00,
		0x21, 0x00, 0x07, 'T', 'L', 'S', 'v', '1', '.', '2',
		0x23, 0x00, 0x0a, 'A', 'E', 'S', '1', '2', '8', '-', 'S', 'H',
		'A',
		0x02, 0x00, 0x10, 'm', 'a', 'i', 'l', '.', 'e', 'x', 'a', 'm',
		'p', 'l', 'e', '.', 'o', 'r', 'g',
	};
	uint8_t want[28 + sizeof(tail)];

	(void)state;
	memcpy(want, sig, 12);
	memcpy(want + 12,
	       (const uint8_t[]){ 0x21, 0x11, 0x00, 12 + sizeof(tail), 1, 2,
				  3, 4, 5, 6, 7, 8, 0x04, 0x57, 0x01, 0xd1 },
	       16);
	memcpy(want + 28, tail, sizeof(tail));
	expect_v2(&s, &d, &tls, want, sizeof(want));
}

static void test_v2_tls_bare(void **state)
{
	union sockname s = sn("2001:db8::1", 1), d = sn("2001:db8::2", 2);
	struct pp_tls tls = { NULL, NULL, NULL };
	struct pp_tls sni_only = { NULL, NULL, "a" };
	uint8_t want[52 + 8 + 4] = { 0 };

	(void)state;
	memcpy(want, sig, 12);
	want[12] = 0x21;
	want[13] = 0x21;
	want[15] = 36 + 8;
	want[16] = 0x20;
	want[17] = 0x01;
	want[18] = 0x0d;
	want[19] = 0xb8;
	want[31] = 1;
	want[32] = 0x20;
	want[33] = 0x01;
	want[34] = 0x0d;
	want[35] = 0xb8;
	want[47] = 2;
	want[49] = 1;
	want[51] = 2;
	/* only the fixed part of the SSL TLV */
	memcpy(want + 52,
	       (const uint8_t[]){ 0x20, 0x00, 0x05, 0x01, 0, 0, 0, 0 }, 8);
	expect_v2(&s, &d, &tls, want, 60);
	want[15] = 36 + 8 + 4;
	memcpy(want + 60, (const uint8_t[]){ 0x02, 0x00, 0x01, 'a' }, 4);
	expect_v2(&s, &d, &sni_only, want, sizeof(want));
}

static void test_v2_worst_case_fits(void **state)
{
	union sockname s = sn("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
	union sockname d = sn("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535);
	char sni[256], buf[PP_V2_MAX];
	/* a cipher name longer than any OpenSSL 3 reports */
	struct pp_tls tls = { "TLSv1.3",
			      "ECDHE-ECDSA-CHACHA20-POLY1305-SHA256-XXXXXXXXXXXX",
			      sni };
	ssize_t n;

	(void)state;
	memset(sni, 'a', 255);
	sni[255] = '\0';
	n = pp_encode_v2(buf, sizeof(buf), &s, &d, &tls);
	assert_true(n > 0);
	assert_true(n <= PP_V2_MAX);
	assert_int_equal((size_t)n, 16 + 36 + 3 + 5 + 3 + 7 + 3 +
					    strlen(tls.cipher) + 3 + 255);
	assert_int_equal(((uint8_t)buf[14] << 8) | (uint8_t)buf[15], n - 16);
}

static void test_v2_oversized_tlv(void **state)
{
	union sockname s = sn("1.2.3.4", 1), d = sn("5.6.7.8", 2);
	size_t big = 70000;
	char *sni = malloc(big + 1), *buf = malloc(big * 2);
	struct pp_tls tls = { NULL, NULL, sni };

	(void)state;
	assert_non_null(sni);
	assert_non_null(buf);
	memset(sni, 'x', big);
	sni[big] = '\0';
	/* cannot be described by the 16-bit length: refused, not wrapped */
	assert_int_equal(pp_encode_v2(buf, big * 2, &s, &d, &tls), -1);
	/* just under the 16-bit total still works */
	sni[65535 - 12 - 8 - 3] = '\0';
	assert_int_equal(pp_encode_v2(buf, big * 2, &s, &d, &tls),
			 16 + 65535);
	sni[65535 - 12 - 8 - 3] = 'x';
	sni[65535 - 12 - 8 - 3 + 1] = '\0';
	assert_int_equal(pp_encode_v2(buf, big * 2, &s, &d, &tls), -1);
	free(sni);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1_tcp4),
		cmocka_unit_test(test_v1_tcp6),
		cmocka_unit_test(test_v1_loopback6),
		cmocka_unit_test(test_v1_mapped),
		cmocka_unit_test(test_v1_unknown),
		cmocka_unit_test(test_v1_max_length),
		cmocka_unit_test(test_v1_too_small),
		cmocka_unit_test(test_v2_tcp4),
		cmocka_unit_test(test_v2_tcp6),
		cmocka_unit_test(test_v2_mapped),
		cmocka_unit_test(test_v2_local),
		cmocka_unit_test(test_v2_mixed_families),
		cmocka_unit_test(test_v2_tls),
		cmocka_unit_test(test_v2_tls_sni),
		cmocka_unit_test(test_v2_tls_bare),
		cmocka_unit_test(test_v2_worst_case_fits),
		cmocka_unit_test(test_v2_oversized_tlv),
	};

	return cmocka_run_group_tests_name("proxyproto", tests, NULL, NULL);
}
