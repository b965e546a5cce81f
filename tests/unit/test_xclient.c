/* Unit tests for xclient: the XCLIENT command's exact bytes, and the
 * dialogue with the backend (greeting, EHLO, XCLIENT, new greeting) fed
 * whole, byte by byte and split everywhere, with every way it must fail. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "buffer.h"
#include "xclient.h"

#define S(lit) lit, sizeof(lit) - 1

#define XC_EHLO "proxy.test"
#define XC_ALL                                                        \
	(XCLIENT_ADDR | XCLIENT_PORT | XCLIENT_NAME | XCLIENT_PROTO | \
	 XCLIENT_DESTADDR | XCLIENT_DESTPORT)

/* ---- addresses ---- */

static union sockname xc_sock(const char *ip, uint16_t port)
{
	union sockname a;

	memset(&a, 0, sizeof(a));
	assert_int_equal(addr_parse_ip(ip, &a), 0);
	addr_set_port(&a, port);
	return a;
}

/* The client and our local address used by most dialogues. */
static union sockname xc_client4(void)
{
	return xc_sock("192.0.2.1", 40000);
}

static union sockname xc_local4(void)
{
	return xc_sock("198.51.100.7", 25);
}

/* ---- xclient_format ---- */

static void xc_expect_format(unsigned attrs, const union sockname *client,
			     const union sockname *local, const char *want)
{
	char buf[SMTP_LINE_MAX];
	long n;

	memset(buf, 'Z', sizeof(buf));
	n = xclient_format(buf, sizeof(buf), attrs, client, local);
	assert_int_equal(n, (long)strlen(want));
	assert_string_equal(buf, want);
}

static void test_format_ipv4_all(void **state)
{
	union sockname c = xc_client4(), l = xc_local4();

	(void)state;
	xc_expect_format(XC_ALL, &c, &l,
			 "XCLIENT ADDR=192.0.2.1 PORT=40000 NAME=[UNAVAILABLE] "
			 "PROTO=ESMTP DESTADDR=198.51.100.7 DESTPORT=25\r\n");
}

static void test_format_ipv6_all(void **state)
{
	union sockname c = xc_sock("2001:db8::1", 5555);
	union sockname l = xc_sock("::1", 2525);

	(void)state;
	xc_expect_format(XC_ALL, &c, &l,
			 "XCLIENT ADDR=IPV6:2001:db8::1 PORT=5555 "
			 "NAME=[UNAVAILABLE] PROTO=ESMTP DESTADDR=IPV6:::1 "
			 "DESTPORT=2525\r\n");
	c = xc_sock("2001:db8:ffff:ffff:ffff:ffff:ffff:fffe", 65535);
	xc_expect_format(XCLIENT_ADDR | XCLIENT_PORT, &c, &l,
			 "XCLIENT ADDR=IPV6:2001:db8:ffff:ffff:ffff:ffff:ffff:fffe "
			 "PORT=65535\r\n");
}

/* An IPv4-mapped IPv6 address (a dual-stack listener's view of an IPv4
 * client) is the IPv4 client: Postfix must see "1.2.3.4", not
 * "IPV6:::ffff:1.2.3.4". */
static void test_format_mapped(void **state)
{
	union sockname c = xc_sock("::ffff:192.0.2.77", 40001);
	union sockname l = xc_sock("::ffff:198.51.100.7", 587);

	(void)state;
	xc_expect_format(XC_ALL, &c, &l,
			 "XCLIENT ADDR=192.0.2.77 PORT=40001 NAME=[UNAVAILABLE] "
			 "PROTO=ESMTP DESTADDR=198.51.100.7 DESTPORT=587\r\n");
}

/* Only the attributes asked for, always in the same order. */
static void test_format_subsets(void **state)
{
	union sockname c = xc_client4(), l = xc_local4();

	(void)state;
	xc_expect_format(0, &c, &l, "XCLIENT\r\n");
	xc_expect_format(XCLIENT_ADDR, &c, &l, "XCLIENT ADDR=192.0.2.1\r\n");
	xc_expect_format(XCLIENT_DESTPORT | XCLIENT_ADDR, &c, &l,
			 "XCLIENT ADDR=192.0.2.1 DESTPORT=25\r\n");
	xc_expect_format(XCLIENT_PROTO | XCLIENT_NAME, &c, &l,
			 "XCLIENT NAME=[UNAVAILABLE] PROTO=ESMTP\r\n");
	xc_expect_format(XCLIENT_DESTADDR | XCLIENT_PORT, &c, &l,
			 "XCLIENT PORT=40000 DESTADDR=198.51.100.7\r\n");
	/* bits that name no attribute are ignored */
	xc_expect_format(XCLIENT_ADDR | (1u << 12), &c, &l,
			 "XCLIENT ADDR=192.0.2.1\r\n");
	c = xc_sock("10.0.0.1", 0);
	xc_expect_format(XCLIENT_ADDR | XCLIENT_PORT, &c, &l,
			 "XCLIENT ADDR=10.0.0.1 PORT=0\r\n");
}

