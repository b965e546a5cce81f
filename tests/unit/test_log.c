/* Unit tests for log: escaping, quoting, and whole lines (text and JSON)
 * captured from stderr. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* --- capturing stderr ------------------------------------------------ */

static char tmpdir[64];
static char tmppath[96];
static int saved_stderr = -1;
static FILE *capfile;

static int group_setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_log.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	snprintf(tmppath, sizeof(tmppath), "%s/stderr", tmpdir);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	unlink(tmppath);
	rmdir(tmpdir);
	return 0;
}

/* Everything written to fd 2 until capture_end() goes to a file. Nothing
 * between the two may assert: cmocka reports failures on stderr. */
static void capture_begin(void)
{
	fflush(stderr);
	capfile = fopen(tmppath, "w+");
	if (capfile == NULL)
		fail_msg("cannot open %s", tmppath);
	saved_stderr = dup(STDERR_FILENO);
	if (saved_stderr == -1 || dup2(fileno(capfile), STDERR_FILENO) == -1)
		fail_msg("cannot redirect stderr");
}

/* Restores stderr; returns what was written (caller frees). */
static char *capture_end(size_t *lenp)
{
	char *text;
	long len;

	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	saved_stderr = -1;
	fseek(capfile, 0, SEEK_END);
	len = ftell(capfile);
	rewind(capfile);
	text = calloc(1, (size_t)len + 1);
	assert_non_null(text);
	assert_int_equal(fread(text, 1, (size_t)len, capfile), (size_t)len);
	fclose(capfile);
	unlink(tmppath);
	if (lenp != NULL)
		*lenp = (size_t)len;
	return text;
}

/* A text line starts with "YYYY-MM-DDTHH:MM:SS.mmmZ "; returns the rest. */
static const char *skip_text_ts(const char *line)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ ";

	for (size_t i = 0; i < sizeof(shape) - 1; i++) {
		if (shape[i] == 'd' ? !isdigit((unsigned char)line[i]) :
				      line[i] != shape[i])
			fail_msg("no timestamp at the start of: %s", line);
	}
	return line + sizeof(shape) - 1;
}

/* A JSON line starts with {"ts":"YYYY-...Z", ; returns "{" + the rest. */
static char *strip_json_ts(const char *line)
{
	static const char shape[] = "{\"ts\":\"dddd-dd-ddTdd:dd:dd.dddZ\",";
	char *out;

	for (size_t i = 0; i < sizeof(shape) - 1; i++) {
		if (shape[i] == 'd' ? !isdigit((unsigned char)line[i]) :
				      line[i] != shape[i])
			fail_msg("no ts field at the start of: %s", line);
	}
	out = malloc(strlen(line) + 1);
	assert_non_null(out);
	out[0] = '{';
	strcpy(out + 1, line + sizeof(shape) - 1);
	return out;
}

/* --- a small JSON checker (flat objects, as log lines are) ------------ */

static const char *json_string(const char *s)
{
	if (*s++ != '"')
		return NULL;
	while (*s != '"') {
		unsigned char c = (unsigned char)*s;

		if (c < 0x20 || c >= 0x80)
			return NULL; /* raw control or non-ASCII byte */
		if (c == '\\') {
			s++;
			if (*s == 'u') {
				for (int i = 1; i <= 4; i++)
					if (!isxdigit((unsigned char)s[i]))
						return NULL;
				s += 5;
				continue;
			}
			if (strchr("\"\\/bfnrt", *s) == NULL || *s == '\0')
				return NULL;
		}
		s++;
	}
	return s + 1;
}

/* True when line (no newline) is one JSON object of string keys and
 * string, unsigned number or boolean values. */
static bool json_valid(const char *s)
{
	if (*s++ != '{')
		return false;
	if (*s == '}')
		return s[1] == '\0';
	for (;;) {
		s = json_string(s);
		if (s == NULL || *s++ != ':')
			return false;
		if (*s == '"')
			s = json_string(s);
		else if (isdigit((unsigned char)*s))
			while (isdigit((unsigned char)*s))
				s++;
		else if (strncmp(s, "true", 4) == 0)
			s += 4;
		else if (strncmp(s, "false", 5) == 0)
			s += 5;
		else
			return false;
		if (s == NULL)
			return false;
		if (*s == '}')
			return s[1] == '\0';
		if (*s++ != ',')
			return false;
	}
}

