/* Unit tests for the smtp scanners: greeting reply and first command. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp.h"

/* What a scanner found, to compare runs fed in different chunkings. */
struct reply_result {
	size_t used;
	char text[SMTP_LINE_MAX];
	uint16_t len, code;
	bool done, truncated, malformed;
};

static void reply_result(const struct smtp_reply *r, size_t used,
			 struct reply_result *out)
{
	memset(out, 0, sizeof(*out));
	out->used = used;
	memcpy(out->text, r->text, r->len);
	out->len = r->len;
	out->code = r->code;
	out->done = r->done;
	out->truncated = r->truncated;
	out->malformed = r->malformed;
	/* text is always NUL-terminated right after len bytes */
	assert_true(r->len < SMTP_LINE_MAX);
	assert_int_equal(r->text[r->len], '\0');
}

static void assert_reply_equal(const struct reply_result *a,
			       const struct reply_result *b)
{
	assert_int_equal(a->used, b->used);
	assert_int_equal(a->len, b->len);
	assert_memory_equal(a->text, b->text, a->len);
	assert_int_equal(a->code, b->code);
	assert_int_equal(a->done, b->done);
	assert_int_equal(a->truncated, b->truncated);
	assert_int_equal(a->malformed, b->malformed);
}

/* Feeds data in chunks ending at the offsets in cuts (ascending, then n).
 * Each chunk lives in its own heap block so ASan sees any over-read. */
static void reply_chunked(const char *data, size_t n, const size_t *cuts,
			  size_t ncuts, struct reply_result *out)
{
	struct smtp_reply r;
	size_t from = 0, used = 0, i;
	bool ended = false;

	smtp_reply_init(&r);
	for (i = 0; i <= ncuts; i++) {
		size_t to = i < ncuts ? cuts[i] : n;
		size_t len = to - from, got;
		char *chunk = malloc(len ? len : 1);

		assert_non_null(chunk);
		memcpy(chunk, data + from, len);
		got = smtp_reply_feed(&r, chunk, len);
		free(chunk);
		assert_true(got <= len);
		/* once it ended, it takes no more */
		if (ended)
			assert_int_equal(got, 0);
		/* a chunk is taken whole unless the reply ended inside it */
		if (got < len)
			assert_true(r.done);
		if (r.done)
			ended = true;
		used += got;
		from = to;
	}
	reply_result(&r, used, out);
}

/* Whole, byte by byte, every single split and (for short inputs) every
 * pair of splits all give the same result, returned in want. */
static void reply_all_splits(const char *data, size_t n,
			     struct reply_result *want)
{
	struct reply_result got;
	size_t i, j, *cuts = malloc((n + 2) * sizeof(*cuts));

	assert_non_null(cuts);
	reply_chunked(data, n, NULL, 0, want);
	for (i = 0; i < n; i++)
		cuts[i] = i;
	reply_chunked(data, n, cuts, n, &got);
	assert_reply_equal(&got, want);
	for (i = 0; i <= n; i++) {
		cuts[0] = i;
		reply_chunked(data, n, cuts, 1, &got);
		assert_reply_equal(&got, want);
	}
	for (i = 0; i <= n && n <= 200; i++) {
		for (j = i; j <= n; j++) {
			cuts[0] = i;
			cuts[1] = j;
			reply_chunked(data, n, cuts, 2, &got);
			assert_reply_equal(&got, want);
		}
	}
	free(cuts);
}

static void expect_reply(const char *data, size_t n, size_t used,
			 uint16_t code, const char *text, bool done,
			 bool malformed)
{
	struct reply_result res;

	reply_all_splits(data, n, &res);
	assert_int_equal(res.used, used);
	assert_int_equal(res.code, code);
	assert_int_equal(res.len, strlen(text));
	assert_memory_equal(res.text, text, res.len);
	assert_int_equal(res.done, done);
	assert_int_equal(res.malformed, malformed);
	assert_false(res.truncated);
}

#define S(lit) lit, sizeof(lit) - 1

static void test_reply_single_line(void **state)
{
	(void)state;
	expect_reply(S("220 mx.example.com ESMTP Postfix\r\n"), 34, 220,
		     "220 mx.example.com ESMTP Postfix", true, false);
}

