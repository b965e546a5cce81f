/* fuzz_stats: the request line of the metrics endpoint. The input is the
 * request head as read from the socket; stats_response() must answer it
 * with a well-formed HTTP/1.0 response whose Content-Length is right,
 * the status the request line asks for, and (for /metrics) Prometheus
 * text whose label values are escaped, whatever the forward and backend
 * names hold. The counters are set up once, with awkward names. */
#include <stdbool.h>

#include "fuzz.h"
#include "stats.h"

static struct stats_fwd *fstats_fwd[2];

static void fstats_init(void)
{
	if (fstats_fwd[0] != NULL)
		return;
	fstats_fwd[0] = stats_forward("smtp");
	fstats_fwd[1] = stats_forward("we\"ird\\name\nline");
	fuzz_check(fstats_fwd[0] != NULL && fstats_fwd[1] != NULL, "stats_forward");
	stats_session_open(fstats_fwd[0]);
	stats_session_close(fstats_fwd[0], STATS_FORWARDED, 100, 2000, true,
			    false);
	stats_backend_result(fstats_fwd[0], "127.0.0.1:25", true);
	stats_backend_result(fstats_fwd[1], "mx\"1\\.lan:25", false);
	stats_set_current(fstats_fwd, 2);
}

/* "# ..." or name{label="value",...} number, values escaped. */
static void fstats_check_metric(const char *l, size_t n)
{
	size_t i = 0;

	if (n > 0 && l[0] == '#')
		return;
	while (i < n && ((l[i] >= 'a' && l[i] <= 'z') || l[i] == '_'))
		i++;
	fuzz_check(i > 0 && i < n, "metric name: %.*s", (int)n, l);
	if (l[i] == '{') {
		i++;
		for (;;) {
			while (i < n && l[i] >= 'a' && l[i] <= 'z')
				i++;
			fuzz_check(i + 1 < n && l[i] == '=' && l[i + 1] == '"',
				   "label: %.*s", (int)n, l);
			i += 2;
			while (i < n && l[i] != '"') {
				if (l[i] == '\\') {
					fuzz_check(i + 1 < n && (l[i + 1] == '\\' ||
								 l[i + 1] == '"' ||
								 l[i + 1] == 'n'),
						   "escape: %.*s", (int)n, l);
					i++;
				}
				i++;
			}
			fuzz_check(i < n, "unterminated label: %.*s", (int)n, l);
			i++;
			if (i < n && l[i] == ',') {
				i++;
				continue;
			}
			fuzz_check(i < n && l[i] == '}', "labels: %.*s", (int)n, l);
			i++;
			break;
		}
	}
	fuzz_check(i < n && l[i] == ' ', "value: %.*s", (int)n, l);
	for (i++; i < n; i++)
		fuzz_check(l[i] >= '0' && l[i] <= '9', "value: %.*s", (int)n, l);
}

/* The status the request line asks for. */
static int fstats_want(const char *req, size_t n, bool *either)
{
	const char *eol = memchr(req, '\n', n);
	size_t line = eol ? (size_t)(eol - req) : n;

	*either = false;
	if (line > 0 && req[line - 1] == '\r')
		line--;
	if (line >= 4 && memcmp(req, "GET ", 4) == 0) {
		if (line >= 12 && memcmp(req, "GET /metrics", 12) == 0 &&
		    (line == 12 || req[12] == ' '))
			return 200;
		if (line >= 11 && memcmp(req, "GET /health", 11) == 0 &&
		    (line == 11 || req[11] == ' '))
			return 503; /* one forward is failing */
		return 404;
	}
	/* Too short to hold a method and a path: not found will do too. */
	*either = line <= 4;
	return 405;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *req = malloc(size ? size : 1); /* exact size: ASan sees overreads */
	char *resp, *body;
	size_t len = 0, clen;
	int status, want;
	bool either;
	char *end;

	fuzz_check(req != NULL, "malloc");
	if (size > 0)
		memcpy(req, data, size);
	fstats_init();
	resp = stats_response(req, size, &len);
	fuzz_check(resp != NULL, "no response");
	fuzz_check(len > 17 && memcmp(resp, "HTTP/1.0 ", 9) == 0,
		   "status line: %.*s", (int)(len < 40 ? len : 40), resp);
	status = (int)strtol(resp + 9, &end, 10);
	fuzz_check(end == resp + 12 && *end == ' ', "status code");
	want = fstats_want(req, size, &either);
	fuzz_check(status == want || (either && status == 404),
		   "status %d, want %d", status, want);

	body = memmem(resp, len, "\r\n\r\n", 4);
	fuzz_check(body != NULL, "no end of head");
	body += 4;
	{
		const char *cl = memmem(resp, (size_t)(body - resp),
					"\r\nContent-Length: ", 18);

		fuzz_check(cl != NULL, "no Content-Length");
		clen = strtoul(cl + 18, &end, 10);
		fuzz_check(*end == '\r', "Content-Length value");
		fuzz_check(clen == len - (size_t)(body - resp),
			   "Content-Length %zu, body %zu", clen,
			   len - (size_t)(body - resp));
	}
	if (status == 200) {
		for (char *p = body; p < resp + len;) {
			char *nl = memchr(p, '\n', (size_t)(resp + len - p));

			fuzz_check(nl != NULL, "metrics line without a newline");
			fstats_check_metric(p, (size_t)(nl - p));
			p = nl + 1;
		}
	}
	free(resp);
	free(req);
	return 0;
}