static void test_json_checker(void **state)
{
	(void)state;
	assert_true(json_valid("{}"));
	assert_true(json_valid("{\"a\":\"b\",\"n\":12,\"t\":true}"));
	assert_true(json_valid("{\"a\":\"\\u00ff\\\"\"}"));
	assert_false(json_valid("{\"a\":\"b\""));
	assert_false(json_valid("{\"a\":\"b\",}"));
	assert_false(json_valid("{\"a\":}"));
	assert_false(json_valid("{\"a\":\"b\"}x"));
	assert_false(json_valid("{\"a\":\"\x01\"}"));
	assert_false(json_valid("{\"a\":\"\\x01\"}"));
	assert_false(json_valid("{\"a\":\"\\u00f\"}"));
}

/* --- log_escape and log_needs_quotes --------------------------------- */

static void escape_is(const char *src, size_t n, bool json, const char *want)
{
	char out[256];
	size_t len = log_escape(out, sizeof(out), src, n, json);

	assert_string_equal(out, want);
	assert_int_equal(len, strlen(want));
}

static void test_escape_text(void **state)
{
	(void)state;
	escape_is("mx.example.org ESMTP", 20, false, "mx.example.org ESMTP");
	escape_is("", 0, false, "");
	escape_is("a\"b", 3, false, "a\\\"b");
	escape_is("a\\b", 3, false, "a\\\\b");
	escape_is("220 hi\r\n", 8, false, "220 hi\\r\\n");
	escape_is("\t", 1, false, "\\t");
	escape_is("\x01\x1f\x7f", 3, false, "\\x01\\x1f\\x7f");
	escape_is("a\0b", 3, false, "a\\x00b");
	escape_is("\x80\xc3\xa4\xff", 4, false, "\\x80\\xc3\\xa4\\xff");
	escape_is("\x1b[31m", 5, false, "\\x1b[31m");
	escape_is("k=v ;#/'", 8, false, "k=v ;#/'");
	/* n, not the NUL, ends the input. */
	escape_is("abcdef", 3, false, "abc");
}

static void test_escape_json(void **state)
{
	(void)state;
	escape_is("mx.example.org ESMTP", 20, true, "mx.example.org ESMTP");
	escape_is("a\"b", 3, true, "a\\\"b");
	escape_is("a\\b", 3, true, "a\\\\b");
	escape_is("\r\n\t", 3, true, "\\r\\n\\t");
	escape_is("\x01\x1f\x7f", 3, true, "\\u0001\\u001f\\u007f");
	escape_is("a\0b", 3, true, "a\\u0000b");
	escape_is("\b\f", 2, true, "\\u0008\\u000c");
	/* Bytes, not UTF-8: each is shown as U+0080..U+00FF, so the line
	 * stays valid UTF-8 whatever the peer sent. */
	escape_is("\xc3\xa4\xff", 3, true, "\\u00c3\\u00a4\\u00ff");
	escape_is("/", 1, true, "/");
}

static void test_escape_truncation(void **state)
{
	char out[8];

	(void)state;
	/* Always NUL-terminated; stops before a sequence that does not
	 * fit, never in the middle of one. */
	assert_int_equal(log_escape(out, sizeof(out), "abcdefghij", 10, false),
			 7);
	assert_string_equal(out, "abcdefg");
	assert_int_equal(log_escape(out, sizeof(out), "abcdef\"", 7, false),
			 6);
	assert_string_equal(out, "abcdef");
	assert_int_equal(log_escape(out, sizeof(out), "abcde\"", 6, false), 7);
	assert_string_equal(out, "abcde\\\"");
	assert_int_equal(log_escape(out, sizeof(out), "abcd\x01", 5, false),
			 4);
	assert_string_equal(out, "abcd");
	assert_int_equal(log_escape(out, sizeof(out), "abc\x01", 4, false), 7);
	assert_string_equal(out, "abc\\x01");
	assert_int_equal(log_escape(out, sizeof(out), "ab\x01", 3, true), 2);
	assert_string_equal(out, "ab");
	assert_int_equal(log_escape(out, sizeof(out), "a\x01", 2, true), 7);
	assert_string_equal(out, "a\\u0001");
	assert_int_equal(log_escape(out, sizeof(out), "\x01", 1, true), 6);
	assert_string_equal(out, "\\u0001");
	assert_int_equal(log_escape(out, 1, "abc", 3, false), 0);
	assert_string_equal(out, "");
	out[0] = 'x';
	assert_int_equal(log_escape(out, 0, "abc", 3, false), 0);
	assert_int_equal(out[0], 'x');
}