/* Every buffer one byte too small or smaller gets -1 and not one byte
 * written past its length; the exact size (with the NUL) fits. */
static void xc_format_sizes(unsigned attrs, const union sockname *c,
			    const union sockname *l, const char *want)
{
	size_t full = strlen(want), len;

	for (len = 0; len <= full + 1; len++) {
		/* on the heap with one guard byte: the guard catches a
		 * write just past len, ASan anything further */
		char *buf = malloc(len + 1);
		long n;

		assert_non_null(buf);
		memset(buf, 'Z', len + 1);
		n = xclient_format(buf, len, attrs, c, l);
		assert_int_equal(buf[len], 'Z');
		if (len <= full) {
			assert_int_equal(n, -1);
		} else {
			assert_int_equal(n, (long)full);
			assert_memory_equal(buf, want, full + 1);
		}
		free(buf);
	}
}

static void test_format_too_small(void **state)
{
	union sockname c = xc_client4(), l = xc_local4();
	union sockname c6 = xc_sock("2001:db8::1", 5555);

	(void)state;
	xc_format_sizes(XC_ALL, &c, &l,
			"XCLIENT ADDR=192.0.2.1 PORT=40000 NAME=[UNAVAILABLE] "
			"PROTO=ESMTP DESTADDR=198.51.100.7 DESTPORT=25\r\n");
	xc_format_sizes(XCLIENT_ADDR, &c6, &l, "XCLIENT ADDR=IPV6:2001:db8::1\r\n");
	xc_format_sizes(0, &c, &l, "XCLIENT\r\n");
}

/* ---- the dialogue ---- */

/* What one run produced, to compare runs fed in different chunkings. */
struct xc_run {
	enum xclient_phase phase;
	unsigned attrs;
	bool offered;
	bool full; /* xclient_backend returned -1 */
	size_t used; /* bytes consumed over all chunks */
	char failure[SMTP_LINE_MAX];
	size_t uplen, downlen;
	char up[2 * SMTP_LINE_MAX]; /* what we sent the backend */
	char down[XCLIENT_REPLY_MAX]; /* what went to the client */
};

static void xc_drain(struct buffer *b, char *out, size_t room, size_t *len)
{
	const char *p;
	size_t avail = 0;

	*len = 0;
	p = buffer_read_ptr(b, &avail);
	if (p != NULL) {
		assert_true(avail <= room);
		memcpy(out, p, avail);
		*len = avail;
	}
	buffer_release(b);
}

static bool xc_ended(const struct xclient *x)
{
	return x->phase == XCLIENT_DONE || x->phase == XCLIENT_FAILED;
}

/* Feeds data in chunks ending at the offsets in cuts (ascending, then n),
 * each chunk in its own heap block so ASan sees any over-read. */
static void xc_chunked(const union sockname *client,
		       const union sockname *local, const char *data, size_t n,
		       const size_t *cuts, size_t ncuts, struct xc_run *out)
{
	struct xclient *x = malloc(sizeof(*x));
	struct buffer up = { 0 }, down = { 0 };
	size_t from = 0, i;
	bool ended = false;

	assert_non_null(x);
	memset(out, 0, sizeof(*out));
	xclient_init(x, XC_EHLO, client, local);
	assert_int_equal(x->phase, XCLIENT_GREETING);
	for (i = 0; i <= ncuts && !out->full; i++) {
		size_t to = i < ncuts ? cuts[i] : n;
		size_t len = to - from;
		char *chunk = malloc(len ? len : 1);
		long got;

		assert_non_null(chunk);
		memcpy(chunk, data + from, len);
		got = xclient_backend(x, chunk, len, &up, &down);
		free(chunk);
		from = to;
		if (got == -1) {
			out->full = true;
			break;
		}
		assert_true(got >= 0 && (size_t)got <= len);
		/* once over, it takes nothing more */
		if (ended)
			assert_int_equal(got, 0);
		/* a chunk is taken whole unless the dialogue ended in it */
		if ((size_t)got < len)
			assert_true(xc_ended(x));
		ended = xc_ended(x);
		out->used += (size_t)got;
	}
	out->phase = x->phase;
	out->attrs = x->attrs;
	out->offered = x->offered;
	/* the failure text is set exactly when the phase says so */
	if (x->phase == XCLIENT_FAILED)
		assert_true(x->failure[0] != '\0');
	else
		assert_int_equal(x->failure[0], '\0');
	memcpy(out->failure, x->failure, sizeof(out->failure));
	xc_drain(&up, out->up, sizeof(out->up), &out->uplen);
	xc_drain(&down, out->down, sizeof(out->down), &out->downlen);
	free(x);
}