static void test_reply_multi_line(void **state)
{
	(void)state;
	expect_reply(S("220-mx.example.com ESMTP\r\n220-no UCE\r\n220 ok\r\n"),
		     46, 220, "220-mx.example.com ESMTP\n220-no UCE\n220 ok",
		     true, false);
	/* bare LF line ends are accepted too */
	expect_reply(S("220-a\n220 b\n"), 12, 220, "220-a\n220 b", true,
		     false);
}

static void test_reply_refusals(void **state)
{
	(void)state;
	expect_reply(S("421 4.3.2 Service not available, closing\r\n"), 42,
		     421, "421 4.3.2 Service not available, closing", true,
		     false);
	expect_reply(S("554 5.7.1 No SMTP service here\r\n"), 32, 554,
		     "554 5.7.1 No SMTP service here", true, false);
	expect_reply(S("554-5.7.1 one\r\n554 5.7.1 two\r\n"), 30, 554,
		     "554-5.7.1 one\n554 5.7.1 two", true, false);
}

static void test_reply_bare_code(void **state)
{
	(void)state;
	expect_reply(S("220\r\n"), 5, 220, "220", true, false);
	expect_reply(S("220\n"), 4, 220, "220", true, false);
	expect_reply(S("220-\r\n220\r\n"), 11, 220, "220-\n220", true, false);
	expect_reply(S("220 \r\n"), 6, 220, "220 ", true, false);
}

static void test_reply_bytes_returned(void **state)
{
	struct smtp_reply r;

	(void)state;
	/* what follows the reply in the same chunk is not the reply's */
	expect_reply(S("220 hi\r\nEHLO-ish trailing bytes"), 8, 220, "220 hi",
		     true, false);
	expect_reply(S("220-a\r\n220 b\r\n220 c\r\n"), 14, 220, "220-a\n220 b",
		     true, false);
	/* not finished yet: everything belongs to it */
	expect_reply(S("220-a\r\n220-b\r\n220 unfinished"), 28, 220,
		     "220-a\n220-b\n220 unfinished", false, false);
	expect_reply(S("220 no line end yet\r"), 20, 0,
		     "220 no line end yet\r", false, false);

	smtp_reply_init(&r);
	assert_int_equal(smtp_reply_feed(&r, "", 0), 0);
	assert_int_equal(smtp_reply_feed(&r, NULL, 0), 0);
	assert_false(r.done);
	assert_int_equal(smtp_reply_feed(&r, "220 x\r\n", 7), 7);
	assert_true(r.done);
	assert_int_equal(smtp_reply_feed(&r, "250 y\r\n", 7), 0);
	assert_string_equal(r.text, "220 x");
}

static void test_reply_malformed(void **state)
{
	(void)state;
	expect_reply(S("hello there\r\nmore\r\n"), 13, 0, "hello there", true,
		     true);
	expect_reply(S("22x ready\r\n"), 11, 0, "22x ready", true, true);
	expect_reply(S("2200 ready\r\n"), 12, 0, "2200 ready", true, true);
	expect_reply(S("220_ready\r\n"), 11, 0, "220_ready", true, true);
	expect_reply(S("22\r\n"), 4, 0, "22", true, true);
	expect_reply(S("\r\n220 x\r\n"), 2, 0, "", true, true);
	expect_reply(S("\n"), 1, 0, "", true, true);
	expect_reply(S("220\rx\r\n"), 7, 0, "220\rx", true, true);
	/* codes differ between lines */
	expect_reply(S("220-a\r\n250 b\r\nrest"), 14, 0, "220-a\n250 b", true,
		     true);
	/* a malformed continuation line ends it as well */
	expect_reply(S("220-a\r\nxyz\r\n220 b\r\n"), 12, 0, "220-a\nxyz", true,
		     true);
}

static void test_reply_binary(void **state)
{
	static const char nul[] = "220 a\0b\xff\r\n";
	static const char junk[] = "\0\0\0\0\x16\x03\x01\n";
	struct reply_result res;

	(void)state;
	reply_all_splits(nul, sizeof(nul) - 1, &res);
	assert_int_equal(res.used, sizeof(nul) - 1);
	assert_int_equal(res.code, 220);
	assert_int_equal(res.len, 8);
	assert_memory_equal(res.text, "220 a\0b\xff", 8);
	assert_false(res.malformed);

	reply_all_splits(junk, sizeof(junk) - 1, &res);
	assert_true(res.done);
	assert_true(res.malformed);
	assert_int_equal(res.used, sizeof(junk) - 1);
	assert_int_equal(res.code, 0);
}

