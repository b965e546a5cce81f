/* Unit tests for stats: the counters as /metrics shows them (exact
 * values, escaped labels), /health from the running forwards, and
 * stats_response's answer to every kind of request head, good or not.
 * The counters are process-wide and never reset, so each test uses
 * forward names of its own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"

#define S(lit) lit, sizeof(lit) - 1

/* A parsed response: status, the head (NUL-terminated) and the body
 * (NUL-terminated copy; binary-safe length in blen). */
struct st_resp {
	int status;
	char *head;
	char *body;
	size_t blen;
};

static void st_free(struct st_resp *r)
{
	free(r->head);
	free(r->body);
	memset(r, 0, sizeof(*r));
}

/* Asks, checks the response is well formed HTTP/1.0 with a
 * Content-Length equal to its body's length, and returns it parsed. */
static struct st_resp st_ask(const char *req, size_t n)
{
	struct st_resp r = { 0 };
	size_t len = (size_t)-1, hlen;
	char *copy = malloc(n ? n : 1); /* exactly n bytes, for ASan */
	char *out, *end, *cl;
	unsigned long long clen;

	assert_non_null(copy);
	memcpy(copy, req, n);
	out = stats_response(copy, n, &len);
	free(copy);
	assert_non_null(out);
	assert_true(len != (size_t)-1);
	assert_true(len > 17);
	assert_memory_equal(out, "HTTP/1.0 ", 9);
	assert_true(out[9] >= '1' && out[9] <= '5');
	r.status = (out[9] - '0') * 100 + (out[10] - '0') * 10 + (out[11] - '0');
	assert_int_equal(out[12], ' ');

	end = memmem(out, len, "\r\n\r\n", 4);
	assert_non_null(end);
	hlen = (size_t)(end - out) + 4;
	r.head = strndup(out, hlen);
	assert_non_null(r.head);
	/* no stray NUL or bare LF in the head */
	assert_int_equal(strlen(r.head), hlen);
	for (size_t i = 0; i < hlen; i++)
		if (out[i] == '\n')
			assert_int_equal(out[i - 1], '\r');

	cl = strstr(r.head, "\r\nContent-Length: ");
	assert_non_null(cl);
	assert_int_equal(sscanf(cl, "\r\nContent-Length: %llu\r\n", &clen), 1);
	assert_int_equal(clen, len - hlen);
	assert_non_null(strstr(r.head, "\r\nConnection: close\r\n"));
	assert_non_null(strstr(r.head, "\r\nContent-Type: text/plain"));

	r.blen = len - hlen;
	r.body = malloc(r.blen + 1);
	assert_non_null(r.body);
	memcpy(r.body, out + hlen, r.blen);
	r.body[r.blen] = '\0';
	free(out);
	return r;
}

/* The head starts with this status line. */
static void st_status_line(const struct st_resp *r, const char *want)
{
	size_t n = strlen(want);

	assert_true(strlen(r->head) >= n);
	assert_memory_equal(r->head, want, n);
}

static struct st_resp st_get(const char *req)
{
	return st_ask(req, strlen(req));
}

static void st_expect_status(const char *req, size_t n, int status)
{
	struct st_resp r = st_ask(req, n);

	if (r.status != status)
		fail_msg("\"%.*s\": status %d, want %d", (int)n, req, r.status,
			 status);
	st_free(&r);
}

/* The value of the one sample line "<series> <value>" in a metrics body;
 * fails when there is none or more than one. */
static const char *st_sample(const char *body, const char *series)
{
	static char value[64];
	const char *p = body, *hit = NULL;
	size_t sl = strlen(series);

	while (p != NULL && *p != '\0') {
		const char *nl = strchr(p, '\n');

		assert_non_null(nl); /* every line ends with \n */
		if ((size_t)(nl - p) > sl && memcmp(p, series, sl) == 0 &&
		    p[sl] == ' ') {
			if (hit != NULL)
				fail_msg("two samples of %s", series);
			hit = p + sl + 1;
			assert_true((size_t)(nl - hit) < sizeof(value));
			memcpy(value, hit, (size_t)(nl - hit));
			value[nl - hit] = '\0';
		}
		p = nl + 1;
	}
	if (hit == NULL)
		fail_msg("no sample of %s in:\n%s", series, body);
	return value;
}

static void st_expect_sample(const char *body, const char *series,
			     const char *want)
{
	const char *got = st_sample(body, series);

	if (strcmp(got, want) != 0)
		fail_msg("%s is %s, want %s", series, got, want);
}