static void xc_assert_same(const struct xc_run *a, const struct xc_run *b)
{
	assert_int_equal(a->phase, b->phase);
	assert_int_equal(a->attrs, b->attrs);
	assert_int_equal(a->offered, b->offered);
	assert_int_equal(a->full, b->full);
	assert_int_equal(a->used, b->used);
	assert_string_equal(a->failure, b->failure);
	assert_int_equal(a->uplen, b->uplen);
	assert_memory_equal(a->up, b->up, a->uplen);
	assert_int_equal(a->downlen, b->downlen);
	assert_memory_equal(a->down, b->down, a->downlen);
}

/* Whole, byte by byte, every single split and (for short inputs) every
 * pair of splits all give the same run, returned in want. */
static void xc_all_splits(const union sockname *client,
			  const union sockname *local, const char *data,
			  size_t n, struct xc_run *want)
{
	struct xc_run *got = malloc(sizeof(*got));
	size_t i, j, *cuts = malloc((n + 2) * sizeof(*cuts));

	assert_non_null(got);
	assert_non_null(cuts);
	xc_chunked(client, local, data, n, NULL, 0, want);
	for (i = 0; i < n; i++)
		cuts[i] = i + 1;
	xc_chunked(client, local, data, n, cuts, n, got);
	xc_assert_same(got, want);
	for (i = 0; i <= n; i++) {
		cuts[0] = i;
		xc_chunked(client, local, data, n, cuts, 1, got);
		xc_assert_same(got, want);
	}
	for (i = 0; i <= n && n <= 320; i += 3) {
		for (j = i; j <= n; j++) {
			cuts[0] = i;
			cuts[1] = j;
			xc_chunked(client, local, data, n, cuts, 2, got);
			xc_assert_same(got, want);
		}
	}
	free(cuts);
	free(got);
}

/* A dialogue that succeeds: what we sent (EHLO then XCLIENT), the new
 * greeting the client gets, and all of data consumed but extra bytes. */
static void xc_expect_done(const union sockname *client,
			   const union sockname *local, const char *data,
			   size_t n, size_t extra, unsigned attrs,
			   const char *xclient_cmd, const char *greeting)
{
	struct xc_run *r = malloc(sizeof(*r));
	char up[2 * SMTP_LINE_MAX];
	int k;

	assert_non_null(r);
	k = snprintf(up, sizeof(up), "EHLO %s\r\n%s", XC_EHLO, xclient_cmd);
	assert_true(k > 0 && (size_t)k < sizeof(up));
	xc_all_splits(client, local, data, n, r);
	assert_int_equal(r->phase, XCLIENT_DONE);
	assert_false(r->full);
	assert_true(r->offered);
	assert_int_equal(r->attrs, attrs);
	assert_string_equal(r->failure, "");
	assert_int_equal(r->used, n - extra);
	assert_int_equal(r->uplen, (size_t)k);
	assert_memory_equal(r->up, up, r->uplen);
	assert_int_equal(r->downlen, strlen(greeting));
	assert_memory_equal(r->down, greeting, r->downlen);
	free(r);
}

/* A dialogue that fails: the failure text (exact, or when contains is
 * set, containing each of the NULL-ended words), and what we had sent.
 * Nothing ever goes to the client. */
static void xc_expect_failed(const char *data, size_t n, const char *up,
			     const char *failure, const char *const *contains)
{
	union sockname c = xc_client4(), l = xc_local4();
	struct xc_run *r = malloc(sizeof(*r));

	assert_non_null(r);
	xc_all_splits(&c, &l, data, n, r);
	assert_int_equal(r->phase, XCLIENT_FAILED);
	assert_false(r->full);
	if (failure != NULL)
		assert_string_equal(r->failure, failure);
	for (; contains != NULL && *contains != NULL; contains++)
		if (strstr(r->failure, *contains) == NULL)
			fail_msg("failure \"%s\" lacks \"%s\"", r->failure,
				 *contains);
	assert_int_equal(r->uplen, strlen(up));
	assert_memory_equal(r->up, up, r->uplen);
	assert_int_equal(r->downlen, 0);
	free(r);
}

#define XC_GREETING "220 mx.backend.test ESMTP Postfix\r\n"
#define XC_NEW "220 mx.backend.test ESMTP Postfix (after XCLIENT)\r\n"
#define XC_SENT_EHLO "EHLO " XC_EHLO "\r\n"