static void test_reply_truncation(void **state)
{
	char line[700];
	struct reply_result res;
	size_t n;

	(void)state;
	/* exactly SMTP_LINE_MAX - 1 bytes of text: fits */
	memset(line, 'x', sizeof(line));
	memcpy(line, "220 ", 4);
	n = SMTP_LINE_MAX - 1;
	memcpy(line + n, "\r\n", 2);
	reply_all_splits(line, n + 2, &res);
	assert_int_equal(res.len, SMTP_LINE_MAX - 1);
	assert_false(res.truncated);
	assert_true(res.done);
	assert_int_equal(res.code, 220);
	assert_int_equal(res.used, n + 2);

	/* a stray CR that does not fit is content that was cut */
	memcpy(line + n, "\rX\r\n", 4);
	reply_all_splits(line, n + 4, &res);
	assert_int_equal(res.len, SMTP_LINE_MAX - 1);
	assert_true(res.truncated);
	assert_int_equal(res.used, n + 4);

	/* one more: cut, and still followed to its end */
	memset(line, 'x', sizeof(line));
	memcpy(line, "220 ", 4);
	n = SMTP_LINE_MAX;
	memcpy(line + n, "\r\n", 2);
	reply_all_splits(line, n + 2, &res);
	assert_int_equal(res.len, SMTP_LINE_MAX - 1);
	assert_true(res.truncated);
	assert_true(res.done);
	assert_false(res.malformed);
	assert_int_equal(res.code, 220);
	assert_int_equal(res.used, n + 2);
	assert_memory_equal(res.text, line, SMTP_LINE_MAX - 1);

	/* a long line well past the limit */
	memset(line, 'y', sizeof(line));
	memcpy(line, "421 ", 4);
	memcpy(line + sizeof(line) - 2, "\r\n", 2);
	reply_all_splits(line, sizeof(line), &res);
	assert_int_equal(res.len, SMTP_LINE_MAX - 1);
	assert_true(res.truncated);
	assert_int_equal(res.code, 421);
	assert_int_equal(res.used, sizeof(line));
}

static void test_reply_truncation_multi(void **state)
{
	/* 10 lines of 100 bytes: the later ones are cut, codes still read */
	char buf[1000];
	struct reply_result res;
	int i;

	(void)state;
	memset(buf, 'z', sizeof(buf));
	for (i = 0; i < 10; i++) {
		memcpy(buf + i * 100, i == 9 ? "250 " : "250-", 4);
		memcpy(buf + i * 100 + 98, "\r\n", 2);
	}
	reply_all_splits(buf, sizeof(buf), &res);
	assert_int_equal(res.len, SMTP_LINE_MAX - 1);
	assert_true(res.truncated);
	assert_true(res.done);
	assert_false(res.malformed);
	assert_int_equal(res.code, 250);
	assert_int_equal(res.used, sizeof(buf));
	/* lines are joined with '\n', CRLF dropped */
	assert_memory_equal(res.text + 98, "\n250-", 5);
}

static void test_reply_scan_limit(void **state)
{
	enum { N = SMTP_REPLY_SCAN_MAX * 2 };
	char *buf = malloc(N);
	struct reply_result res;
	size_t i;

	(void)state;
	assert_non_null(buf);
	/* continuation lines that never end */
	for (i = 0; i + 10 <= N; i += 10)
		memcpy(buf + i, "220-xxxx\r\n", 10);
	reply_all_splits(buf, N, &res);
	assert_true(res.done);
	assert_int_equal(res.used, SMTP_REPLY_SCAN_MAX);
	assert_int_equal(res.code, 220);
	assert_true(res.truncated);

	/* one line without an end: its first bytes still give the code */
	memset(buf, 'a', N);
	memcpy(buf, "220 ", 4);
	reply_all_splits(buf, N, &res);
	assert_true(res.done);
	assert_true(res.truncated);
	assert_int_equal(res.used, SMTP_REPLY_SCAN_MAX);
	assert_int_equal(res.code, 220);

	/* ... but not when they are not a reply code */
	memset(buf, 'a', N);
	memcpy(buf, "22x ", 4);
	reply_all_splits(buf, N, &res);
	assert_true(res.done);
	assert_int_equal(res.code, 0);

	/* a final line ending on the very last byte allowed is complete */
	memset(buf, 'b', SMTP_REPLY_SCAN_MAX);
	memcpy(buf, "220 ", 4);
	memcpy(buf + SMTP_REPLY_SCAN_MAX - 2, "\r\nNEXT", 6);
	reply_all_splits(buf, SMTP_REPLY_SCAN_MAX + 4, &res);
	assert_true(res.done);
	assert_false(res.malformed);
	assert_int_equal(res.code, 220);
	assert_int_equal(res.used, SMTP_REPLY_SCAN_MAX);
	free(buf);
}

