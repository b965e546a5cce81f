/* Unit tests for addr: endpoint parsing, formatting, unmapping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "addr.h"

/* Parse text and expect success; returns the endpoint. */
static struct endpoint parse_ok(const char *text, int flags)
{
	struct endpoint ep;
	const char *why = NULL;
	int rc = addr_parse_endpoint(text, flags, &ep, &why);

	if (rc != 0)
		fail_msg("%s: %s", text, why ? why : "(no reason)");
	return ep;
}

/* Parse text and expect failure with exactly this reason. */
static void parse_bad(const char *text, int flags, const char *reason)
{
	struct endpoint ep;
	const char *why = NULL;

	assert_int_equal(addr_parse_endpoint(text, flags, &ep, &why), -1);
	assert_non_null(why);
	assert_string_equal(why, reason);
}

static void test_ipv4(void **state)
{
	struct endpoint ep = parse_ok("192.0.2.10:25", 0);
	char buf[ADDR_STRLEN];

	(void)state;
	assert_true(ep.literal);
	assert_int_equal(ep.port, 25);
	assert_string_equal(ep.host, "192.0.2.10");
	assert_int_equal(ep.sa.sa.sa_family, AF_INET);
	assert_int_equal(ntohs(ep.sa.in4.sin_port), 25);
	assert_int_equal(ntohl(ep.sa.in4.sin_addr.s_addr), 0xC000020A);
	assert_int_equal(addr_port(&ep.sa), 25);
	assert_int_equal(addr_len(&ep.sa), sizeof(struct sockaddr_in));
	assert_string_equal(addr_format(&ep.sa, buf, sizeof(buf)),
			    "192.0.2.10:25");
	assert_string_equal(addr_format_ip(&ep.sa, buf, sizeof(buf)),
			    "192.0.2.10");

	ep = parse_ok("0.0.0.0:65535", 0);
	assert_int_equal(ep.port, 65535);
	assert_string_equal(addr_format(&ep.sa, buf, sizeof(buf)),
			    "0.0.0.0:65535");
	ep = parse_ok("255.255.255.255:1", 0);
	assert_int_equal(ep.port, 1);
}

static void test_ipv6(void **state)
{
	struct endpoint ep = parse_ok("[2001:db8::1]:587", 0);
	char buf[ADDR_STRLEN];
	struct in6_addr want;

	(void)state;
	assert_true(ep.literal);
	assert_int_equal(ep.port, 587);
	assert_string_equal(ep.host, "2001:db8::1");
	assert_int_equal(ep.sa.sa.sa_family, AF_INET6);
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", &want), 1);
	assert_memory_equal(&ep.sa.in6.sin6_addr, &want, 16);
	assert_int_equal(ntohs(ep.sa.in6.sin6_port), 587);
	assert_int_equal(addr_len(&ep.sa), sizeof(struct sockaddr_in6));
	assert_string_equal(addr_format(&ep.sa, buf, sizeof(buf)),
			    "[2001:db8::1]:587");
	assert_string_equal(addr_format_ip(&ep.sa, buf, sizeof(buf)),
			    "2001:db8::1");

	ep = parse_ok("[::]:25", 0);
	assert_string_equal(addr_format(&ep.sa, buf, sizeof(buf)), "[::]:25");
	/* Written in full, printed in the canonical short form. */
	ep = parse_ok("[2001:0DB8:0000:0000:0000:0000:0000:0001]:25", 0);
	assert_string_equal(addr_format(&ep.sa, buf, sizeof(buf)),
			    "[2001:db8::1]:25");
}

