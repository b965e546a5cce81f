/* log: key=value or JSON lines to stderr or syslog. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static enum log_level log_threshold = LOG_LVL_INFO;
static enum log_format log_fmt_cur = LOG_FMT_TEXT;
static bool log_to_syslog;

static const char *const log_level_names[] = {
	[LOG_LVL_ERROR] = "error",
	[LOG_LVL_WARN] = "warn",
	[LOG_LVL_INFO] = "info",
	[LOG_LVL_DEBUG] = "debug",
};

void log_setup(enum log_level level, enum log_format fmt, bool use_syslog)
{
	log_threshold = level;
	log_fmt_cur = fmt;
	if (use_syslog && !log_to_syslog)
		openlog("smtpfwd", LOG_PID | LOG_NDELAY, LOG_MAIL);
	else if (!use_syslog && log_to_syslog)
		closelog();
	log_to_syslog = use_syslog;
}

bool log_enabled(enum log_level level)
{
	return level <= log_threshold;
}

const char *log_level_str(enum log_level level)
{
	return log_level_names[level];
}

bool log_needs_quotes(const char *src, size_t n)
{
	if (n == 0)
		return true;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)src[i];

		if (c <= ' ' || c >= 0x7f || c == '"' || c == '=' || c == '\\')
			return true;
	}
	return false;
}

size_t log_escape(char *dst, size_t dstlen, const char *src, size_t n,
		  bool json)
{
	size_t o = 0;

	if (dstlen == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)src[i];
		char esc[8];
		size_t elen;

		switch (c) {
		case '"': memcpy(esc, "\\\"", 2); elen = 2; break;
		case '\\': memcpy(esc, "\\\\", 2); elen = 2; break;
		case '\n': memcpy(esc, "\\n", 2); elen = 2; break;
		case '\r': memcpy(esc, "\\r", 2); elen = 2; break;
		case '\t': memcpy(esc, "\\t", 2); elen = 2; break;
		default:
			if (c < 0x20 || c >= 0x7f) {
				/* JSON strings must be valid UTF-8: bytes from
				 * the wire are shown as code points U+0000-00FF. */
				elen = (size_t)snprintf(esc, sizeof(esc),
							json ? "\\u%04x" : "\\x%02x", c);
			} else {
				esc[0] = (char)c;
				elen = 1;
			}
		}
		if (o + elen >= dstlen)
			break;
		memcpy(dst + o, esc, elen);
		o += elen;
	}
	dst[o] = '\0';
	return o;
}

/* Bytes a field may still use: the buffer less the NUL (where the text
 * line's '\n' goes) and, for JSON, the closing '}'. */
static size_t log_room(const struct log_line *l)
{
	size_t reserve = 1 + (l->json ? 1 : 0);

	return l->len + reserve < sizeof(l->buf) ?
		       sizeof(l->buf) - reserve - l->len :
		       0;
}

/* Callers check log_room() first. */
static void log_put(struct log_line *l, const char *s, size_t n)
{
	memcpy(l->buf + l->len, s, n);
	l->len += n;
	l->buf[l->len] = '\0';
}

/* Start a field whose value needs `need` more bytes. A field that does
 * not fit is left out whole, so a full line still parses (no dangling
 * key, no cut number, JSON stays valid). */
static bool log_key(struct log_line *l, const char *key, size_t need)
{
	size_t klen = strlen(key);
	bool first = l->len <= (l->json ? 1 : 0); /* nothing but "{" yet */
	size_t total = (first ? 0 : 1) /* ',' or ' ' */ + klen + (l->json ? 3 : 1) + need;

	if (total > log_room(l))
		return false;
	if (!first)
		log_put(l, l->json ? "," : " ", 1);
	if (l->json) {
		log_put(l, "\"", 1);
		log_put(l, key, klen);
		log_put(l, "\":", 2);
	} else {
		log_put(l, key, klen);
		log_put(l, "=", 1);
	}
	return true;
}

/* A string value, quoted and escaped when it needs to be; cut short
 * (between escape sequences) when the line is full. */
static void log_value(struct log_line *l, const char *key, const char *v,
		      size_t n)
{
	bool quote = l->json || log_needs_quotes(v, n);
	size_t room;

	if (!log_key(l, key, quote ? 2 : 1))
		return;
	if (quote)
		log_put(l, "\"", 1);
	/* log_escape's dstlen counts its NUL; keep a byte for the quote. */
	room = log_room(l) - (quote ? 1 : 0) + 1;
	l->len += log_escape(l->buf + l->len, room, v, n, l->json);
	if (quote)
		log_put(l, "\"", 1);
}