/* ---- first command ---- */

struct cmd_result {
	size_t used;
	char verb[8];
	char arg[SMTP_DOMAIN_MAX + 1];
	uint16_t arg_len;
	bool done, truncated, is_helo;
};

static void cmd_chunked(const char *data, size_t n, const size_t *cuts,
			size_t ncuts, struct cmd_result *out)
{
	struct smtp_cmd c;
	size_t from = 0, used = 0, i;
	bool ended = false;

	smtp_cmd_init(&c);
	for (i = 0; i <= ncuts; i++) {
		size_t to = i < ncuts ? cuts[i] : n;
		size_t len = to - from, got;
		char *chunk = malloc(len ? len : 1);

		assert_non_null(chunk);
		memcpy(chunk, data + from, len);
		got = smtp_cmd_feed(&c, chunk, len);
		free(chunk);
		assert_true(got <= len);
		if (ended)
			assert_int_equal(got, 0);
		if (got < len)
			assert_true(c.done);
		if (c.done)
			ended = true;
		used += got;
		from = to;
	}
	memset(out, 0, sizeof(*out));
	out->used = used;
	assert_int_equal(c.verb[7], '\0');
	memcpy(out->verb, c.verb, sizeof(out->verb));
	assert_true(c.arg_len <= SMTP_DOMAIN_MAX);
	assert_int_equal(c.arg[c.arg_len], '\0');
	memcpy(out->arg, c.arg, c.arg_len);
	out->arg_len = c.arg_len;
	out->done = c.done;
	out->truncated = c.truncated;
	out->is_helo = c.is_helo;
}

static void assert_cmd_equal(const struct cmd_result *a,
			     const struct cmd_result *b)
{
	assert_int_equal(a->used, b->used);
	assert_memory_equal(a->verb, b->verb, sizeof(a->verb));
	assert_int_equal(a->arg_len, b->arg_len);
	assert_memory_equal(a->arg, b->arg, a->arg_len);
	assert_int_equal(a->done, b->done);
	assert_int_equal(a->truncated, b->truncated);
	assert_int_equal(a->is_helo, b->is_helo);
}

static void cmd_all_splits(const char *data, size_t n, struct cmd_result *want)
{
	struct cmd_result got;
	size_t i, j, *cuts = malloc((n + 2) * sizeof(*cuts));

	assert_non_null(cuts);
	cmd_chunked(data, n, NULL, 0, want);
	for (i = 0; i < n; i++)
		cuts[i] = i;
	cmd_chunked(data, n, cuts, n, &got);
	assert_cmd_equal(&got, want);
	for (i = 0; i <= n && n <= 4096; i++) {
		cuts[0] = i;
		cmd_chunked(data, n, cuts, 1, &got);
		assert_cmd_equal(&got, want);
	}
	for (i = 0; i <= n && n <= 200; i++) {
		for (j = i; j <= n; j++) {
			cuts[0] = i;
			cuts[1] = j;
			cmd_chunked(data, n, cuts, 2, &got);
			assert_cmd_equal(&got, want);
		}
	}
	free(cuts);
}

static void expect_cmd(const char *data, size_t n, size_t used,
		       const char *verb, const char *arg, bool is_helo,
		       bool done)
{
	struct cmd_result res;

	cmd_all_splits(data, n, &res);
	assert_int_equal(res.used, used);
	assert_string_equal(res.verb, verb);
	assert_int_equal(res.arg_len, strlen(arg));
	assert_memory_equal(res.arg, arg, res.arg_len);
	assert_int_equal(res.is_helo, is_helo);
	assert_int_equal(res.done, done);
	assert_false(res.truncated);
}