static void test_dialogue_basic(void **state)
{
	union sockname c = xc_client4(), l = xc_local4();
	static const char d[] = XC_GREETING
		"250-mx.backend.test\r\n"
		"250-PIPELINING\r\n"
		"250-XCLIENT ADDR PORT\r\n"
		"250 8BITMIME\r\n" XC_NEW;

	(void)state;
	xc_expect_done(&c, &l, S(d), 0, XCLIENT_ADDR | XCLIENT_PORT,
		       "XCLIENT ADDR=192.0.2.1 PORT=40000\r\n", XC_NEW);
}

/* What Postfix really says: attributes we do not send are ignored, the
 * ones we do are sent in our order, not the backend's. */
static void test_dialogue_postfix(void **state)
{
	union sockname c = xc_client4(), l = xc_local4();
	static const char d[] =
		XC_GREETING
		"250-mx.backend.test\r\n"
		"250-PIPELINING\r\n"
		"250-SIZE 10240000\r\n"
		"250-VRFY\r\n"
		"250-ETRN\r\n"
		"250-STARTTLS\r\n"
		"250-XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN "
		"DESTADDR DESTPORT\r\n"
		"250-ENHANCEDSTATUSCODES\r\n"
		"250-8BITMIME\r\n"
		"250-DSN\r\n"
		"250-SMTPUTF8\r\n"
		"250 CHUNKING\r\n" XC_NEW;

	(void)state;
	xc_expect_done(&c, &l, S(d), 0, XC_ALL,
		       "XCLIENT ADDR=192.0.2.1 PORT=40000 NAME=[UNAVAILABLE] "
		       "PROTO=ESMTP DESTADDR=198.51.100.7 DESTPORT=25\r\n",
		       XC_NEW);
}

/* Multi-line greetings before and after: the first is read whole before
 * EHLO goes out, the second reaches the client whole, as received. */
static void test_dialogue_multiline_greetings(void **state)
{
	union sockname c = xc_client4(), l = xc_local4();
	static const char d[] = "220-mx.backend.test ESMTP\r\n"
				"220-no UCE\r\n"
				"220 welcome\r\n"
				"250-mx.backend.test\r\n"
				"250 XCLIENT ADDR NAME\r\n"
				"220-mx.backend.test ESMTP again\r\n"
				"220-still no UCE\r\n"
				"220 welcome back\r\n";

	(void)state;
	xc_expect_done(&c, &l, S(d), 0, XCLIENT_ADDR | XCLIENT_NAME,
		       "XCLIENT ADDR=192.0.2.1 NAME=[UNAVAILABLE]\r\n",
		       "220-mx.backend.test ESMTP again\r\n"
		       "220-still no UCE\r\n"
		       "220 welcome back\r\n");
}

static void test_dialogue_lowercase(void **state)
{
	union sockname c = xc_client4(), l = xc_local4();
	static const char d[] = XC_GREETING
		"250-mx.backend.test\r\n"
		"250-xclient addr Port destaddr\r\n"
		"250 8BITMIME\r\n" XC_NEW;

	(void)state;
	xc_expect_done(&c, &l, S(d), 0,
		       XCLIENT_ADDR | XCLIENT_PORT | XCLIENT_DESTADDR,
		       "XCLIENT ADDR=192.0.2.1 PORT=40000 "
		       "DESTADDR=198.51.100.7\r\n",
		       XC_NEW);
}

/* XCLIENT on the final line, "250 XCLIENT ADDR", still counts. */
static void test_dialogue_xclient_last_line(void **state)
{
	union sockname c = xc_client4(), l = xc_local4();
	static const char d[] = XC_GREETING
		"250-mx.backend.test\r\n"
		"250-PIPELINING\r\n"
		"250 XCLIENT ADDR\r\n" XC_NEW;

	(void)state;
	xc_expect_done(&c, &l, S(d), 0, XCLIENT_ADDR,
		       "XCLIENT ADDR=192.0.2.1\r\n", XC_NEW);
}

/* Bare LF line ends and tabs between attributes are taken too. */
static void test_dialogue_lf_only(void **state)
{
	union sockname c = xc_client4(), l = xc_local4();
	static const char d[] = "220 mx\n"
				"250-mx\n"
				"250-XCLIENT\tADDR  DESTPORT\n"
				"250 HELP\n"
				"220 mx again\n";

	(void)state;
	xc_expect_done(&c, &l, S(d), 0, XCLIENT_ADDR | XCLIENT_DESTPORT,
		       "XCLIENT ADDR=192.0.2.1 DESTPORT=25\r\n",
		       "220 mx again\n");
}

