/* smtp: streaming scanners for the server greeting and the client's first
 * command. They look at bytes on their way through and keep a bounded
 * copy; they never decide what is forwarded. */
#include "smtp.h"

#include <string.h>

enum smtp_cmd_state {
	SMTP_CMD_VERB, /* reading the verb */
	SMTP_CMD_SPACE, /* spaces between verb and argument */
	SMTP_CMD_ARG, /* reading the first argument */
	SMTP_CMD_REST, /* nothing more to keep: only the line end matters */
};

#define SMTP_TEXT_MAX (SMTP_LINE_MAX - 1) /* room for the NUL */
#define SMTP_VERB_KEEP 7

static bool smtp_is_digit(char ch)
{
	return ch >= '0' && ch <= '9';
}

void smtp_reply_init(struct smtp_reply *r)
{
	memset(r, 0, sizeof(*r));
}

static void smtp_reply_append(struct smtp_reply *r, const char *p, size_t n)
{
	size_t room = SMTP_TEXT_MAX - r->len;

	if (r->cr_dropped && n > 0)
		r->truncated = true; /* that CR was not the CR of CRLF */
	r->cr_dropped = false;
	if (n > room) {
		/* A CR ending the piece is the CR of CRLF as a rule, which is
		 * dropped anyway: losing it alone is no truncation. */
		if (n != room + 1 || p[n - 1] != '\r')
			r->truncated = true;
		else
			r->cr_dropped = true;
		n = room;
	}
	memcpy(r->text + r->len, p, n);
	r->len = (uint16_t)(r->len + n);
	r->text[r->len] = '\0';
}

/* Takes n bytes of the current line, none of them LF. */
static void smtp_reply_take(struct smtp_reply *r, const char *p, size_t n)
{
	if (n == 0)
		return;
	if (r->line_pos < sizeof(r->head)) {
		size_t k = sizeof(r->head) - r->line_pos;

		memcpy(r->head + r->line_pos, p, n < k ? n : k);
	}
	/* A later line is joined with '\n' once it has something to show. */
	if (r->line_pos == 0 && r->scanned > 0)
		smtp_reply_append(r, "\n", 1);
	smtp_reply_append(r, p, n);
	r->line_pos = (uint16_t)(r->line_pos + n);
	r->scanned = (uint16_t)(r->scanned + n);
}

/* The LF of the current line has been seen (and counted in scanned). */
static void smtp_reply_end_line(struct smtp_reply *r)
{
	size_t l = r->line_pos; /* bytes before the LF */
	bool first = r->scanned == l + 1;
	bool digits, ok;
	char sep;
	uint16_t code = 0;

	r->cr_dropped = false; /* it was the CR of CRLF */

	/* The CR of CRLF is the last byte kept. Once text is truncated this
	 * may drop a stray CR from mid-line instead: harmless for a log. */
	if (l > 0 && r->len > 0 && r->text[r->len - 1] == '\r')
		r->text[--r->len] = '\0';

	digits = l >= 3 && smtp_is_digit(r->head[0]) &&
		 smtp_is_digit(r->head[1]) && smtp_is_digit(r->head[2]);
	sep = l >= 4 ? r->head[3] : '\0';
	/* "ddd text", "ddd-text", or a bare "ddd" (with or without CR) */
	ok = digits && (l == 3 || sep == ' ' || sep == '-' ||
			(sep == '\r' && l == 4));
	if (ok)
		code = (uint16_t)((r->head[0] - '0') * 100 +
				  (r->head[1] - '0') * 10 + (r->head[2] - '0'));
	if (ok && !first && code != r->code)
		ok = false;

	r->line_pos = 0;
	memset(r->head, 0, sizeof(r->head));
	if (!ok) {
		/* Not a reply we understand: stop following it. */
		r->malformed = true;
		r->code = 0;
		r->done = true;
		return;
	}
	r->code = code;
	if (sep != '-')
		r->done = true;
}

/* The scan limit passed inside a line: a reply that long is not worth
 * following further, but a line that starts like a reply still tells
 * its code (an over-long "220 ..." greeting is a 220). */