static void test_cmd_ehlo(void **state)
{
	(void)state;
	expect_cmd(S("EHLO mail.example.com\r\n"), 23, "EHLO",
		   "mail.example.com", true, true);
	expect_cmd(S("HELO [192.0.2.1]\r\n"), 18, "HELO", "[192.0.2.1]", true,
		   true);
	expect_cmd(S("EHLO x\n"), 7, "EHLO", "x", true, true);
}

static void test_cmd_lowercase(void **state)
{
	(void)state;
	expect_cmd(S("ehlo client.local\r\n"), 19, "EHLO", "client.local", true,
		   true);
	expect_cmd(S("hElO Client.Local\r\n"), 19, "HELO", "Client.Local",
		   true, true);
}

static void test_cmd_spacing(void **state)
{
	(void)state;
	/* leading spaces skipped; only the first argument is kept */
	expect_cmd(S("EHLO   host.example  extra args\r\n"), 33, "EHLO",
		   "host.example", true, true);
	expect_cmd(S("EHLO\thost\r\n"), 11, "EHLO", "host", true, true);
	expect_cmd(S("EHLO host\rjunk\r\n"), 16, "EHLO", "host", true, true);
}

static void test_cmd_no_arg(void **state)
{
	(void)state;
	expect_cmd(S("HELO\r\n"), 6, "HELO", "", true, true);
	expect_cmd(S("HELO\n"), 5, "HELO", "", true, true);
	expect_cmd(S("EHLO   \r\n"), 9, "EHLO", "", true, true);
	expect_cmd(S("\r\n"), 2, "", "", false, true);
	expect_cmd(S("\n"), 1, "", "", false, true);
}

static void test_cmd_not_helo(void **state)
{
	(void)state;
	expect_cmd(S("GET / HTTP/1.0\r\n\r\n"), 16, "GET", "/", false, true);
	expect_cmd(S("QUIT\r\n"), 6, "QUIT", "", false, true);
	expect_cmd(S("MAIL FROM:<a@b>\r\n"), 17, "MAIL", "FROM:<a@b>", false,
		   true);
	expect_cmd(S("EHLOX foo\r\n"), 11, "EHLOX", "foo", false, true);
	expect_cmd(S("EHL foo\r\n"), 9, "EHL", "foo", false, true);
	/* long verbs keep 7 chars and are never EHLO */
	expect_cmd(S("starttlsxyz\r\n"), 13, "STARTTL", "", false, true);
	expect_cmd(S("EHLOEHLO x\r\n"), 12, "EHLOEHL", "x", false, true);
}

static void test_cmd_bytes_returned(void **state)
{
	struct smtp_cmd c;

	(void)state;
	/* a pipelined second command is not part of the first line */
	expect_cmd(S("EHLO a\r\nMAIL FROM:<>\r\n"), 8, "EHLO", "a", true, true);
	/* unfinished line: all of it belongs to the line */
	expect_cmd(S("EHLO partial.exa"), 16, "EHLO", "partial.exa", true,
		   false);
	expect_cmd(S("EHL"), 3, "EHL", "", false, false);

	smtp_cmd_init(&c);
	assert_int_equal(smtp_cmd_feed(&c, NULL, 0), 0);
	assert_false(c.done);
	assert_int_equal(smtp_cmd_feed(&c, "HELO b\r\nX", 9), 8);
	assert_true(c.done);
	assert_int_equal(smtp_cmd_feed(&c, "more\r\n", 6), 0);
	assert_string_equal(c.arg, "b");
}

static void test_cmd_binary(void **state)
{
	static const char junk[] = "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03"
				   "\x03\x00 \x00\xffq\r\n";
	static const char nul_arg[] = "EHLO a\0b\xc3\xa9\r\n";
	struct cmd_result res;

	(void)state;
	/* a TLS ClientHello to a plaintext port: handled, not EHLO */
	cmd_all_splits(junk, sizeof(junk) - 1, &res);
	assert_true(res.done);
	assert_false(res.is_helo);
	assert_int_equal(res.used, sizeof(junk) - 1);
	assert_memory_equal(res.verb, "\x16\x03\x01\x00\xa5\x01\x00", 8);
	assert_int_equal(res.arg_len, 3);
	assert_memory_equal(res.arg, "\x00\xffq", 3);

	/* raw bytes of the argument are kept as they are, NUL included */
	cmd_all_splits(nul_arg, sizeof(nul_arg) - 1, &res);
	assert_true(res.is_helo);
	assert_int_equal(res.arg_len, 5);
	assert_memory_equal(res.arg, "a\0b\xc3\xa9", 5);
}