/* How many lines of body contain all of the NULL-ended strings. */
static unsigned st_count_lines(const char *body, const char *const *parts)
{
	const char *p = body;
	unsigned n = 0;

	while (*p != '\0') {
		const char *nl = strchr(p, '\n');
		char *line;
		size_t i;
		bool all = true;

		assert_non_null(nl);
		line = strndup(p, (size_t)(nl - p));
		assert_non_null(line);
		for (i = 0; parts[i] != NULL; i++)
			if (strstr(line, parts[i]) == NULL)
				all = false;
		n += all;
		free(line);
		p = nl + 1;
	}
	return n;
}

static struct st_resp st_metrics(void)
{
	struct st_resp r = st_get("GET /metrics HTTP/1.0\r\n\r\n");

	assert_int_equal(r.status, 200);
	st_status_line(&r, "HTTP/1.0 200 OK\r\n");
	return r;
}

/* ---- /metrics ---- */

/* Each family: HELP, then TYPE, then only its own samples; every
 * sample line is "name{labels} value" with a numeric value. */
static void test_metrics_format(void **state)
{
	static const struct {
		const char *name, *type;
	} fam[] = {
		{ "smtpfwd_sessions_total", "counter" },
		{ "smtpfwd_sessions_active", "gauge" },
		{ "smtpfwd_bytes_total", "counter" },
		{ "smtpfwd_pump_sessions_total", "counter" },
		{ "smtpfwd_backend_connects_total", "counter" },
	};
	struct stats_fwd *f = stats_forward("st-format");
	struct st_resp r;
	const char *p;
	size_t i, cur = (size_t)-1;
	bool typed = false;

	(void)state;
	assert_non_null(f);
	stats_backend_result(f, "192.0.2.1:25", true);
	r = st_metrics();
	assert_true(r.blen > 0);
	assert_int_equal(r.body[r.blen - 1], '\n');
	assert_int_equal(strlen(r.body), r.blen);
	for (i = 0; i < sizeof(fam) / sizeof(fam[0]); i++) {
		char want[160];

		snprintf(want, sizeof(want), "# TYPE %s %s\n", fam[i].name,
			 fam[i].type);
		assert_non_null(strstr(r.body, want));
		snprintf(want, sizeof(want), "# HELP %s ", fam[i].name);
		assert_non_null(strstr(r.body, want));
	}
	for (p = r.body; *p != '\0';) {
		const char *nl = strchr(p, '\n');
		size_t len = (size_t)(nl - p);

		if (len > 7 && memcmp(p, "# HELP ", 7) == 0) {
			cur = (size_t)-1;
			for (i = 0; i < sizeof(fam) / sizeof(fam[0]); i++)
				if (strncmp(p + 7, fam[i].name,
					    strlen(fam[i].name)) == 0 &&
				    p[7 + strlen(fam[i].name)] == ' ')
					cur = i;
			assert_true(cur != (size_t)-1);
			typed = false;
		} else if (len > 7 && memcmp(p, "# TYPE ", 7) == 0) {
			assert_true(cur != (size_t)-1);
			assert_false(typed);
			assert_int_equal(strncmp(p + 7, fam[cur].name,
						 strlen(fam[cur].name)), 0);
			typed = true;
		} else {
			const char *brace = memchr(p, '{', len);
			const char *close = memchr(p, '}', len);
			const char *v;

			/* a sample of the family just announced */
			assert_true(typed);
			assert_non_null(brace);
			assert_non_null(close);
			assert_int_equal((size_t)(brace - p), strlen(fam[cur].name));
			assert_memory_equal(p, fam[cur].name, strlen(fam[cur].name));
			assert_int_equal(close[1], ' ');
			v = close + 2;
			if (*v == '-')
				v++;
			assert_true(v < nl);
			for (; v < nl; v++)
				assert_true(*v >= '0' && *v <= '9');
		}
		p = nl + 1;
	}
	st_free(&r);
}

/* The counters moved by opening and closing sessions and by connect
 * results, with exact values, 64-bit byte counts included. */