static void test_needs_quotes(void **state)
{
	(void)state;
	assert_false(log_needs_quotes("mx.example.org", 14));
	assert_false(log_needs_quotes("192.0.2.1:25", 12));
	assert_false(log_needs_quotes("[::1]:25", 8));
	assert_false(log_needs_quotes("a,b;c/d'e", 9));
	assert_true(log_needs_quotes("", 0));
	assert_true(log_needs_quotes("a b", 3));
	assert_true(log_needs_quotes("a\"b", 3));
	assert_true(log_needs_quotes("a=b", 3));
	assert_true(log_needs_quotes("a\\b", 3));
	assert_true(log_needs_quotes("a\tb", 3));
	assert_true(log_needs_quotes("a\nb", 3));
	assert_true(log_needs_quotes("a\0b", 3));
	assert_true(log_needs_quotes("a\x7f", 2));
	assert_true(log_needs_quotes("\xc3\xa4", 2));
	/* Only the first n bytes count. */
	assert_false(log_needs_quotes("ab cd", 2));
}

/* --- whole lines ----------------------------------------------------- */

static int text_setup(void **state)
{
	(void)state;
	log_setup(LOG_LVL_INFO, LOG_FMT_TEXT, false);
	return 0;
}

static int json_setup(void **state)
{
	(void)state;
	log_setup(LOG_LVL_INFO, LOG_FMT_JSON, false);
	return 0;
}

static void test_text_line(void **state)
{
	struct log_line l;
	char *out;
	size_t len;

	(void)state;
	capture_begin();
	log_begin(&l, LOG_LVL_INFO, "session");
	log_str(&l, "forward", "smtp");
	log_str(&l, "client", "192.0.2.1:40000");
	log_str(&l, "greeting", "220 mx.example.org ESMTP \"ready\"");
	log_str(&l, "ehlo", "");
	log_str(&l, "unset", NULL);
	log_strn(&l, "raw", "a=b\r\n\0\xff", 7);
	log_uint(&l, "bytes_in", 18446744073709551615ull);
	log_uint(&l, "bytes_out", 0);
	log_bool(&l, "tls", true);
	log_bool(&l, "tls_required", false);
	log_fmt(&l, "duration", "%.3f", 1.5);
	log_fmt(&l, "reason", "%s %d", "backend closed", 7);
	log_end(&l);
	out = capture_end(&len);
	assert_true(len > 0);
	assert_int_equal(out[len - 1], '\n');
	assert_ptr_equal(strchr(out, '\n'), out + len - 1);
	out[len - 1] = '\0';
	assert_string_equal(
		skip_text_ts(out),
		"level=info event=session forward=smtp client=192.0.2.1:40000 "
		"greeting=\"220 mx.example.org ESMTP \\\"ready\\\"\" ehlo=\"\" "
		"unset=- raw=\"a=b\\r\\n\\x00\\xff\" "
		"bytes_in=18446744073709551615 bytes_out=0 tls=yes "
		"tls_required=no duration=1.500 reason=\"backend closed 7\"");
	free(out);
}