static void test_cmd_long_line(void **state)
{
	enum { N = 100 * 1024 };
	char *buf = malloc(N);
	struct cmd_result res;
	struct smtp_cmd c;
	size_t total = 0, i;

	(void)state;
	assert_non_null(buf);
	memset(buf, 'A', N);
	cmd_all_splits(buf, N, &res);
	assert_true(res.done);
	assert_int_equal(res.used, SMTP_LINE_MAX);
	assert_string_equal(res.verb, "AAAAAAA");
	assert_false(res.is_helo);

	/* in 1000-byte chunks: done after SMTP_LINE_MAX, nothing after */
	memcpy(buf, "EHLO ", 5);
	smtp_cmd_init(&c);
	for (i = 0; i < N; i += 1000)
		total += smtp_cmd_feed(&c, buf + i, N - i < 1000 ? N - i : 1000);
	assert_true(c.done);
	assert_int_equal(total, SMTP_LINE_MAX);
	assert_true(c.is_helo);
	assert_true(c.truncated);
	assert_int_equal(c.arg_len, SMTP_DOMAIN_MAX);

	/* an LF as byte SMTP_LINE_MAX still ends the line itself */
	memset(buf, 'b', N);
	memcpy(buf, "HELO ", 5);
	buf[SMTP_LINE_MAX - 2] = '\r';
	buf[SMTP_LINE_MAX - 1] = '\n';
	cmd_all_splits(buf, SMTP_LINE_MAX + 10, &res);
	assert_true(res.done);
	assert_int_equal(res.used, SMTP_LINE_MAX);
	free(buf);
}

static void test_cmd_arg_truncation(void **state)
{
	char line[5 + 300 + 2];
	struct cmd_result res;

	(void)state;
	memset(line, 'd', sizeof(line));
	memcpy(line, "EHLO ", 5);
	/* exactly SMTP_DOMAIN_MAX: kept whole */
	memcpy(line + 5 + SMTP_DOMAIN_MAX, "\r\n", 2);
	cmd_all_splits(line, 5 + SMTP_DOMAIN_MAX + 2, &res);
	assert_int_equal(res.arg_len, SMTP_DOMAIN_MAX);
	assert_false(res.truncated);
	assert_true(res.is_helo);

	/* longer: cut at SMTP_DOMAIN_MAX, flagged, line still followed */
	memset(line, 'd', sizeof(line));
	memcpy(line, "EHLO ", 5);
	memcpy(line + sizeof(line) - 2, "\r\n", 2);
	cmd_all_splits(line, sizeof(line), &res);
	assert_int_equal(res.arg_len, SMTP_DOMAIN_MAX);
	assert_true(res.truncated);
	assert_true(res.done);
	assert_int_equal(res.used, sizeof(line));
	assert_int_equal(res.arg[0], 'd');
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reply_single_line),
		cmocka_unit_test(test_reply_multi_line),
		cmocka_unit_test(test_reply_refusals),
		cmocka_unit_test(test_reply_bare_code),
		cmocka_unit_test(test_reply_bytes_returned),
		cmocka_unit_test(test_reply_malformed),
		cmocka_unit_test(test_reply_binary),
		cmocka_unit_test(test_reply_truncation),
		cmocka_unit_test(test_reply_truncation_multi),
		cmocka_unit_test(test_reply_scan_limit),
		cmocka_unit_test(test_cmd_ehlo),
		cmocka_unit_test(test_cmd_lowercase),
		cmocka_unit_test(test_cmd_spacing),
		cmocka_unit_test(test_cmd_no_arg),
		cmocka_unit_test(test_cmd_not_helo),
		cmocka_unit_test(test_cmd_bytes_returned),
		cmocka_unit_test(test_cmd_binary),
		cmocka_unit_test(test_cmd_long_line),
		cmocka_unit_test(test_cmd_arg_truncation),
	};

	return cmocka_run_group_tests_name("smtp", tests, NULL, NULL);
}