static void test_longest_format_fits(void **state)
{
	struct endpoint ep =
		parse_ok("[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535",
			 0);
	char buf[ADDR_STRLEN];

	(void)state;
	addr_format(&ep.sa, buf, sizeof(buf));
	assert_true(strlen(buf) < ADDR_STRLEN);
	assert_string_equal(buf,
			    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
	/* An IPv4-mapped address is printed with its dotted tail. */
	ep = parse_ok("[::ffff:192.0.2.1]:25", 0);
	assert_int_equal(ep.sa.sa.sa_family, AF_INET6);
	assert_string_equal(addr_format(&ep.sa, buf, sizeof(buf)),
			    "[::ffff:192.0.2.1]:25");
}

static void test_hostname(void **state)
{
	struct endpoint ep = parse_ok("mail.lan:2525", ADDR_ALLOW_HOSTNAME);

	(void)state;
	assert_false(ep.literal);
	assert_string_equal(ep.host, "mail.lan");
	assert_int_equal(ep.port, 2525);
	assert_int_equal(ep.sa.sa.sa_family, 0);

	ep = parse_ok("home.example.net.:2525", ADDR_ALLOW_HOSTNAME);
	assert_string_equal(ep.host, "home.example.net.");
	ep = parse_ok("smtp_backend-1:25", ADDR_ALLOW_HOSTNAME);
	assert_string_equal(ep.host, "smtp_backend-1");
	ep = parse_ok("localhost:25", ADDR_ALLOW_HOSTNAME);
	assert_string_equal(ep.host, "localhost");
	ep = parse_ok("1a.example:25", ADDR_ALLOW_HOSTNAME);
	assert_string_equal(ep.host, "1a.example");
	/* A literal is still a literal when names are allowed. */
	ep = parse_ok("10.8.0.2:2525", ADDR_ALLOW_HOSTNAME);
	assert_true(ep.literal);
	assert_int_equal(ep.sa.sa.sa_family, AF_INET);
	ep = parse_ok("[::1]:2525", ADDR_ALLOW_HOSTNAME);
	assert_true(ep.literal);
	assert_int_equal(ep.sa.sa.sa_family, AF_INET6);
}

static void test_hostname_limits(void **state)
{
	char name[400], text[420];

	(void)state;
	/* 63-character label: fine; 64: not. */
	memset(name, 'a', 63);
	name[63] = '\0';
	snprintf(text, sizeof(text), "%s.lan:25", name);
	parse_ok(text, ADDR_ALLOW_HOSTNAME);
	memset(name, 'a', 64);
	name[64] = '\0';
	snprintf(text, sizeof(text), "%s.lan:25", name);
	parse_bad(text, ADDR_ALLOW_HOSTNAME, "bad host name");

	/* 253 characters (labels of 63, 63, 63 and 61): fits host[]. */
	memset(name, 'a', 253);
	name[63] = name[127] = name[191] = '.';
	name[253] = '\0';
	assert_int_equal(strlen(name), 253);
	snprintf(text, sizeof(text), "%s:25", name);
	assert_string_equal(parse_ok(text, ADDR_ALLOW_HOSTNAME).host, name);
	/* 254 does not. */
	snprintf(text, sizeof(text), "%sb:25", name);
	parse_bad(text, ADDR_ALLOW_HOSTNAME, "missing address");
}

static void test_bad_hostnames(void **state)
{
	(void)state;
	parse_bad("mail..lan:25", ADDR_ALLOW_HOSTNAME, "bad host name");
	parse_bad(".lan:25", ADDR_ALLOW_HOSTNAME, "bad host name");
	parse_bad("-mail:25", ADDR_ALLOW_HOSTNAME, "bad host name");
	parse_bad("mail lan:25", ADDR_ALLOW_HOSTNAME, "bad host name");
	parse_bad(" mail:25", ADDR_ALLOW_HOSTNAME, "bad host name");
	parse_bad("mail/x:25", ADDR_ALLOW_HOSTNAME, "bad host name");
	parse_bad("m\xc3\xa4il:25", ADDR_ALLOW_HOSTNAME, "bad host name");
	/* Mistyped IPv4 addresses are not host names (RFC 1123: the last
	 * label is never all digits). */
	parse_bad("10.0.0.256:25", ADDR_ALLOW_HOSTNAME, "bad IPv4 address");
	parse_bad("10.0.0:25", ADDR_ALLOW_HOSTNAME, "bad IPv4 address");
	parse_bad("010.0.0.1:25", ADDR_ALLOW_HOSTNAME, "bad IPv4 address");
	parse_bad("12345:25", ADDR_ALLOW_HOSTNAME, "bad IPv4 address");
	parse_bad("1.2.3.4.:25", ADDR_ALLOW_HOSTNAME, "bad IPv4 address");
	parse_bad("mail.123:25", ADDR_ALLOW_HOSTNAME, "bad host name");
}

static void test_bad_endpoints(void **state)
{
	const char *v4 = "bad IPv4 address (host names are allowed only for backends)";

	(void)state;
	/* Listen addresses are literals only. */
	parse_bad("mail.lan:25", 0, v4);
	parse_bad("localhost:25", 0, v4);
	parse_bad("192.0.2.256:25", 0, v4);
	parse_bad("192.0.2:25", 0, v4);
	parse_bad(" 192.0.2.1:25", 0, v4);

	parse_bad("192.0.2.1", 0, "missing :port");
	parse_bad("", 0, "missing :port");
	parse_bad(":25", 0, "missing address");
	parse_bad(":25", ADDR_ALLOW_HOSTNAME, "missing address");
	parse_bad("::1:25", 0, "IPv6 addresses need brackets: [addr]:port");
	parse_bad("2001:db8::1:25", ADDR_ALLOW_HOSTNAME,
		  "IPv6 addresses need brackets: [addr]:port");

	parse_bad("[::1]", 0, "expected [IPv6]:port");
	parse_bad("[::1]25", 0, "expected [IPv6]:port");
	parse_bad("[::1:25", 0, "expected [IPv6]:port");
	parse_bad("[]:25", 0, "bad IPv6 address");
	parse_bad("[192.0.2.1]:25", 0, "bad IPv6 address");
	parse_bad("[mail.lan]:25", ADDR_ALLOW_HOSTNAME, "bad IPv6 address");
	parse_bad("[::g]:25", 0, "bad IPv6 address");
	parse_bad("[fe80::1%eth0]:25", 0, "bad IPv6 address");
}

static void test_bad_ports(void **state)
{
	static const char *const bad[] = {
		"192.0.2.1:",	  "192.0.2.1:0",      "192.0.2.1:65536",
		"192.0.2.1:-1",	  "192.0.2.1:+25",    "192.0.2.1: 25",
		"192.0.2.1:25 ",  "192.0.2.1:25x",    "192.0.2.1:0x19",
		"192.0.2.1:99999999999999999999999", "[::1]:", "[::1]:0",
		"[::1]:70000",	  "mail.lan:smtp",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		parse_bad(bad[i], ADDR_ALLOW_HOSTNAME, "bad port (1-65535)");
}

static void test_parse_ip(void **state)
{
	union sockname a;
	char buf[ADDR_STRLEN];

	(void)state;
	assert_int_equal(addr_parse_ip("198.51.100.7", &a), 0);
	assert_int_equal(a.sa.sa_family, AF_INET);
	assert_int_equal(addr_port(&a), 0);
	assert_string_equal(addr_format(&a, buf, sizeof(buf)),
			    "198.51.100.7:0");
	assert_int_equal(addr_parse_ip("2001:db8::5", &a), 0);
	assert_int_equal(a.sa.sa_family, AF_INET6);
	assert_string_equal(addr_format_ip(&a, buf, sizeof(buf)),
			    "2001:db8::5");
	assert_int_equal(addr_parse_ip("1.2.3", &a), -1);
	assert_int_equal(addr_parse_ip("1.2.3.4:25", &a), -1);
	assert_int_equal(addr_parse_ip("[::1]", &a), -1);
	assert_int_equal(addr_parse_ip("", &a), -1);
	assert_int_equal(addr_parse_ip("example.com", &a), -1);
}

static void test_set_port(void **state)
{
	union sockname a;

	(void)state;
	assert_int_equal(addr_parse_ip("192.0.2.1", &a), 0);
	addr_set_port(&a, 2525);
	assert_int_equal(addr_port(&a), 2525);
	assert_int_equal(a.in4.sin_port, htons(2525));
	assert_int_equal(addr_parse_ip("::1", &a), 0);
	addr_set_port(&a, 465);
	assert_int_equal(addr_port(&a), 465);
	assert_int_equal(a.in6.sin6_port, htons(465));
	memset(&a, 0, sizeof(a));
	assert_int_equal(addr_port(&a), 0);
}

static void test_unmap(void **state)
{
	union sockname in, out;
	char buf[ADDR_STRLEN];

	(void)state;
	assert_int_equal(addr_parse_ip("::ffff:203.0.113.9", &in), 0);
	addr_set_port(&in, 40000);
	addr_unmap(&in, &out);
	assert_int_equal(out.sa.sa_family, AF_INET);
	assert_int_equal(addr_port(&out), 40000);
	assert_int_equal(ntohl(out.in4.sin_addr.s_addr), 0xCB007109);
	assert_string_equal(addr_format(&out, buf, sizeof(buf)),
			    "203.0.113.9:40000");
	assert_int_equal(addr_len(&out), sizeof(struct sockaddr_in));

	/* In place. */
	addr_unmap(&in, &in);
	assert_int_equal(in.sa.sa_family, AF_INET);
	assert_string_equal(addr_format(&in, buf, sizeof(buf)),
			    "203.0.113.9:40000");

	/* Not mapped: copied unchanged. */
	assert_int_equal(addr_parse_ip("2001:db8::1", &in), 0);
	addr_set_port(&in, 25);
	addr_unmap(&in, &out);
	assert_true(addr_equal(&in, &out));
	assert_int_equal(out.sa.sa_family, AF_INET6);
	/* ::1 and the IPv4-compatible ::1.2.3.4 are not mapped. */
	assert_int_equal(addr_parse_ip("::1.2.3.4", &in), 0);
	addr_unmap(&in, &out);
	assert_int_equal(out.sa.sa_family, AF_INET6);
	assert_int_equal(addr_parse_ip("192.0.2.1", &in), 0);
	addr_unmap(&in, &out);
	assert_true(addr_equal(&in, &out));
}

static void test_equal(void **state)
{
	union sockname a, b;

	(void)state;
	assert_int_equal(addr_parse_ip("192.0.2.1", &a), 0);
	assert_int_equal(addr_parse_ip("192.0.2.1", &b), 0);
	addr_set_port(&a, 25);
	addr_set_port(&b, 25);
	assert_true(addr_equal(&a, &b));
	addr_set_port(&b, 26);
	assert_false(addr_equal(&a, &b));
	assert_int_equal(addr_parse_ip("192.0.2.2", &b), 0);
	addr_set_port(&b, 25);
	assert_false(addr_equal(&a, &b));
	/* Mapped and plain IPv4 are different socket addresses. */
	assert_int_equal(addr_parse_ip("::ffff:192.0.2.1", &b), 0);
	addr_set_port(&b, 25);
	assert_false(addr_equal(&a, &b));
	assert_int_equal(addr_parse_ip("::1", &a), 0);
	assert_int_equal(addr_parse_ip("::1", &b), 0);
	assert_true(addr_equal(&a, &b));
	/* Unknown families are never equal. */
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	assert_false(addr_equal(&a, &b));
}

static void test_format_edges(void **state)
{
	union sockname a;
	char buf[ADDR_STRLEN], small[8];

	(void)state;
	memset(&a, 0, sizeof(a));
	assert_string_equal(addr_format(&a, buf, sizeof(buf)), "-");
	assert_string_equal(addr_format_ip(&a, buf, sizeof(buf)), "-");
	/* Truncated, always terminated. */
	assert_int_equal(addr_parse_ip("203.0.113.200", &a), 0);
	addr_set_port(&a, 2525);
	addr_format(&a, small, sizeof(small));
	assert_string_equal(small, "203.0.1");
	/* Too small for inet_ntop: "-" instead. */
	addr_format_ip(&a, small, sizeof(small));
	assert_string_equal(small, "-");
	/* len 0 touches nothing. */
	small[0] = 'x';
	addr_format_ip(&a, small, 0);
	assert_int_equal(small[0], 'x');
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ipv4),
		cmocka_unit_test(test_ipv6),
		cmocka_unit_test(test_longest_format_fits),
		cmocka_unit_test(test_hostname),
		cmocka_unit_test(test_hostname_limits),
		cmocka_unit_test(test_bad_hostnames),
		cmocka_unit_test(test_bad_endpoints),
		cmocka_unit_test(test_bad_ports),
		cmocka_unit_test(test_parse_ip),
		cmocka_unit_test(test_set_port),
		cmocka_unit_test(test_unmap),
		cmocka_unit_test(test_equal),
		cmocka_unit_test(test_format_edges),
	};

	return cmocka_run_group_tests_name("addr", tests, NULL, NULL);
}