static void test_json_line(void **state)
{
	struct log_line l;
	char *out, *rest;
	size_t len;

	(void)state;
	capture_begin();
	log_begin(&l, LOG_LVL_WARN, "session");
	log_str(&l, "forward", "smtp");
	log_str(&l, "greeting", "220 mx \"x\"\\");
	log_str(&l, "ehlo", "");
	log_str(&l, "unset", NULL);
	log_strn(&l, "raw", "a\r\n\0\xff", 5);
	log_uint(&l, "bytes_in", 42);
	log_bool(&l, "tls", true);
	log_bool(&l, "tls_required", false);
	log_fmt(&l, "reason", "%s", "idle timeout");
	log_end(&l);
	out = capture_end(&len);
	assert_int_equal(out[len - 1], '\n');
	out[len - 1] = '\0';
	assert_null(strchr(out, '\n'));
	assert_true(json_valid(out));
	rest = strip_json_ts(out);
	assert_string_equal(
		rest,
		"{\"level\":\"warn\",\"event\":\"session\",\"forward\":\"smtp\","
		"\"greeting\":\"220 mx \\\"x\\\"\\\\\",\"ehlo\":\"\","
		"\"unset\":\"-\",\"raw\":\"a\\r\\n\\u0000\\u00ff\","
		"\"bytes_in\":42,\"tls\":true,\"tls_required\":false,"
		"\"reason\":\"idle timeout\"}");
	free(rest);
	free(out);
}

static void test_levels(void **state)
{
	struct log_line l;
	char *out;
	size_t len;

	(void)state;
	assert_true(log_enabled(LOG_LVL_ERROR));
	assert_true(log_enabled(LOG_LVL_WARN));
	assert_true(log_enabled(LOG_LVL_INFO));
	assert_false(log_enabled(LOG_LVL_DEBUG));
	assert_string_equal(log_level_str(LOG_LVL_ERROR), "error");
	assert_string_equal(log_level_str(LOG_LVL_WARN), "warn");
	assert_string_equal(log_level_str(LOG_LVL_INFO), "info");
	assert_string_equal(log_level_str(LOG_LVL_DEBUG), "debug");

	capture_begin();
	log_begin(&l, LOG_LVL_DEBUG, "noise");
	log_str(&l, "k", "v");
	log_uint(&l, "n", 1);
	log_end(&l);
	log_msg(LOG_LVL_DEBUG, "noise", "hidden %d", 1);
	log_msg(LOG_LVL_ERROR, "config", "bad %s", "file");
	out = capture_end(&len);
	assert_false(l.active);
	assert_int_equal(out[len - 1], '\n');
	out[len - 1] = '\0';
	assert_string_equal(skip_text_ts(out),
			    "level=error event=config msg=\"bad file\"");
	free(out);

	log_setup(LOG_LVL_ERROR, LOG_FMT_TEXT, false);
	assert_false(log_enabled(LOG_LVL_WARN));
	capture_begin();
	log_msg(LOG_LVL_WARN, "x", "y");
	out = capture_end(&len);
	assert_int_equal(len, 0);
	free(out);

	log_setup(LOG_LVL_DEBUG, LOG_FMT_TEXT, false);
	assert_true(log_enabled(LOG_LVL_DEBUG));
	capture_begin();
	log_msg(LOG_LVL_DEBUG, "x", "y");
	out = capture_end(&len);
	out[len - 1] = '\0';
	assert_string_equal(skip_text_ts(out), "level=debug event=x msg=y");
	free(out);
}