/* An IPv6 client goes as IPV6:..., an IPv4-mapped one as plain IPv4. */
static void test_dialogue_ipv6_and_mapped(void **state)
{
	union sockname c6 = xc_sock("2001:db8::25", 61000);
	union sockname l6 = xc_sock("2001:db8::1", 25);
	union sockname cm = xc_sock("::ffff:203.0.113.9", 1025);
	union sockname lm = xc_sock("::ffff:198.51.100.7", 25);
	static const char d[] = XC_GREETING
		"250-mx.backend.test\r\n"
		"250-XCLIENT ADDR PORT DESTADDR DESTPORT\r\n"
		"250 8BITMIME\r\n" XC_NEW;
	unsigned attrs = XCLIENT_ADDR | XCLIENT_PORT | XCLIENT_DESTADDR |
			 XCLIENT_DESTPORT;

	(void)state;
	xc_expect_done(&c6, &l6, S(d), 0, attrs,
		       "XCLIENT ADDR=IPV6:2001:db8::25 PORT=61000 "
		       "DESTADDR=IPV6:2001:db8::1 DESTPORT=25\r\n",
		       XC_NEW);
	xc_expect_done(&cm, &lm, S(d), 0, attrs,
		       "XCLIENT ADDR=203.0.113.9 PORT=1025 "
		       "DESTADDR=198.51.100.7 DESTPORT=25\r\n",
		       XC_NEW);
}

/* Bytes after the new greeting are not ours: they are left unconsumed
 * (used < n) for the relay to pass on, in whatever chunking. */
static void test_dialogue_trailing_bytes(void **state)
{
	union sockname c = xc_client4(), l = xc_local4();
	static const char extra[] = "250 surprise\r\npartial";
	static const char d[] = XC_GREETING
		"250-mx.backend.test\r\n"
		"250 XCLIENT ADDR\r\n" XC_NEW "250 surprise\r\npartial";

	(void)state;
	xc_expect_done(&c, &l, S(d), sizeof(extra) - 1, XCLIENT_ADDR,
		       "XCLIENT ADDR=192.0.2.1\r\n", XC_NEW);
}

/* Once done or failed, more bytes are not taken and change nothing. */
static void test_dialogue_no_more_after_end(void **state)
{
	union sockname c = xc_client4(), l = xc_local4();
	static const char d[] = XC_GREETING "250-mx\r\n250 XCLIENT ADDR\r\n" XC_NEW;
	struct xclient *x = malloc(sizeof(*x));
	struct buffer up = { 0 }, down = { 0 };
	size_t uplen, downlen;

	(void)state;
	assert_non_null(x);
	xclient_init(x, XC_EHLO, &c, &l);
	assert_int_equal(xclient_backend(x, S(d), &up, &down), (long)sizeof(d) - 1);
	assert_int_equal(x->phase, XCLIENT_DONE);
	uplen = buffer_used(&up);
	downlen = buffer_used(&down);
	assert_int_equal(xclient_backend(x, S("220 again\r\n"), &up, &down), 0);
	assert_int_equal(x->phase, XCLIENT_DONE);
	assert_int_equal(buffer_used(&up), uplen);
	assert_int_equal(buffer_used(&down), downlen);
	buffer_release(&up);
	buffer_release(&down);

	xclient_init(x, XC_EHLO, &c, &l);
	assert_int_equal(xclient_backend(x, S("421 busy\r\n220 ok\r\n"), &up,
					 &down),
			 10);
	assert_int_equal(x->phase, XCLIENT_FAILED);
	assert_int_equal(xclient_backend(x, S("220 ok\r\n"), &up, &down), 0);
	assert_int_equal(x->phase, XCLIENT_FAILED);
	assert_true(buffer_empty(&up));
	assert_true(buffer_empty(&down));
	free(x);
}

/* The name we give in EHLO is sent as given. */
static void test_dialogue_ehlo_name(void **state)
{
	union sockname c = xc_client4(), l = xc_local4();
	struct xclient *x = malloc(sizeof(*x));
	struct buffer up = { 0 }, down = { 0 };
	const char *p;
	size_t avail = 0;

	(void)state;
	assert_non_null(x);
	xclient_init(x, "relay-7.example.net", &c, &l);
	assert_int_equal(xclient_backend(x, S("220 hi\r\n"), &up, &down), 8);
	assert_int_equal(x->phase, XCLIENT_EHLO);
	p = buffer_read_ptr(&up, &avail);
	assert_non_null(p);
	assert_int_equal(avail, strlen("EHLO relay-7.example.net\r\n"));
	assert_memory_equal(p, "EHLO relay-7.example.net\r\n", avail);
	assert_true(buffer_empty(&down));
	buffer_release(&up);
	free(x);
}

/* ---- failures ---- */

static void test_fail_greeting(void **state)
{
	static const char *const words[] = { "421-mx busy", "421 try later",
					     NULL };

	(void)state;
	xc_expect_failed(S("554 5.3.2 go away\r\n"), "",
			 "backend greeting: 554 5.3.2 go away", NULL);
	xc_expect_failed(S("421-mx busy\r\n421 try later\r\n"), "", NULL,
			 words);
	/* a 2xx that is not 220 is no greeting either */
	xc_expect_failed(S("250 hello\r\n"), "", "backend greeting: 250 hello",
			 NULL);
	xc_expect_failed(S("221 bye\r\n"), "", "backend greeting: 221 bye", NULL);
}