void log_begin(struct log_line *l, enum log_level level, const char *event)
{
	l->len = 0;
	l->buf[0] = '\0';
	l->level = level;
	l->json = log_fmt_cur == LOG_FMT_JSON;
	l->active = log_enabled(level);
	if (!l->active)
		return;
	if (l->json)
		log_put(l, "{", 1);
	if (!log_to_syslog) {
		struct timeval tv;
		struct tm tm;
		char ts[96];

		gettimeofday(&tv, NULL);
		gmtime_r(&tv.tv_sec, &tm);
		snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			 tm.tm_hour, tm.tm_min, tm.tm_sec,
			 (int)(tv.tv_usec / 1000));
		if (l->json)
			log_str(l, "ts", ts);
		else
			log_put(l, ts, strlen(ts));
	}
	log_str(l, "level", log_level_names[level]);
	log_str(l, "event", event);
}

void log_strn(struct log_line *l, const char *key, const char *value, size_t n)
{
	if (!l->active)
		return;
	log_value(l, key, value, n);
}

void log_str(struct log_line *l, const char *key, const char *value)
{
	if (!l->active)
		return;
	if (value == NULL)
		value = "-";
	log_strn(l, key, value, strlen(value));
}

void log_uint(struct log_line *l, const char *key, unsigned long long v)
{
	char num[24];
	int n;

	if (!l->active)
		return;
	n = snprintf(num, sizeof(num), "%llu", v);
	if (log_key(l, key, (size_t)n))
		log_put(l, num, (size_t)n);
}

void log_seconds(struct log_line *l, const char *key, double v)
{
	char num[32];
	int n;

	if (!l->active)
		return;
	/* A plain decimal is a number in both formats. */
	n = snprintf(num, sizeof(num), "%.3f", v);
	if (n > 0 && (size_t)n < sizeof(num) && log_key(l, key, (size_t)n))
		log_put(l, num, (size_t)n);
}

void log_bool(struct log_line *l, const char *key, bool v)
{
	const char *word = l->json ? (v ? "true" : "false") : (v ? "yes" : "no");

	if (l->active && log_key(l, key, strlen(word)))
		log_put(l, word, strlen(word));
}

void log_fmt(struct log_line *l, const char *key, const char *fmt, ...)
{
	char tmp[LOG_LINE_MAX / 2];
	va_list ap;
	int n;

	if (!l->active)
		return;
	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(tmp))
		n = sizeof(tmp) - 1;
	log_strn(l, key, tmp, (size_t)n);
}

void log_end(struct log_line *l)
{
	static const int prio[] = {
		[LOG_LVL_ERROR] = LOG_ERR,
		[LOG_LVL_WARN] = LOG_WARNING,
		[LOG_LVL_INFO] = LOG_INFO,
		[LOG_LVL_DEBUG] = LOG_DEBUG,
	};

	if (!l->active)
		return;
	if (l->json) {
		/* log_room() always kept a byte for it. */
		l->buf[l->len++] = '}';
		l->buf[l->len] = '\0';
	}
	if (log_to_syslog) {
		syslog(prio[l->level], "%s", l->buf);
		return;
	}
	/* One write(2) per line, so lines from workers never interleave. */
	l->buf[l->len] = '\n';
	(void)!write(STDERR_FILENO, l->buf, l->len + 1);
	l->buf[l->len] = '\0';
}

void log_msg(enum log_level level, const char *event, const char *fmt, ...)
{
	struct log_line l;
	char tmp[LOG_LINE_MAX / 2];
	va_list ap;
	int n;

	if (!log_enabled(level))
		return;
	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(tmp))
		n = sizeof(tmp) - 1;
	log_begin(&l, level, event);
	log_strn(&l, "msg", tmp, (size_t)n);
	log_end(&l);
}

void log_text_lines(enum log_level level, const char *event, const char *text)
{
	const char *p = text, *nl;

	while (p != NULL && *p != '\0') {
		nl = strchr(p, '\n');
		log_msg(level, event, "%.*s",
			(int)(nl != NULL ? nl - p : (long)strlen(p)), p);
		p = nl != NULL ? nl + 1 : NULL;
	}
}