static void test_metrics_counters(void **state)
{
	struct stats_fwd *f = stats_forward("st-counters");
	struct stats_fwd *g = stats_forward("st-counters-other");
	struct st_resp r;
	int i;

	(void)state;
	assert_non_null(f);
	assert_non_null(g);
	for (i = 0; i < 4; i++)
		stats_session_open(f);
	stats_session_close(f, STATS_FORWARDED, 100, 2000, true, false);
	stats_session_close(f, STATS_FORWARDED, 5000000000ULL, 7, false, true);
	stats_session_close(f, STATS_DENIED, 0, 0, false, false);
	stats_session_open(g);
	stats_session_close(g, STATS_TIMEOUT, 1, 2, true, true);
	stats_backend_result(f, "192.0.2.10:25", true);
	stats_backend_result(f, "192.0.2.10:25", true);
	stats_backend_result(f, "192.0.2.10:25", false);
	stats_backend_result(f, "mx.example.test:2525", false);

	r = st_metrics();
#define F "{forward=\"st-counters\""
	st_expect_sample(r.body, "smtpfwd_sessions_total" F ",result=\"forwarded\"}", "2");
	st_expect_sample(r.body, "smtpfwd_sessions_total" F ",result=\"denied\"}", "1");
	st_expect_sample(r.body, "smtpfwd_sessions_total" F ",result=\"limited\"}", "0");
	st_expect_sample(r.body, "smtpfwd_sessions_total" F ",result=\"backend_unavailable\"}", "0");
	st_expect_sample(r.body, "smtpfwd_sessions_total" F ",result=\"tls_failed\"}", "0");
	st_expect_sample(r.body, "smtpfwd_sessions_total" F ",result=\"timeout\"}", "0");
	st_expect_sample(r.body, "smtpfwd_sessions_total" F ",result=\"error\"}", "0");
	st_expect_sample(r.body, "smtpfwd_sessions_active" F "}", "1");
	st_expect_sample(r.body, "smtpfwd_bytes_total" F ",direction=\"up\"}", "5000000100");
	st_expect_sample(r.body, "smtpfwd_bytes_total" F ",direction=\"down\"}", "2007");
	st_expect_sample(r.body, "smtpfwd_pump_sessions_total" F ",pump=\"splice\"}", "1");
	st_expect_sample(r.body, "smtpfwd_pump_sessions_total" F ",pump=\"copy\"}", "1");
	st_expect_sample(r.body, "smtpfwd_backend_connects_total" F
			 ",backend=\"192.0.2.10:25\",result=\"ok\"}", "2");
	st_expect_sample(r.body, "smtpfwd_backend_connects_total" F
			 ",backend=\"192.0.2.10:25\",result=\"failed\"}", "1");
	st_expect_sample(r.body, "smtpfwd_backend_connects_total" F
			 ",backend=\"mx.example.test:2525\",result=\"ok\"}", "0");
	st_expect_sample(r.body, "smtpfwd_backend_connects_total" F
			 ",backend=\"mx.example.test:2525\",result=\"failed\"}", "1");
#undef F
#define G "{forward=\"st-counters-other\""
	/* the other forward's counters are its own; splice wins over copy */
	st_expect_sample(r.body, "smtpfwd_sessions_total" G ",result=\"timeout\"}", "1");
	st_expect_sample(r.body, "smtpfwd_sessions_total" G ",result=\"forwarded\"}", "0");
	st_expect_sample(r.body, "smtpfwd_sessions_active" G "}", "0");
	st_expect_sample(r.body, "smtpfwd_bytes_total" G ",direction=\"up\"}", "1");
	st_expect_sample(r.body, "smtpfwd_bytes_total" G ",direction=\"down\"}", "2");
	st_expect_sample(r.body, "smtpfwd_pump_sessions_total" G ",pump=\"splice\"}", "1");
	st_expect_sample(r.body, "smtpfwd_pump_sessions_total" G ",pump=\"copy\"}", "0");
	assert_int_equal(st_count_lines(r.body, (const char *const[]){
				 "smtpfwd_backend_connects_total" G, NULL }),
			 0);
#undef G
	st_free(&r);

	/* counting on moves the same series */
	stats_session_close(f, STATS_FORWARDED, 1, 1, false, false);
	r = st_metrics();
	st_expect_sample(r.body,
			 "smtpfwd_sessions_total{forward=\"st-counters\",result=\"forwarded\"}",
			 "3");
	st_expect_sample(r.body, "smtpfwd_sessions_active{forward=\"st-counters\"}", "0");
	st_free(&r);
}

/* Names come from the configuration: a quote, a backslash or a line end
 * in one must not break the exposition format. */