static void test_fail_ehlo_refused(void **state)
{
	(void)state;
	xc_expect_failed(S(XC_GREETING "502 5.5.1 EHLO not implemented\r\n"),
			 XC_SENT_EHLO,
			 "backend refused our EHLO: 502 5.5.1 EHLO not implemented",
			 NULL);
	/* the first line of a multi-line refusal is quoted */
	xc_expect_failed(S(XC_GREETING "554-5.7.1 no\r\n554 5.7.1 really no\r\n"),
			 XC_SENT_EHLO, "backend refused our EHLO: 554-5.7.1 no",
			 NULL);
	xc_expect_failed(S(XC_GREETING "251 odd\r\n"), XC_SENT_EHLO,
			 "backend refused our EHLO: 251 odd", NULL);
}

/* No XCLIENT line: the log must say why and show what the backend did
 * offer, lines joined. */
static void test_fail_not_offered(void **state)
{
	static const char *const words[] = {
		"does not offer XCLIENT",
		"smtpd_authorized_xclient_hosts",
		"250-mx.backend.test 250-PIPELINING 250 8BITMIME",
		NULL
	};

	(void)state;
	xc_expect_failed(S(XC_GREETING "250-mx.backend.test\r\n"
					"250-PIPELINING\r\n"
					"250 8BITMIME\r\n"),
			 XC_SENT_EHLO, NULL, words);
}

/* Near misses are not XCLIENT: another keyword that starts with it, one
 * that ends with it, and the first line, which is the backend's name. */
static void test_fail_not_xclient(void **state)
{
	static const char *const words[] = { "does not offer XCLIENT", NULL };

	(void)state;
	xc_expect_failed(S(XC_GREETING "250-mx\r\n250-XCLIENTX ADDR\r\n250 OK\r\n"),
			 XC_SENT_EHLO, NULL, words);
	xc_expect_failed(S(XC_GREETING "250-mx\r\n250-X-XCLIENT ADDR\r\n250 OK\r\n"),
			 XC_SENT_EHLO, NULL, words);
	xc_expect_failed(S(XC_GREETING "250 XCLIENT ADDR\r\n"), XC_SENT_EHLO,
			 NULL, words);
	xc_expect_failed(S(XC_GREETING "250-XCLIENT ADDR\r\n250 OK\r\n"),
			 XC_SENT_EHLO, NULL, words);
}

static void test_fail_no_addr(void **state)
{
	static const char *const words[] = {
		"XCLIENT does not take ADDR",
		"250-XCLIENT NAME PORT HELO DESTADDR",
		NULL
	};
	static const char *const bare[] = { "does not take ADDR", NULL };

	(void)state;
	xc_expect_failed(S(XC_GREETING "250-mx\r\n"
					"250-XCLIENT NAME PORT HELO DESTADDR\r\n"
					"250 OK\r\n"),
			 XC_SENT_EHLO, NULL, words);
	/* ADDRESS is not ADDR, nor is an XCLIENT with no attributes */
	xc_expect_failed(S(XC_GREETING "250-mx\r\n250-XCLIENT ADDRESS\r\n250 OK\r\n"),
			 XC_SENT_EHLO, NULL, bare);
	xc_expect_failed(S(XC_GREETING "250-mx\r\n250 XCLIENT\r\n"),
			 XC_SENT_EHLO, NULL, bare);
}

static void test_fail_xclient_refused(void **state)
{
	static const char sent[] = XC_SENT_EHLO "XCLIENT ADDR=192.0.2.1\r\n";

	(void)state;
	xc_expect_failed(S(XC_GREETING "250-mx\r\n250 XCLIENT ADDR\r\n"
					"550 5.7.0 Error: insufficient authorization\r\n"),
			 sent,
			 "backend refused XCLIENT: 550 5.7.0 Error: "
			 "insufficient authorization",
			 NULL);
	xc_expect_failed(S(XC_GREETING "250-mx\r\n250 XCLIENT ADDR\r\n"
					"501-5.5.4 Bad ADDR syntax\r\n"
					"501 5.5.4 see docs\r\n"),
			 sent, "backend refused XCLIENT: 501-5.5.4 Bad ADDR syntax",
			 NULL);
	/* 250 is success for most commands but not this one */
	xc_expect_failed(S(XC_GREETING "250-mx\r\n250 XCLIENT ADDR\r\n250 ok\r\n"),
			 sent, "backend refused XCLIENT: 250 ok", NULL);
	xc_expect_failed(S(XC_GREETING "250-mx\r\n250 XCLIENT ADDR\r\n"
					"221 2.0.0 Bye\r\n"),
			 sent, "backend refused XCLIENT: 221 2.0.0 Bye", NULL);
}

