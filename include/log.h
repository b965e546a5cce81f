/* log: one line per event, key=value text or one JSON object, to stderr
 * or syslog (facility mail). A line is built field by field and written
 * once; values are escaped so control bytes and quotes never reach the
 * log raw. */
#ifndef SMTPFWD_LOG_H
#define SMTPFWD_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define LOG_LINE_MAX 4096

struct log_line {
	char buf[LOG_LINE_MAX];
	size_t len;
	enum log_level level;
	bool json;
	bool active; /* false when the level is filtered out */
};

/* Until log_setup() runs: text to stderr at info. */
void log_setup(enum log_level level, enum log_format fmt, bool use_syslog);
bool log_enabled(enum log_level level);
const char *log_level_str(enum log_level level);

/* Build and emit one line: log_begin(), fields, log_end(). */
void log_begin(struct log_line *l, enum log_level level, const char *event);
void log_str(struct log_line *l, const char *key, const char *value);
void log_strn(struct log_line *l, const char *key, const char *value,
	      size_t n);
void log_uint(struct log_line *l, const char *key, unsigned long long v);
/* A duration in seconds, three decimals; a JSON number. */
void log_seconds(struct log_line *l, const char *key, double v);
void log_bool(struct log_line *l, const char *key, bool v);
void log_fmt(struct log_line *l, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void log_end(struct log_line *l);

/* One line per line of text (e.g. configuration diagnostics), as msg. */
void log_text_lines(enum log_level level, const char *event, const char *text);

/* A whole line with event and msg fields. */
void log_msg(enum log_level level, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Escape n bytes of src into dst (always NUL-terminated) as the inside of
 * a quoted text value (json=false) or a JSON string (json=true).
 * Returns the length written, stopping before a sequence that would not
 * fit. Pure; unit-tested. */
size_t log_escape(char *dst, size_t dstlen, const char *src, size_t n,
		  bool json);

/* True when a text value must be quoted (empty, space, quote, '=',
 * backslash, control or non-ASCII byte). */
bool log_needs_quotes(const char *src, size_t n);

#endif