static void test_metrics_label_escaping(void **state)
{
	struct stats_fwd *f = stats_forward("st-we\"ird\\name");
	struct stats_fwd *g = stats_forward("st-two\nlines");
	struct st_resp r;

	(void)state;
	assert_non_null(f);
	assert_non_null(g);
	stats_session_open(f);
	stats_backend_result(f, "b\"ack\\end", false);
	stats_session_open(g);
	stats_session_open(g);
	r = st_metrics();
	st_expect_sample(r.body, "smtpfwd_sessions_active{forward=\"st-we\\\"ird\\\\name\"}",
			 "1");
	st_expect_sample(r.body, "smtpfwd_sessions_active{forward=\"st-two\\nlines\"}",
			 "2");
	st_expect_sample(r.body,
			 "smtpfwd_backend_connects_total{forward=\"st-we\\\"ird\\\\name\","
			 "backend=\"b\\\"ack\\\\end\",result=\"failed\"}",
			 "1");
	/* nothing unescaped leaked out */
	assert_null(strstr(r.body, "we\"ird"));
	assert_null(strstr(r.body, "two\nlines"));
	st_free(&r);
	stats_session_close(f, STATS_ERROR, 0, 0, false, false);
	stats_session_close(g, STATS_ERROR, 0, 0, false, false);
	stats_session_close(g, STATS_ERROR, 0, 0, false, false);
}

/* A backend named at length (a long host name and port) is still one
 * series, counted on. */
static void test_metrics_long_backend_name(void **state)
{
	struct stats_fwd *f = stats_forward("st-longbackend");
	char name[200];
	struct st_resp r;

	(void)state;
	assert_non_null(f);
	memset(name, 'h', sizeof(name));
	memcpy(name + sizeof(name) - 6, ":2525", 6);
	stats_backend_result(f, name, true);
	stats_backend_result(f, name, true);
	stats_backend_result(f, name, false);
	r = st_metrics();
	assert_int_equal(st_count_lines(r.body, (const char *const[]){
				 "{forward=\"st-longbackend\"", "result=\"ok\"} 2",
				 NULL }),
			 1);
	assert_int_equal(st_count_lines(r.body, (const char *const[]){
				 "{forward=\"st-longbackend\"",
				 "result=\"failed\"} 1", NULL }),
			 1);
	assert_int_equal(st_count_lines(r.body, (const char *const[]){
				 "smtpfwd_backend_connects_total{forward=\"st-longbackend\"",
				 NULL }),
			 2);
	st_free(&r);
}

/* ---- forwards ---- */

/* A reload looks its forwards up by name and must find the counters
 * counted so far. */
static void test_forward_identity(void **state)
{
	struct stats_fwd *a = stats_forward("st-id-a");
	struct stats_fwd *b = stats_forward("st-id-b");
	char longname[120];

	(void)state;
	assert_non_null(a);
	assert_non_null(b);
	assert_ptr_not_equal(a, b);
	assert_ptr_equal(stats_forward("st-id-a"), a);
	assert_ptr_equal(stats_forward("st-id-b"), b);
	/* a prefix is another name, and so is a longer one */
	assert_ptr_not_equal(stats_forward("st-id-"), a);
	assert_ptr_not_equal(stats_forward("st-id-a2"), a);
	assert_ptr_equal(stats_forward("st-id-a"), a);

	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	a = stats_forward(longname);
	assert_non_null(a);
	assert_ptr_equal(stats_forward(longname), a);
}

/* Every function takes NULL (out of memory) and does nothing. */
static void test_null_forward(void **state)
{
	(void)state;
	stats_session_open(NULL);
	stats_session_close(NULL, STATS_FORWARDED, 1, 1, true, false);
	stats_backend_result(NULL, "x:25", false);
	assert_true(stats_forward_healthy(NULL));
}

static void test_result_names(void **state)
{
	(void)state;
	assert_string_equal(stats_result_str(STATS_FORWARDED), "forwarded");
	assert_string_equal(stats_result_str(STATS_DENIED), "denied");
	assert_string_equal(stats_result_str(STATS_LIMITED), "limited");
	assert_string_equal(stats_result_str(STATS_BACKEND_UNAVAILABLE),
			    "backend_unavailable");
	assert_string_equal(stats_result_str(STATS_TLS_FAILED), "tls_failed");
	assert_string_equal(stats_result_str(STATS_TIMEOUT), "timeout");
	assert_string_equal(stats_result_str(STATS_ERROR), "error");
	assert_string_equal(stats_result_str(STATS_RESULT_COUNT), "?");
}

/* ---- /health ---- */