/* Lines that are not "ddd", "ddd " or "ddd-", in each phase. */
static void test_fail_not_smtp(void **state)
{
	static const char sent_x[] = XC_SENT_EHLO "XCLIENT ADDR=192.0.2.1\r\n";

	(void)state;
	xc_expect_failed(S("HTTP/1.1 400 Bad Request\r\n"), "",
			 "backend reply is not SMTP: HTTP/1.1 400 Bad Request",
			 NULL);
	xc_expect_failed(S("22\r\n"), "", "backend reply is not SMTP: 22", NULL);
	xc_expect_failed(S("\r\n"), "", "backend reply is not SMTP", NULL);
	xc_expect_failed(S("220hello\r\n"), "",
			 "backend reply is not SMTP: 220hello", NULL);
	xc_expect_failed(S("2a0 hi\r\n"), "", "backend reply is not SMTP: 2a0 hi",
			 NULL);
	xc_expect_failed(S("220-mx\r\nhello\r\n220 mx\r\n"), "",
			 "backend reply is not SMTP: hello", NULL);
	xc_expect_failed(S(XC_GREETING "250-mx\r\n250_XCLIENT ADDR\r\n"),
			 XC_SENT_EHLO, "backend reply is not SMTP: 250_XCLIENT ADDR",
			 NULL);
	xc_expect_failed(S(XC_GREETING "250-mx\r\n250 XCLIENT ADDR\r\n"
					"\x16\x03\x01\x02\r\n"),
			 sent_x, NULL,
			 (const char *const[]){ "backend reply is not SMTP", NULL });
}

/* A line of SMTP_LINE_MAX bytes (CRLF included) is fine, one byte more
 * fails, and so does a line that never ends: with the same text and the
 * same count however the bytes came. */
static void test_fail_line_too_long(void **state)
{
	union sockname c = xc_client4(), l = xc_local4();
	size_t n = SMTP_LINE_MAX + 200, i;
	char *d = malloc(n);
	char *want = malloc(SMTP_LINE_MAX);
	struct xc_run *r = malloc(sizeof(*r));

	(void)state;
	assert_non_null(d);
	assert_non_null(want);
	assert_non_null(r);

	/* "220 xxx...\r\n" of exactly SMTP_LINE_MAX bytes */
	memcpy(d, "220 ", 4);
	memset(d + 4, 'x', SMTP_LINE_MAX - 6);
	memcpy(d + SMTP_LINE_MAX - 2, "\r\n", 2);
	xc_all_splits(&c, &l, d, SMTP_LINE_MAX, r);
	assert_int_equal(r->phase, XCLIENT_EHLO);
	assert_int_equal(r->used, SMTP_LINE_MAX);
	assert_int_equal(r->uplen, strlen(XC_SENT_EHLO));

	/* one 'x' more: fails at the byte past the limit */
	memcpy(d, "220 ", 4);
	memset(d + 4, 'x', SMTP_LINE_MAX - 5);
	memcpy(d + SMTP_LINE_MAX - 1, "\r\n", 2);
	snprintf(want, SMTP_LINE_MAX, "backend line too long: 220 %.76s",
		 d + 4);
	xc_all_splits(&c, &l, d, SMTP_LINE_MAX + 1, r);
	assert_int_equal(r->phase, XCLIENT_FAILED);
	assert_string_equal(r->failure, want);
	assert_int_equal(r->used, SMTP_LINE_MAX + 1);
	assert_int_equal(r->uplen, 0);

	/* no line end at all, in the EHLO reply */
	i = strlen(XC_GREETING "250-mx\r\n");
	memcpy(d, XC_GREETING "250-mx\r\n", i);
	memset(d + i, 'y', n - i);
	xc_all_splits(&c, &l, d, n, r);
	assert_int_equal(r->phase, XCLIENT_FAILED);
	assert_non_null(strstr(r->failure, "backend line too long: yyyy"));
	assert_int_equal(r->used, i + SMTP_LINE_MAX + 1);
	assert_int_equal(r->uplen, strlen(XC_SENT_EHLO));
	assert_memory_equal(r->up, XC_SENT_EHLO, r->uplen);
	assert_int_equal(r->downlen, 0);

	free(r);
	free(want);
	free(d);
}

/* An EHLO reply of exactly total bytes: "250-" lines of at most
 * SMTP_LINE_MAX bytes, then "250 XCLIENT ADDR\r\n". Returns its length
 * after the greeting in d. */
