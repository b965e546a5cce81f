/* starttls: see the header for what and why. Lines are collected in
 * fixed buffers; nothing here allocates. */
#include "starttls.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

static const char starttls_ready[] = "220 2.0.0 Ready to start TLS\r\n";
static const char starttls_must[] =
	"530 5.7.0 Must issue a STARTTLS command first\r\n";
static const char starttls_again[] = "554 5.5.1 Error: TLS already active\r\n";
static const char starttls_too_long[] = "500 5.5.2 Error: line too long\r\n";
static const char starttls_syntax[] = "501 5.5.4 Syntax: STARTTLS\r\n";

const char *starttls_phase_str(enum starttls_phase p)
{
	switch (p) {
	case STARTTLS_GREETING:
		return "greeting";
	case STARTTLS_COMMAND:
		return "command";
	case STARTTLS_REPLY:
		return "reply";
	case STARTTLS_HANDSHAKE:
		return "handshake";
	case STARTTLS_RELAY:
		return "relay";
	}
	return "?";
}

void starttls_init(struct starttls *st, bool required)
{
	memset(st, 0, sizeof(*st));
	st->required = required;
	st->phase = STARTTLS_GREETING;
	st->first_line = true;
}

void starttls_tls_done(struct starttls *st)
{
	st->tls_active = true;
	st->phase = STARTTLS_COMMAND;
	st->clen = 0;
	st->client_long = false;
}

static int starttls_put(struct buffer *out, const char *s, size_t n)
{
	return buffer_append(out, s, n);
}

static int starttls_puts(struct buffer *out, const char *s)
{
	return starttls_put(out, s, strlen(s));
}

/* ---- client side ---- */

/* What a backend's tokenizer skips between words: Postfix splits on any
 * isspace() byte and ignores leading ones, so " MAIL" or "\rMAIL" or
 * "MAIL\vFROM:" is MAIL to it and must be MAIL to us too. */
static bool starttls_is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r';
}

/* The command verb of line (without CRLF), upper-cased into verb. */
static void starttls_verb(const char *line, size_t n, char *verb, size_t len,
			  bool *has_arg)
{
	size_t i = 0;
	size_t v = 0;

	while (i < n && starttls_is_space(line[i]))
		i++;
	while (i < n && v + 1 < len && !starttls_is_space(line[i])) {
		verb[v++] = (char)toupper((unsigned char)line[i]);
		i++;
	}
	verb[v] = '\0';
	if (i < n && !starttls_is_space(line[i]))
		verb[0] = '\0'; /* longer than any verb we know */
	while (i < n && starttls_is_space(line[i]))
		i++;
	*has_arg = i < n;
}