static void st_expect_health(int status, const char *body)
{
	static const char *const reqs[] = {
		"GET /health HTTP/1.0\r\n\r\n",
		"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n",
		"GET /health\r\n",
	};
	size_t i;

	for (i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
		struct st_resp r = st_get(reqs[i]);

		assert_int_equal(r.status, status);
		if (status == 200)
			st_status_line(&r, "HTTP/1.0 200 OK\r\n");
		else
			st_status_line(&r, "HTTP/1.0 503 Service Unavailable\r\n");
		assert_string_equal(r.body, body);
		st_free(&r);
	}
}

static void test_health(void **state)
{
	static struct stats_fwd *cur[2];
	struct stats_fwd *other = stats_forward("st-h-other");

	(void)state;
	cur[0] = stats_forward("st-h-a");
	cur[1] = stats_forward("st-h-b");
	assert_non_null(cur[0]);
	assert_non_null(cur[1]);
	assert_non_null(other);
	stats_set_current(cur, 2);

	/* no attempt yet is healthy */
	assert_true(stats_forward_healthy(cur[0]));
	st_expect_health(200, "st-h-a ok\nst-h-b ok\n");

	stats_backend_result(cur[1], "192.0.2.1:25", true);
	st_expect_health(200, "st-h-a ok\nst-h-b ok\n");
	stats_backend_result(cur[1], "192.0.2.1:25", false);
	assert_false(stats_forward_healthy(cur[1]));
	st_expect_health(503, "st-h-a ok\nst-h-b failing\n");
	/* any backend of the forward: the last attempt decides */
	stats_backend_result(cur[1], "192.0.2.2:25", true);
	assert_true(stats_forward_healthy(cur[1]));
	st_expect_health(200, "st-h-a ok\nst-h-b ok\n");

	/* a failure with no success ever */
	stats_backend_result(cur[0], "192.0.2.3:25", false);
	st_expect_health(503, "st-h-a failing\nst-h-b ok\n");
	stats_backend_result(cur[1], "192.0.2.2:25", false);
	st_expect_health(503, "st-h-a failing\nst-h-b failing\n");
	stats_backend_result(cur[0], "192.0.2.3:25", true);
	stats_backend_result(cur[1], "192.0.2.2:25", true);
	st_expect_health(200, "st-h-a ok\nst-h-b ok\n");

	/* one dead backend beside a working one: still healthy */
	stats_backend_result(cur[1], "192.0.2.2:25", true);
	stats_backend_result(cur[1], "192.0.2.1:25", false);
	assert_true(stats_forward_healthy(cur[1]));
	stats_backend_result(cur[1], "192.0.2.2:25", false);
	assert_false(stats_forward_healthy(cur[1]));
	stats_backend_result(cur[1], "192.0.2.1:25", true);
	assert_true(stats_forward_healthy(cur[1]));

	/* a failing forward no longer configured is not looked at */
	stats_backend_result(other, "192.0.2.9:25", false);
	assert_false(stats_forward_healthy(other));
	st_expect_health(200, "st-h-a ok\nst-h-b ok\n");
	stats_set_current(cur, 1);
	stats_backend_result(cur[1], "192.0.2.2:25", false);
	st_expect_health(200, "st-h-a ok\n");

	/* after a reload that drops them all */
	stats_set_current(NULL, 0);
	st_expect_health(200, "");
}

/* ---- requests ---- */

static void test_routes(void **state)
{
	(void)state;
	st_expect_status(S("GET /metrics HTTP/1.0\r\n\r\n"), 200);
	st_expect_status(S("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"), 200);
	st_expect_status(S("GET /metrics HTTP/1.0\n\n"), 200);
	st_expect_status(S("GET /metrics\r\n"), 200);
	st_expect_status(S("GET /metrics"), 200);
	st_expect_status(S("GET /health HTTP/1.1\r\n\r\n"), 200);

	/* other paths, query strings, near misses */
	st_expect_status(S("GET / HTTP/1.0\r\n\r\n"), 404);
	st_expect_status(S("GET /metrics?name[]=x HTTP/1.1\r\n\r\n"), 404);
	st_expect_status(S("GET /health?verbose=1 HTTP/1.0\r\n\r\n"), 404);
	st_expect_status(S("GET /metrics?x\r\n"), 404);
	st_expect_status(S("GET /metricsx HTTP/1.0\r\n\r\n"), 404);
	st_expect_status(S("GET /metrics/ HTTP/1.0\r\n\r\n"), 404);
	st_expect_status(S("GET /Metrics HTTP/1.0\r\n\r\n"), 404);
	st_expect_status(S("GET /healthz HTTP/1.0\r\n\r\n"), 404);
	st_expect_status(S("GET /../metrics HTTP/1.0\r\n\r\n"), 404);
	st_expect_status(S("GET http://x/metrics HTTP/1.1\r\n\r\n"), 404);
	/* only the request line counts, not a header */
	st_expect_status(S("GET /x HTTP/1.0\r\nGET /metrics HTTP/1.0\r\n\r\n"), 404);

	/* other methods */
	st_expect_status(S("POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n"), 405);
	st_expect_status(S("HEAD /health HTTP/1.0\r\n\r\n"), 405);
	st_expect_status(S("PUT /health HTTP/1.1\r\n\r\n"), 405);
	st_expect_status(S("DELETE / HTTP/1.1\r\n\r\n"), 405);
	st_expect_status(S("get /metrics HTTP/1.0\r\n\r\n"), 405);
	st_expect_status(S("GETS /metrics HTTP/1.0\r\n\r\n"), 405);
	st_expect_status(S("GET\t/metrics HTTP/1.0\r\n\r\n"), 405);
	st_expect_status(S("OPTIONS * HTTP/1.1\r\n\r\n"), 405);
}