static size_t xc_long_reply(char *d, size_t cap, size_t total)
{
	static const char last[] = "250 XCLIENT ADDR\r\n";
	size_t n = strlen(XC_GREETING), left = total - (sizeof(last) - 1);

	assert_true(n + total < cap);
	memcpy(d, XC_GREETING, n);
	while (left > 0) {
		size_t len = left < SMTP_LINE_MAX ? left : SMTP_LINE_MAX - 100;

		assert_true(len >= 6);
		memcpy(d + n, "250-", 4);
		memset(d + n + 4, 'E', len - 6);
		memcpy(d + n + len - 2, "\r\n", 2);
		n += len;
		left -= len;
	}
	memcpy(d + n, last, sizeof(last) - 1);
	return n + sizeof(last) - 1;
}

/* A reply of XCLIENT_REPLY_MAX bytes is read; one byte more fails, with
 * the line that did not fit quoted. */
static void test_fail_reply_too_long(void **state)
{
	union sockname c = xc_client4(), l = xc_local4();
	size_t cap = 2 * XCLIENT_REPLY_MAX, n;
	char *d = malloc(cap);
	struct xc_run *r = malloc(sizeof(*r));

	(void)state;
	assert_non_null(d);
	assert_non_null(r);
	n = xc_long_reply(d, cap, XCLIENT_REPLY_MAX);
	xc_chunked(&c, &l, d, n, NULL, 0, r);
	assert_int_equal(r->phase, XCLIENT_REPLY);
	assert_int_equal(r->attrs, XCLIENT_ADDR);
	assert_int_equal(r->used, n);

	n = xc_long_reply(d, cap, XCLIENT_REPLY_MAX + 1);
	xc_chunked(&c, &l, d, n, NULL, 0, r);
	assert_int_equal(r->phase, XCLIENT_FAILED);
	assert_string_equal(r->failure,
			    "backend reply too long: 250 XCLIENT ADDR");
	assert_int_equal(r->uplen, strlen(XC_SENT_EHLO));
	assert_int_equal(r->downlen, 0);
	free(r);
	free(d);
}

/* A full output buffer is -1, not a silent loss. */
static void test_buffer_full(void **state)
{
	union sockname c = xc_client4(), l = xc_local4();
	static const char d[] = XC_GREETING "250-mx\r\n250 XCLIENT ADDR\r\n" XC_NEW;
	static const char fill[64] = { 0 };
	struct xclient *x = malloc(sizeof(*x));
	struct buffer up = { 0 }, down = { 0 };
	size_t i;

	(void)state;
	assert_non_null(x);
	for (i = 0; i < BUFFER_SIZE / sizeof(fill); i++)
		assert_int_equal(buffer_append(&up, fill, sizeof(fill)), 0);
	xclient_init(x, XC_EHLO, &c, &l);
	assert_int_equal(xclient_backend(x, S(d), &up, &down), -1);
	assert_true(buffer_empty(&down));
	buffer_release(&up);

	for (i = 0; i < BUFFER_SIZE / sizeof(fill); i++)
		assert_int_equal(buffer_append(&down, fill, sizeof(fill)), 0);
	xclient_init(x, XC_EHLO, &c, &l);
	assert_int_equal(xclient_backend(x, S(d), &up, &down), -1);
	assert_int_equal(buffer_used(&down), BUFFER_SIZE);
	buffer_release(&up);
	buffer_release(&down);
	free(x);
}

static int xc_teardown(void **state)
{
	(void)state;
	buffer_trim();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format_ipv4_all),
		cmocka_unit_test(test_format_ipv6_all),
		cmocka_unit_test(test_format_mapped),
		cmocka_unit_test(test_format_subsets),
		cmocka_unit_test(test_format_too_small),
		cmocka_unit_test(test_dialogue_basic),
		cmocka_unit_test(test_dialogue_postfix),
		cmocka_unit_test(test_dialogue_multiline_greetings),
		cmocka_unit_test(test_dialogue_lowercase),
		cmocka_unit_test(test_dialogue_xclient_last_line),
		cmocka_unit_test(test_dialogue_lf_only),
		cmocka_unit_test(test_dialogue_ipv6_and_mapped),
		cmocka_unit_test(test_dialogue_trailing_bytes),
		cmocka_unit_test(test_dialogue_no_more_after_end),
		cmocka_unit_test(test_dialogue_ehlo_name),
		cmocka_unit_test(test_fail_greeting),
		cmocka_unit_test(test_fail_ehlo_refused),
		cmocka_unit_test(test_fail_not_offered),
		cmocka_unit_test(test_fail_not_xclient),
		cmocka_unit_test(test_fail_no_addr),
		cmocka_unit_test(test_fail_xclient_refused),
		cmocka_unit_test(test_fail_not_smtp),
		cmocka_unit_test(test_fail_line_too_long),
		cmocka_unit_test(test_fail_reply_too_long),
		cmocka_unit_test(test_buffer_full),
	};

	return cmocka_run_group_tests_name("xclient", tests, NULL, xc_teardown);
}