static bool starttls_is_mail_verb(const char *verb)
{
	static const char *const verbs[] = { "MAIL", "RCPT", "DATA", "AUTH",
					     "BDAT" };
	size_t i;

	for (i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (strcmp(verb, verbs[i]) == 0)
			return true;
	return false;
}

/* One complete client line (with its line end). */
static int starttls_command(struct starttls *st, const char *line, size_t n,
			    struct buffer *to_backend, struct buffer *to_client)
{
	size_t body = n;
	char verb[16];
	bool has_arg;

	while (body > 0 && (line[body - 1] == '\n' || line[body - 1] == '\r'))
		body--;
	starttls_verb(line, body, verb, sizeof(verb), &has_arg);

	if (strcmp(verb, "STARTTLS") == 0) {
		if (st->tls_active)
			return starttls_puts(to_client, starttls_again);
		if (has_arg)
			return starttls_puts(to_client, starttls_syntax);
		st->phase = STARTTLS_HANDSHAKE;
		return starttls_puts(to_client, starttls_ready);
	}
	if (!st->tls_active && st->required && starttls_is_mail_verb(verb))
		return starttls_puts(to_client, starttls_must);

	if (starttls_put(to_backend, line, n) == -1)
		return -1;
	st->ehlo = strcmp(verb, "EHLO") == 0;
	st->first_line = true;
	st->have_held = false;
	st->blen = 0;
	if (starttls_is_mail_verb(verb) || strcmp(verb, "QUIT") == 0) {
		/* A mail transaction (in plaintext, or over TLS) or the end:
		 * no EHLO reply is left to clean. Nothing more to look at.
		 * (NOOP, RSET... after TLS keep us watching, so a later EHLO
		 * still loses the backend's STARTTLS.) */
		st->phase = STARTTLS_RELAY;
		return 0;
	}
	st->phase = STARTTLS_REPLY;
	return 0;
}

long starttls_client(struct starttls *st, const char *data, size_t n,
		     struct buffer *to_backend, struct buffer *to_client)
{
	size_t used = 0;

	if (st->phase == STARTTLS_HANDSHAKE)
		return (long)n; /* pipelined after STARTTLS: never executed */
	while (used < n && st->phase == STARTTLS_COMMAND) {
		const char *p = data + used;
		const char *lf = memchr(p, '\n', n - used);
		size_t take = lf != NULL ? (size_t)(lf - p) + 1 : n - used;

		if (st->client_long) {
			/* Rest of a line we refused: drop through its end. */
			used += take;
			if (lf != NULL)
				st->client_long = false;
			continue;
		}
		if (st->clen + take > sizeof(st->cline)) {
			used += take;
			st->clen = 0;
			st->client_long = lf == NULL;
			if (starttls_puts(to_client, starttls_too_long) == -1)
				return -1;
			continue;
		}
		memcpy(st->cline + st->clen, p, take);
		st->clen += take;
		used += take;
		if (lf == NULL)
			break;
		/* The line is taken even if its answer does not fit, so a
		 * caller that carries on never sees it glued to the next. */
		take = st->clen;
		st->clen = 0;
		if (starttls_command(st, st->cline, take, to_backend,
				     to_client) == -1)
			return -1;
		if (st->phase == STARTTLS_HANDSHAKE)
			return (long)n; /* the rest is discarded */
	}
	return (long)used;
}

/* ---- backend side ---- */

/* "250-SIZE 100" -> code 250, sep '-', keyword points at "SIZE 100". */
static bool starttls_reply_line(const char *line, size_t n, char *sep)
{
	if (n < 3 || !isdigit((unsigned char)line[0]) ||
	    !isdigit((unsigned char)line[1]) || !isdigit((unsigned char)line[2]))
		return false;
	if (n == 3 || line[3] == '\r' || line[3] == '\n') {
		*sep = ' ';
		return true;
	}
	if (line[3] != ' ' && line[3] != '-')
		return false;
	*sep = line[3];
	return true;
}

/* Whether a reply line advertises STARTTLS: its keyword (the first word
 * after the code, as clients parse it) is STARTTLS, parameters or not. */
static bool starttls_is_starttls_ext(const char *line, size_t n)
{
	size_t end = 4;

	while (end < n && line[end] != ' ' && line[end] != '\t' &&
	       line[end] != '\r' && line[end] != '\n')
		end++;
	return n >= 4 && end - 4 == 8 &&
	       strncasecmp(line + 4, "STARTTLS", 8) == 0;
}

/* Send line (with any line end) with its separator set to sep. */
static int starttls_emit(struct buffer *out, const char *line, size_t n,
			 char sep)
{
	size_t body = n;

	while (body > 0 && (line[body - 1] == '\n' || line[body - 1] == '\r'))
		body--;
	/* A bare "250" has no text after the code. */
	if (starttls_put(out, line, 3) == -1 || starttls_put(out, &sep, 1) == -1 ||
	    (body > 4 && starttls_put(out, line + 4, body - 4) == -1) ||
	    starttls_puts(out, "\r\n") == -1)
		return -1;
	return 0;
}
/* "250 \r\n": a reply line with no text. */
static bool starttls_is_empty(const char *line, size_t n)
{
	size_t i;

	for (i = 3; i < n; i++)
		if (line[i] != ' ' && line[i] != '-' && line[i] != '\r' &&
		    line[i] != '\n')
			return false;
	return true;
}

/* The reply is complete. */
static void starttls_reply_done(struct starttls *st)
{
	/* Even after TLS the dialogue is watched until a mail command: a
	 * second STARTTLS must be ours to refuse, and every EHLO reply
	 * must lose the backend's STARTTLS. */
	st->phase = STARTTLS_COMMAND;
	st->first_line = true;
	st->have_held = false;
}

/* An EHLO reply line: hold one line back so the last one can be turned
 * into a continuation when STARTTLS is appended. */
static int starttls_ehlo_line(struct starttls *st, const char *line, size_t n,
			      char sep, struct buffer *out)
{
	bool first = st->first_line;

	st->first_line = false;
	if (!first && starttls_is_starttls_ext(line, n)) {
		if (sep == '-')
			return 0; /* the backend's own: dropped */
		line = NULL; /* dropped, but it ended the reply */
	} else {
		if (st->have_held &&
		    starttls_emit(out, st->held, st->hlen, '-') == -1)
			return -1;
		memcpy(st->held, line, n);
		st->hlen = n;
		st->have_held = true;
		st->held_first = first;
		if (sep == '-')
			return 0;
	}
	/* Final line: add ours before TLS when the EHLO succeeded (in
	 * place of an empty final "250 ", as some servers send). */
	if (!st->tls_active && strncmp(st->held, "250", 3) == 0) {
		if (((!starttls_is_empty(st->held, st->hlen) || st->held_first) &&
		     starttls_emit(out, st->held, st->hlen, '-') == -1) ||
		    starttls_puts(out, "250 STARTTLS\r\n") == -1)
			return -1;
	} else if (starttls_emit(out, st->held, st->hlen, ' ') == -1) {
		return -1;
	}
	starttls_reply_done(st);
	return 0;
}

/* The backend stopped speaking SMTP: send the line still held back (as
 * the backend wrote it) and relay blindly from here. */
static int starttls_give_up(struct starttls *st, struct buffer *out)
{
	if (st->have_held && starttls_put(out, st->held, st->hlen) == -1)
		return -1;
	st->have_held = false;
	st->phase = STARTTLS_RELAY;
	return 0;
}

/* One complete backend line. */
static int starttls_backend_line(struct starttls *st, const char *line,
				 size_t n, struct buffer *out)
{
	char sep;

	if (!starttls_reply_line(line, n, &sep)) {
		/* Not SMTP: pass it on and stop interpreting. */
		if (starttls_give_up(st, out) == -1)
			return -1;
		return starttls_put(out, line, n);
	}
	if (st->phase == STARTTLS_REPLY && st->ehlo)
		return starttls_ehlo_line(st, line, n, sep, out);
	if (starttls_put(out, line, n) == -1)
		return -1;
	if (sep == ' ') {
		/* A greeting other than 220 has nothing to offload. */
		if (st->phase == STARTTLS_GREETING && strncmp(line, "220", 3) != 0)
			st->phase = STARTTLS_RELAY;
		else
			starttls_reply_done(st);
	}
	return 0;
}

long starttls_backend(struct starttls *st, const char *data, size_t n,
		      struct buffer *to_client)
{
	size_t used = 0;

	while (used < n && st->phase != STARTTLS_RELAY) {
		const char *p = data + used;
		const char *lf;
		size_t take;

		if (st->phase == STARTTLS_HANDSHAKE ||
		    st->phase == STARTTLS_COMMAND) {
			/* Nobody asked: drop it all, however long its lines,
			 * so it cannot pose as an answer (inside TLS, too).
			 * Like the bytes, a cut-off line is not remembered. */
			st->dropped += (unsigned)(n - used);
			st->blen = 0;
			used = n;
			break;
		}
		lf = memchr(p, '\n', n - used);
		take = lf != NULL ? (size_t)(lf - p) + 1 : n - used;
		if (st->blen + take > sizeof(st->bline)) {
			/* Too long to be SMTP: forward as is, stop looking. */
			if (starttls_give_up(st, to_client) == -1 ||
			    starttls_put(to_client, st->bline, st->blen) == -1 ||
			    starttls_put(to_client, p, take) == -1)
				return -1;
			used += take;
			st->blen = 0;
			continue;
		}
		memcpy(st->bline + st->blen, p, take);
		st->blen += take;
		used += take;
		if (lf == NULL)
			break;
		take = st->blen; /* taken even if it does not fit, as above */
		st->blen = 0;
		if (starttls_backend_line(st, st->bline, take, to_client) == -1)
			return -1;
	}
	return (long)used;
}