static void test_status_lines(void **state)
{
	struct st_resp r;

	(void)state;
	r = st_get("GET /nope HTTP/1.0\r\n\r\n");
	assert_int_equal(r.status, 404);
	st_status_line(&r, "HTTP/1.0 404 Not Found\r\n");
	assert_true(r.blen > 0);
	st_free(&r);

	/* a 405 says which method is allowed (RFC 9110 15.5.6) */
	r = st_get("POST /metrics HTTP/1.0\r\n\r\n");
	assert_int_equal(r.status, 405);
	st_status_line(&r, "HTTP/1.0 405 Method Not Allowed\r\n");
	assert_non_null(strstr(r.head, "\r\nAllow: GET\r\n"));
	st_free(&r);

	/* only a 405 does */
	r = st_get("GET /nope HTTP/1.0\r\n\r\n");
	assert_null(strstr(r.head, "Allow:"));
	st_free(&r);
}

/* Anything at all gets a well formed 4xx, never a crash or an over-read
 * (each request sits in a heap block of exactly its size). */
static void test_garbage(void **state)
{
	char big[4096];
	unsigned char rnd[512];
	uint32_t seed = 12345;
	size_t i, j;

	(void)state;
	st_expect_status("", 0, 404);
	st_expect_status(S("\r\n\r\n"), 404);
	st_expect_status(S("\n"), 404);
	st_expect_status(S("GET"), 404);
	st_expect_status(S("GET "), 404);
	st_expect_status(S("GET /"), 404);
	st_expect_status(S("G"), 404);
	st_expect_status(S("\x00\x01\x02\x03\xff\xfe\r\n\r\n"), 405);
	st_expect_status(S("GET \x00/metrics HTTP/1.0\r\n\r\n"), 404);
	st_expect_status(S("GET /metrics\x00 HTTP/1.0\r\n\r\n"), 404);
	st_expect_status(S("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), 405);
	st_expect_status(S("SSH-2.0-OpenSSH_9.6\r\n"), 405);

	memset(big, 'A', sizeof(big));
	st_expect_status(big, sizeof(big), 405);
	memcpy(big, "GET /", 5);
	st_expect_status(big, sizeof(big), 404);
	memcpy(big, "GET /metrics", 12);
	st_expect_status(big, sizeof(big), 404);

	for (i = 0; i < 2000; i++) {
		struct st_resp r;
		size_t n = i % sizeof(rnd);

		for (j = 0; j < n; j++) {
			seed = seed * 1103515245u + 12345u;
			rnd[j] = (unsigned char)(seed >> 16);
		}
		r = st_ask((const char *)rnd, n);
		assert_true(r.status >= 400 && r.status <= 499);
		st_free(&r);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_metrics_format),
		cmocka_unit_test(test_metrics_counters),
		cmocka_unit_test(test_metrics_label_escaping),
		cmocka_unit_test(test_metrics_long_backend_name),
		cmocka_unit_test(test_forward_identity),
		cmocka_unit_test(test_null_forward),
		cmocka_unit_test(test_result_names),
		cmocka_unit_test(test_health),
		cmocka_unit_test(test_routes),
		cmocka_unit_test(test_status_lines),
		cmocka_unit_test(test_garbage),
	};

	return cmocka_run_group_tests_name("stats", tests, NULL, NULL);
}