static void smtp_reply_cut(struct smtp_reply *r)
{
	bool first = r->scanned == r->line_pos;
	uint16_t code;

	r->done = true;
	r->truncated = true;
	if (r->line_pos < 4 || !smtp_is_digit(r->head[0]) ||
	    !smtp_is_digit(r->head[1]) || !smtp_is_digit(r->head[2]) ||
	    (r->head[3] != ' ' && r->head[3] != '-'))
		return;
	code = (uint16_t)((r->head[0] - '0') * 100 + (r->head[1] - '0') * 10 +
			  (r->head[2] - '0'));
	if (first || code == r->code)
		r->code = code;
}

size_t smtp_reply_feed(struct smtp_reply *r, const char *data, size_t n)
{
	size_t used = 0;

	while (used < n && !r->done) {
		const char *p = data + used;
		size_t avail = n - used;
		size_t budget = SMTP_REPLY_SCAN_MAX - r->scanned;
		const char *lf;
		size_t seg;

		if (avail > budget)
			avail = budget;
		lf = memchr(p, '\n', avail);
		seg = lf != NULL ? (size_t)(lf - p) : avail;
		smtp_reply_take(r, p, seg);
		used += seg;
		if (lf != NULL) {
			used++;
			r->scanned++;
			smtp_reply_end_line(r);
		}
		if (r->scanned >= SMTP_REPLY_SCAN_MAX && !r->done)
			smtp_reply_cut(r);
	}
	return used;
}

void smtp_cmd_init(struct smtp_cmd *c)
{
	memset(c, 0, sizeof(*c));
	c->state = SMTP_CMD_VERB;
}

static bool smtp_cmd_is_sep(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r';
}

static void smtp_cmd_end_verb(struct smtp_cmd *c)
{
	c->is_helo = c->verb_len == 4 && (memcmp(c->verb, "EHLO", 4) == 0 ||
					  memcmp(c->verb, "HELO", 4) == 0);
}

static void smtp_cmd_arg_byte(struct smtp_cmd *c, char ch)
{
	if (smtp_cmd_is_sep(ch)) {
		c->state = SMTP_CMD_REST;
		return;
	}
	if (c->arg_len == SMTP_DOMAIN_MAX) {
		c->truncated = true;
		c->state = SMTP_CMD_REST;
		return;
	}
	c->arg[c->arg_len++] = ch;
	c->arg[c->arg_len] = '\0';
}

/* Walks the bytes of the line before its LF; stops as soon as nothing
 * more is worth keeping, so a long line costs one memchr. */
static void smtp_cmd_scan(struct smtp_cmd *c, const char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n && c->state != SMTP_CMD_REST; i++) {
		char ch = p[i];

		switch (c->state) {
		case SMTP_CMD_VERB:
			if (smtp_cmd_is_sep(ch)) {
				smtp_cmd_end_verb(c);
				c->state = ch == '\r' ? SMTP_CMD_REST :
							SMTP_CMD_SPACE;
				break;
			}
			if (c->verb_len < SMTP_VERB_KEEP)
				c->verb[c->verb_len] = (ch >= 'a' && ch <= 'z') ?
							       (char)(ch - 'a' + 'A') :
							       ch;
			/* counts on past what is kept, so "EHLOX" is no EHLO */
			if (c->verb_len < UINT8_MAX)
				c->verb_len++;
			break;
		case SMTP_CMD_SPACE:
			if (ch == ' ' || ch == '\t')
				break;
			c->state = SMTP_CMD_ARG;
			smtp_cmd_arg_byte(c, ch);
			break;
		case SMTP_CMD_ARG:
			smtp_cmd_arg_byte(c, ch);
			break;
		default:
			break;
		}
	}
}

size_t smtp_cmd_feed(struct smtp_cmd *c, const char *data, size_t n)
{
	size_t avail, seg, used;
	const char *lf;

	if (c->done || n == 0)
		return 0;
	avail = SMTP_LINE_MAX - c->line_pos;
	if (avail > n)
		avail = n;
	lf = memchr(data, '\n', avail);
	seg = lf != NULL ? (size_t)(lf - data) : avail;
	smtp_cmd_scan(c, data, seg);
	used = lf != NULL ? seg + 1 : seg;
	c->line_pos = (uint16_t)(c->line_pos + used);
	if (lf != NULL || c->line_pos >= SMTP_LINE_MAX) {
		if (c->state == SMTP_CMD_VERB)
			smtp_cmd_end_verb(c);
		c->state = SMTP_CMD_REST;
		c->done = true;
	}
	return used;
}