/* One write per line: many lines come out whole and in order. */
static void test_lines_whole(void **state)
{
	char *out, *line, *save = NULL;
	size_t len;
	int n = 0;

	(void)state;
	capture_begin();
	for (int i = 0; i < 100; i++)
		log_msg(LOG_LVL_INFO, "tick", "n=%d", i);
	out = capture_end(&len);
	for (line = strtok_r(out, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char want[64];

		snprintf(want, sizeof(want), "level=info event=tick msg=\"n=%d\"",
			 n);
		assert_string_equal(skip_text_ts(line), want);
		n++;
	}
	assert_int_equal(n, 100);
	free(out);
}

/* Lines that reach LOG_LINE_MAX, for every length of a long value and
 * several sets of fields after it: a field that does not fit is left out
 * whole (no dangling key, no number cut short), the line stays one line
 * within LOG_LINE_MAX, and JSON stays valid. */
static const char *const tails[][3] = {
	{ "n", "b", NULL },
	{ "n", "b", "s" },
	{ "n", NULL, NULL },
	{ "b", NULL, NULL },
	{ "s", "n", NULL },
};

static void emit_big(const char *big, size_t n, const char *const *tail)
{
	struct log_line l;

	log_begin(&l, LOG_LVL_INFO, "big");
	log_strn(&l, "v", big, n);
	for (int i = 0; i < 3 && tail[i] != NULL; i++) {
		if (strcmp(tail[i], "n") == 0)
			log_uint(&l, "n", 1234567);
		else if (strcmp(tail[i], "b") == 0)
			log_bool(&l, "b", false);
		else
			log_str(&l, "s", "x y");
	}
	log_end(&l);
}

static void test_full_line_json(void **state)
{
	static char big[LOG_LINE_MAX + 100];

	(void)state;
	memset(big, 'a', sizeof(big) - 1);
	for (size_t t = 0; t < sizeof(tails) / sizeof(tails[0]); t++) {
		for (size_t n = LOG_LINE_MAX - 120; n < LOG_LINE_MAX; n++) {
			char *out, *p, end[48];
			size_t len;

			capture_begin();
			emit_big(big, n, tails[t]);
			out = capture_end(&len);
			assert_true(len <= LOG_LINE_MAX);
			assert_int_equal(out[len - 1], '\n');
			out[len - 1] = '\0';
			snprintf(end, sizeof(end), "%s", out + len - 40);
			p = strstr(out, "\"n\":");
			if (p != NULL && strncmp(p, "\"n\":1234567", 11) != 0) {
				free(out);
				fail_msg("tail %zu, value of %zu: number cut: ...%s",
					 t, n, end);
			}
			if (!json_valid(out)) {
				free(out);
				fail_msg("tail %zu, value of %zu: invalid JSON: ...%s",
					 t, n, end);
			}
			free(out);
		}
	}
}

/* The rest of a text line after the big value: whole fields only, but
 * a string value may be cut short (still closed by its quote). */
static bool text_tail_ok(const char *p)
{
	while (*p != '\0') {
		if (strncmp(p, " n=1234567", 10) == 0) {
			p += 10;
		} else if (strncmp(p, " b=no", 5) == 0) {
			p += 5;
		} else if (strncmp(p, " s=\"", 4) == 0) {
			const char *q = strchr(p + 4, '"');

			if (q == NULL || strncmp(p + 4, "x y", (size_t)(q - p - 4)) != 0)
				return false;
			p = q + 1;
		} else {
			return false;
		}
	}
	return true;
}

static void test_full_line_text(void **state)
{
	static char big[LOG_LINE_MAX + 100];

	(void)state;
	memset(big, 'a', sizeof(big) - 1);
	for (int quoted = 0; quoted < 2; quoted++) {
		big[10] = quoted ? ' ' : 'a';
		for (size_t t = 0; t < sizeof(tails) / sizeof(tails[0]); t++) {
			for (size_t n = LOG_LINE_MAX - 120; n < LOG_LINE_MAX;
			     n++) {
				char *out, *p, end[48];
				size_t len;

				capture_begin();
				emit_big(big, n, tails[t]);
				out = capture_end(&len);
				assert_true(len <= LOG_LINE_MAX);
				assert_int_equal(out[len - 1], '\n');
				assert_null(memchr(out, '\n', len - 1));
				out[len - 1] = '\0';
				snprintf(end, sizeof(end), "%s", out + len - 40);
				/* The value, closed when quoted. */
				p = strstr(out, " v=");
				assert_non_null(p);
				p += 3;
				if (quoted) {
					assert_int_equal(*p, '"');
					p = strchr(p + 1, '"');
					assert_non_null(p);
					p++;
				} else {
					p += strspn(p, "a");
				}
				if (!text_tail_ok(p)) {
					free(out);
					fail_msg("quoted %d, tail %zu, value of %zu: ...%s",
						 quoted, t, n, end);
				}
				free(out);
			}
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_checker),
		cmocka_unit_test(test_escape_text),
		cmocka_unit_test(test_escape_json),
		cmocka_unit_test(test_escape_truncation),
		cmocka_unit_test(test_needs_quotes),
		cmocka_unit_test_setup(test_text_line, text_setup),
		cmocka_unit_test_setup(test_json_line, json_setup),
		cmocka_unit_test_setup(test_levels, text_setup),
		cmocka_unit_test_setup(test_lines_whole, text_setup),
		cmocka_unit_test_setup(test_full_line_json, json_setup),
		cmocka_unit_test_setup(test_full_line_text, text_setup),
	};

	return cmocka_run_group_tests_name("log", tests, group_setup,
					   group_teardown);
}
