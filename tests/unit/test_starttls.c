/* Unit tests for starttls: the plaintext dialogue of a tls=starttls
 * forward. A small session model feeds client and backend bytes the way
 * the session does (client bytes not consumed are fed again once the
 * reply is in; in RELAY everything passes untouched) and records exactly
 * what each side would see. Every dialogue is also replayed with each
 * input cut at every byte position, and byte by byte, and must come out
 * identical. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "starttls.h"

#define READY "220 2.0.0 Ready to start TLS\r\n"
#define MUST "530 5.7.0 Must issue a STARTTLS command first\r\n"
#define AGAIN "554 5.5.1 Error: TLS already active\r\n"
#define TOO_LONG "500 5.5.2 Error: line too long\r\n"
#define SYNTAX "501 5.5.4 Syntax: STARTTLS\r\n"

#define SIM_MAX 65536

/* One session as the session module drives the state machine. */
struct sim {
	struct starttls st;
	struct buffer to_backend;
	struct buffer to_client;
	char pend[SIM_MAX]; /* client bytes not consumed yet */
	size_t plen;
	char cli[SIM_MAX]; /* everything the client received */
	size_t clen;
	char be[SIM_MAX]; /* everything the backend received */
	size_t belen;
};

static void sim_add(char *dst, size_t *len, const char *p, size_t n)
{
	if (*len + n >= SIM_MAX)
		fail_msg("transcript overflow");
	memcpy(dst + *len, p, n);
	*len += n;
	dst[*len] = '\0';
}

/* Move what the state machine queued into the transcripts. */
static void sim_drain(struct sim *s)
{
	size_t n;
	const char *p;

	p = buffer_read_ptr(&s->to_client, &n);
	if (p != NULL)
		sim_add(s->cli, &s->clen, p, n);
	buffer_release(&s->to_client);
	p = buffer_read_ptr(&s->to_backend, &n);
	if (p != NULL)
		sim_add(s->be, &s->belen, p, n);
	buffer_release(&s->to_backend);
}

static struct sim *sim_new(bool required)
{
	struct sim *s = calloc(1, sizeof(*s));

	assert_non_null(s);
	starttls_init(&s->st, required);
	return s;
}

static void sim_free(struct sim *s)
{
	buffer_release(&s->to_client);
	buffer_release(&s->to_backend);
	free(s);
}

/* Offer the pending client bytes until the machine stops taking them. */
static void sim_pump(struct sim *s)
{
	while (s->plen > 0) {
		long r;

		if (s->st.phase == STARTTLS_RELAY) {
			sim_add(s->be, &s->belen, s->pend, s->plen);
			s->plen = 0;
			break;
		}
		r = starttls_client(&s->st, s->pend, s->plen, &s->to_backend,
				    &s->to_client);
		assert_true(r >= 0 && (size_t)r <= s->plen);
		sim_drain(s);
		memmove(s->pend, s->pend + r, s->plen - (size_t)r);
		s->plen -= (size_t)r;
		if (r == 0)
			break;
	}
}

static void sim_client(struct sim *s, const char *data, size_t n)
{
	if (s->plen + n > sizeof(s->pend))
		fail_msg("pending overflow");
	memcpy(s->pend + s->plen, data, n);
	s->plen += n;
	sim_pump(s);
}

static void sim_backend(struct sim *s, const char *data, size_t n)
{
	long r = 0;

	if (s->st.phase != STARTTLS_RELAY) {
		r = starttls_backend(&s->st, data, n, &s->to_client);
		assert_true(r >= 0 && (size_t)r <= n);
		sim_drain(s);
		/* Anything left over is only allowed once relaying. */
		if ((size_t)r < n)
			assert_int_equal(s->st.phase, STARTTLS_RELAY);
	}
	sim_add(s->cli, &s->clen, data + r, n - (size_t)r);
	sim_pump(s);
}

static void sim_tls_done(struct sim *s)
{
	assert_int_equal(s->st.phase, STARTTLS_HANDSHAKE);
	starttls_tls_done(&s->st);
	sim_pump(s);
}

static void sim_c(struct sim *s, const char *text)
{
	sim_client(s, text, strlen(text));
}

static void sim_b(struct sim *s, const char *text)
{
	sim_backend(s, text, strlen(text));
}

/* A session that got the greeting and is waiting for a command. */
static struct sim *sim_ready(bool required)
{
	struct sim *s = sim_new(required);

	sim_b(s, "220 mx.example.net ESMTP\r\n");
	assert_int_equal(s->st.phase, STARTTLS_COMMAND);
	s->clen = 0;
	s->cli[0] = '\0';
	return s;
}

/* A session whose EHLO reply went through and whose client said
 * STARTTLS: the handshake is next. Transcripts are cleared. */
static struct sim *sim_handshake(bool required)
{
	struct sim *s = sim_ready(required);

	sim_c(s, "EHLO client.example\r\n");
	sim_b(s, "250-mx.example.net\r\n250 PIPELINING\r\n");
	sim_c(s, "STARTTLS\r\n");
	assert_int_equal(s->st.phase, STARTTLS_HANDSHAKE);
	assert_string_equal(s->cli, "250-mx.example.net\r\n250-PIPELINING\r\n"
				    "250 STARTTLS\r\n" READY);
	s->clen = s->belen = 0;
	s->cli[0] = s->be[0] = '\0';
	return s;
}

/* Lines of text whose EHLO keyword (after "250-"/"250 ") is STARTTLS. */
static unsigned count_starttls(const char *text)
{
	unsigned count = 0;
	const char *p = text;

	while (*p != '\0') {
		const char *eol = strchr(p, '\n');
		size_t len = eol != NULL ? (size_t)(eol - p) + 1 : strlen(p);

		if (len >= 12 && strncasecmp(p + 4, "STARTTLS", 8) == 0 &&
		    (p[12] == ' ' || p[12] == '\r' || p[12] == '\n'))
			count++;
		p += len;
	}
	return count;
}

/* A well-formed multi-line reply: every line "ddd-" but the last "ddd ",
 * one code, CRLF endings. */
static void assert_one_reply(const char *text)
{
	const char *p = text;

	assert_true(strlen(text) >= 6);
	while (*p != '\0') {
		const char *eol = strstr(p, "\r\n");

		assert_non_null(eol);
		assert_true(eol - p >= 4);
		assert_memory_equal(p, text, 3);
		assert_int_equal(p[3], eol[2] == '\0' ? ' ' : '-');
		assert_null(memchr(p, '\n', (size_t)(eol - p)));
		p = eol + 2;
	}
}

/* ---- greeting ---- */

static void test_phase_str(void **state)
{
	(void)state;
	assert_string_equal(starttls_phase_str(STARTTLS_GREETING), "greeting");
	assert_string_equal(starttls_phase_str(STARTTLS_COMMAND), "command");
	assert_string_equal(starttls_phase_str(STARTTLS_REPLY), "reply");
	assert_string_equal(starttls_phase_str(STARTTLS_HANDSHAKE),
			    "handshake");
	assert_string_equal(starttls_phase_str(STARTTLS_RELAY), "relay");
	assert_string_equal(starttls_phase_str((enum starttls_phase)99), "?");
}

static void test_greeting_single(void **state)
{
	struct sim *s = sim_new(false);
	struct buffer out = { 0 };
	const char *p;
	size_t n;
	long r;

	(void)state;
	assert_int_equal(s->st.phase, STARTTLS_GREETING);
	/* A client talking first is held back until the greeting is in. */
	r = starttls_client(&s->st, "EHLO c\r\n", 8, &s->to_backend,
			    &s->to_client);
	assert_int_equal(r, 0);
	assert_true(buffer_empty(&s->to_backend));
	assert_true(buffer_empty(&s->to_client));

	r = starttls_backend(&s->st, "220 mx ESMTP\r\n", 14, &out);
	assert_int_equal(r, 14);
	p = buffer_read_ptr(&out, &n);
	assert_int_equal(n, 14);
	assert_memory_equal(p, "220 mx ESMTP\r\n", 14);
	buffer_release(&out);
	assert_int_equal(s->st.phase, STARTTLS_COMMAND);
	sim_free(s);
}

static void test_greeting_multiline(void **state)
{
	struct sim *s = sim_new(true);

	(void)state;
	sim_c(s, "EHLO client.example\r\n");
	assert_int_equal(s->plen, 21);
	sim_b(s, "220-mx.example.net ESMTP\r\n");
	assert_int_equal(s->st.phase, STARTTLS_GREETING);
	assert_int_equal(s->belen, 0);
	sim_b(s, "220-no UCE\r\n220 ready\r\n");
	assert_string_equal(s->cli, "220-mx.example.net ESMTP\r\n220-no UCE\r\n"
				    "220 ready\r\n");
	/* The held EHLO went out once the greeting was complete. */
	assert_string_equal(s->be, "EHLO client.example\r\n");
	assert_int_equal(s->st.phase, STARTTLS_REPLY);
	assert_int_equal(s->plen, 0);
	sim_free(s);
}

static void test_greeting_refused(void **state)
{
	struct sim *s = sim_new(true);
	struct buffer out = { 0 };
	static const char chunk[] = "554-5.3.2 busy\r\n554 5.3.2 try later\r\n"
				    "221 bye\r\n";
	long r;

	(void)state;
	/* Nothing to offload: relay from the end of the greeting on; what
	 * follows in the chunk is left for the blind relay. */
	r = starttls_backend(&s->st, chunk, sizeof(chunk) - 1, &out);
	assert_int_equal(r, 37);
	assert_int_equal(s->st.phase, STARTTLS_RELAY);
	assert_int_equal(buffer_used(&out), 37);
	buffer_release(&out);
	/* Neither side is looked at any more. */
	assert_int_equal(starttls_backend(&s->st, "221 bye\r\n", 9, &out), 0);
	assert_int_equal(starttls_client(&s->st, "MAIL FROM:<a>\r\n", 15,
					 &s->to_backend, &s->to_client), 0);
	assert_true(buffer_empty(&out));
	assert_true(buffer_empty(&s->to_client));
	sim_free(s);

	/* Same through the session model, with a client talking early. */
	s = sim_new(true);
	sim_c(s, "EHLO c\r\nMAIL FROM:<a>\r\n");
	sim_b(s, "421 4.3.2 shutting down\r\n");
	assert_string_equal(s->cli, "421 4.3.2 shutting down\r\n");
	assert_string_equal(s->be, "EHLO c\r\nMAIL FROM:<a>\r\n");
	assert_int_equal(s->st.phase, STARTTLS_RELAY);
	sim_free(s);
}

static void test_greeting_not_smtp(void **state)
{
	struct sim *s = sim_new(false);

	(void)state;
	sim_b(s, "SSH-2.0-OpenSSH_9.6\r\nmore\r\n");
	assert_string_equal(s->cli, "SSH-2.0-OpenSSH_9.6\r\nmore\r\n");
	assert_int_equal(s->st.phase, STARTTLS_RELAY);
	sim_free(s);
}

/* ---- EHLO reply rewriting ---- */

struct ehlo_case {
	const char *backend;
	const char *before_tls; /* what the client sees before TLS */
	const char *after_tls; /* and after it */
};

static const struct ehlo_case ehlo_cases[] = {
	/* No extensions at all. */
	{ "250 mx.example.net\r\n",
	  "250-mx.example.net\r\n250 STARTTLS\r\n",
	  "250 mx.example.net\r\n" },
	/* Greeting text on the first line. */
	{ "250-mx.example.net Hello client [192.0.2.1]\r\n"
	  "250 SIZE 52428800\r\n",
	  "250-mx.example.net Hello client [192.0.2.1]\r\n"
	  "250-SIZE 52428800\r\n250 STARTTLS\r\n",
	  "250-mx.example.net Hello client [192.0.2.1]\r\n"
	  "250 SIZE 52428800\r\n" },
	/* STARTTLS in the middle (Postfix). */
	{ "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
	  "250-VRFY\r\n250-ETRN\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n"
	  "250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n",
	  "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
	  "250-VRFY\r\n250-ETRN\r\n250-ENHANCEDSTATUSCODES\r\n"
	  "250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n"
	  "250 STARTTLS\r\n",
	  "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
	  "250-VRFY\r\n250-ETRN\r\n250-ENHANCEDSTATUSCODES\r\n"
	  "250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n" },
	/* STARTTLS as the final line: the line before it ends the reply
	 * after TLS. */
	{ "250-mx.example.net\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n",
	  "250-mx.example.net\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n",
	  "250-mx.example.net\r\n250 AUTH PLAIN LOGIN\r\n" },
	/* Only STARTTLS, last. */
	{ "250-mx.example.net\r\n250 STARTTLS\r\n",
	  "250-mx.example.net\r\n250 STARTTLS\r\n",
	  "250 mx.example.net\r\n" },
	/* Lower case, with trailing blanks, and twice. */
	{ "250-mx\r\n250-starttls\r\n250-SIZE 1000\r\n250-StartTLS \t\r\n"
	  "250 HELP\r\n",
	  "250-mx\r\n250-SIZE 1000\r\n250-HELP\r\n250 STARTTLS\r\n",
	  "250-mx\r\n250-SIZE 1000\r\n250 HELP\r\n" },
	/* Extensions after it, and a STARTTLS that takes a parameter
	 * (clients key on the first word). */
	{ "250-mx\r\n250-STARTTLS\r\n250-STARTTLS REQUIRED\r\n"
	  "250-X-STARTTLS\r\n250-STARTTLSX\r\n250 AUTH=LOGIN\r\n",
	  "250-mx\r\n250-X-STARTTLS\r\n250-STARTTLSX\r\n250-AUTH=LOGIN\r\n"
	  "250 STARTTLS\r\n",
	  "250-mx\r\n250-X-STARTTLS\r\n250-STARTTLSX\r\n250 AUTH=LOGIN\r\n" },
	/* Bare LF line ends come out as CRLF. */
	{ "250-mx\n250-STARTTLS\n250 SIZE\n",
	  "250-mx\r\n250-SIZE\r\n250 STARTTLS\r\n",
	  "250-mx\r\n250 SIZE\r\n" },
	/* A failed EHLO is left alone: no STARTTLS is added to it. */
	{ "502 5.5.1 Error: command not implemented\r\n",
	  "502 5.5.1 Error: command not implemented\r\n",
	  "502 5.5.1 Error: command not implemented\r\n" },
	{ "550-5.7.1 no\r\n550 5.7.1 go away\r\n",
	  "550-5.7.1 no\r\n550 5.7.1 go away\r\n",
	  "550-5.7.1 no\r\n550 5.7.1 go away\r\n" },
};

static void test_ehlo_before_tls(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(ehlo_cases) / sizeof(ehlo_cases[0]); i++) {
		const struct ehlo_case *c = &ehlo_cases[i];
		struct sim *s = sim_ready(false);
		bool ok = strncmp(c->backend, "250", 3) == 0;

		print_message("ehlo case %zu\n", i);
		sim_c(s, "EHLO client.example\r\n");
		assert_int_equal(s->st.phase, STARTTLS_REPLY);
		sim_b(s, c->backend);
		assert_string_equal(s->cli, c->before_tls);
		assert_string_equal(s->be, "EHLO client.example\r\n");
		assert_int_equal(s->st.phase, STARTTLS_COMMAND);
		assert_int_equal(count_starttls(s->cli), ok ? 1 : 0);
		assert_one_reply(s->cli);
		sim_free(s);
	}
}

static void test_ehlo_after_tls(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(ehlo_cases) / sizeof(ehlo_cases[0]); i++) {
		const struct ehlo_case *c = &ehlo_cases[i];
		struct sim *s = sim_handshake(false);

		print_message("ehlo case %zu\n", i);
		sim_tls_done(s);
		assert_int_equal(s->st.phase, STARTTLS_COMMAND);
		sim_c(s, "ehlo client.example\r\n");
		assert_int_equal(s->st.phase, STARTTLS_REPLY);
		sim_b(s, c->backend);
		assert_string_equal(s->cli, c->after_tls);
		assert_string_equal(s->be, "ehlo client.example\r\n");
		assert_int_equal(count_starttls(s->cli), 0);
		assert_one_reply(s->cli);
		/* Still watching until a mail command (a second STARTTLS
		 * must be refused by us, not reach the backend). */
		assert_int_equal(s->st.phase, STARTTLS_COMMAND);
		sim_free(s);
	}
}

/* The reply to a second EHLO before TLS is rewritten again. */
static void test_ehlo_twice(void **state)
{
	struct sim *s = sim_ready(false);

	(void)state;
	sim_c(s, "EHLO a\r\nEHLO b\r\n");
	assert_string_equal(s->be, "EHLO a\r\n");
	sim_b(s, "250-mx\r\n250 STARTTLS\r\n");
	assert_string_equal(s->be, "EHLO a\r\nEHLO b\r\n");
	sim_b(s, "250-mx\r\n250-STARTTLS\r\n250 SIZE 5\r\n");
	assert_string_equal(s->cli, "250-mx\r\n250 STARTTLS\r\n"
				    "250-mx\r\n250-SIZE 5\r\n250 STARTTLS\r\n");
	assert_int_equal(s->st.phase, STARTTLS_COMMAND);
	sim_free(s);
}

static void test_helo_untouched(void **state)
{
	struct sim *s = sim_ready(true);

	(void)state;
	sim_c(s, "HELO client.example\r\n");
	assert_int_equal(s->st.phase, STARTTLS_REPLY);
	sim_b(s, "250 mx.example.net\r\n");
	assert_string_equal(s->cli, "250 mx.example.net\r\n");
	assert_int_equal(count_starttls(s->cli), 0);
	assert_int_equal(s->st.phase, STARTTLS_COMMAND);

	/* Other replies are relayed byte for byte, STARTTLS words too. */
	sim_c(s, "HELP\r\n");
	sim_b(s, "214-2.0.0 Commands: EHLO STARTTLS\n214 2.0.0 End\r\n");
	assert_string_equal(s->cli, "250 mx.example.net\r\n"
				    "214-2.0.0 Commands: EHLO STARTTLS\n"
				    "214 2.0.0 End\r\n");
	assert_string_equal(s->be, "HELO client.example\r\nHELP\r\n");
	assert_int_equal(s->st.phase, STARTTLS_COMMAND);
	sim_free(s);
}

static void test_backend_not_smtp(void **state)
{
	struct sim *s = sim_ready(false);
	char line[1200];
	char want[1300];

	(void)state;
	/* Mid EHLO reply: the line held back goes out as the backend
	 * wrote it, then everything else verbatim. */
	sim_c(s, "EHLO c\r\n");
	sim_b(s, "250-mx\r\nthis is not smtp\r\n250 STARTTLS\r\n");
	assert_string_equal(s->cli, "250-mx\r\nthis is not smtp\r\n"
				    "250 STARTTLS\r\n");
	assert_int_equal(s->st.phase, STARTTLS_RELAY);
	sim_free(s);

	/* An over-long line does the same, and the held line is not lost. */
	s = sim_ready(false);
	memcpy(line, "250-XLONG ", 10);
	memset(line + 10, 'a', 1100);
	memcpy(line + 1110, "\r\n", 3);
	sim_c(s, "EHLO c\r\n");
	sim_b(s, "250-mx\r\n");
	assert_int_equal(s->clen, 0); /* held back */
	sim_b(s, line);
	sim_b(s, "250 HELP\r\n");
	snprintf(want, sizeof(want), "250-mx\r\n%s250 HELP\r\n", line);
	assert_string_equal(s->cli, want);
	assert_int_equal(s->st.phase, STARTTLS_RELAY);
	sim_free(s);

	/* A line of exactly STARTTLS_LINE_MAX bytes is still SMTP. */
	s = sim_ready(false);
	memcpy(line, "250 ", 4);
	memset(line + 4, 'b', STARTTLS_LINE_MAX - 6);
	memcpy(line + STARTTLS_LINE_MAX - 2, "\r\n", 3);
	sim_c(s, "NOOP\r\n");
	sim_b(s, line);
	assert_string_equal(s->cli, line);
	assert_int_equal(s->st.phase, STARTTLS_COMMAND);
	sim_free(s);
}

/* ---- STARTTLS and the TLS boundary ---- */

static void test_injection_same_chunk(void **state)
{
	static const char chunk[] = "STARTTLS\r\nMAIL FROM:<evil@example>\r\n"
				    "RCPT TO:<victim@example>\r\n";
	int required;

	(void)state;
	for (required = 0; required < 2; required++) {
		struct sim *s = sim_ready(required != 0);
		long r;

		sim_c(s, "EHLO c\r\n");
		sim_b(s, "250 mx\r\n");
		s->clen = s->belen = 0;
		s->cli[0] = s->be[0] = '\0';

		r = starttls_client(&s->st, chunk, sizeof(chunk) - 1,
				    &s->to_backend, &s->to_client);
		assert_int_equal(r, (long)sizeof(chunk) - 1);
		sim_drain(s);
		assert_string_equal(s->cli, READY);
		assert_int_equal(s->belen, 0);
		assert_int_equal(s->st.phase, STARTTLS_HANDSHAKE);

		/* More plaintext before the handshake: discarded too. */
		r = starttls_client(&s->st, "DATA\r\n", 6, &s->to_backend,
				    &s->to_client);
		assert_int_equal(r, 6);
		sim_drain(s);
		assert_string_equal(s->cli, READY);
		assert_int_equal(s->belen, 0);

		sim_tls_done(s);
		assert_int_equal(s->st.phase, STARTTLS_COMMAND);
		assert_int_equal(s->st.clen, 0);
		sim_c(s, "EHLO c\r\n");
		sim_b(s, "250-mx\r\n250 STARTTLS\r\n");
		/* Only what the client sent inside TLS reached the backend. */
		assert_string_equal(s->be, "EHLO c\r\n");
		assert_null(strstr(s->be, "evil"));
		assert_string_equal(s->cli, READY "250 mx\r\n");
		assert_int_equal(s->st.phase, STARTTLS_COMMAND);
		sim_free(s);
	}
}

/* The test: STARTTLS and RSET in one send, after EHLO in the
 * same send; nothing ever answers the RSET. */
static void test_injection_pipelined_after_ehlo(void **state)
{
	struct sim *s = sim_ready(false);

	(void)state;
	sim_c(s, "EHLO c\r\nSTARTTLS\r\nRSET\r\n");
	assert_string_equal(s->be, "EHLO c\r\n");
	assert_int_equal(s->st.phase, STARTTLS_REPLY);
	sim_b(s, "250-mx\r\n250 8BITMIME\r\n");
	assert_int_equal(s->st.phase, STARTTLS_HANDSHAKE);
	assert_int_equal(s->plen, 0);
	assert_string_equal(s->cli, "250-mx\r\n250-8BITMIME\r\n250 STARTTLS\r\n"
				    READY);
	sim_tls_done(s);
	assert_string_equal(s->be, "EHLO c\r\n");
	sim_c(s, "NOOP\r\n");
	assert_string_equal(s->be, "EHLO c\r\nNOOP\r\n");
	sim_free(s);
}

/* Half a line before STARTTLS's 220 must not glue onto the first line
 * sent inside TLS. */
static void test_injection_partial_line(void **state)
{
	struct sim *s = sim_ready(true);

	(void)state;
	sim_c(s, "STARTTLS\r\nMAIL FROM:<evil> ");
	assert_string_equal(s->cli, READY);
	sim_tls_done(s);
	sim_c(s, "EHLO c\r\n");
	assert_string_equal(s->be, "EHLO c\r\n");
	sim_free(s);

	/* Likewise the tail of an over-long line being skipped. */
	s = sim_ready(true);
	{
		char chunk[700];

		memcpy(chunk, "STARTTLS\r\n", 10);
		memset(chunk + 10, 'x', 600);
		chunk[610] = '\0';
		sim_c(s, chunk);
	}
	assert_string_equal(s->cli, READY);
	sim_tls_done(s);
	sim_c(s, "EHLO c\r\n");
	assert_string_equal(s->be, "EHLO c\r\n");
	assert_string_equal(s->cli, READY);
	sim_free(s);
}

static void test_backend_during_handshake(void **state)
{
	struct sim *s = sim_handshake(false);
	char junk[3000];
	long r;

	(void)state;
	/* A reply nobody asked for: dropped, all of it consumed. */
	r = starttls_backend(&s->st, "250 2.0.0 fake\r\n", 16, &s->to_client);
	assert_int_equal(r, 16);
	assert_true(buffer_empty(&s->to_client));
	assert_int_equal(s->st.phase, STARTTLS_HANDSHAKE);
	assert_int_equal(s->st.dropped, 16);

	/* Over-long garbage too: it must not switch to blind relaying. */
	memset(junk, 'j', sizeof(junk));
	r = starttls_backend(&s->st, junk, sizeof(junk), &s->to_client);
	assert_int_equal(r, (long)sizeof(junk));
	assert_true(buffer_empty(&s->to_client));
	assert_int_equal(s->st.phase, STARTTLS_HANDSHAKE);
	r = starttls_backend(&s->st, "250 half", 8, &s->to_client);
	assert_int_equal(r, 8);
	assert_int_equal(s->st.dropped, 16 + 3000 + 8);

	sim_tls_done(s);
	/* Still unasked for after the handshake. */
	sim_b(s, "\r\n250 AUTH PLAIN\r\n");
	assert_int_equal(s->clen, 0);
	assert_int_equal(s->st.phase, STARTTLS_COMMAND);

	sim_c(s, "EHLO c\r\n");
	sim_b(s, "250-mx\r\n250-STARTTLS\r\n250 SIZE 1\r\n");
	assert_string_equal(s->cli, "250-mx\r\n250 SIZE 1\r\n");
	assert_string_equal(s->be, "EHLO c\r\n");
	sim_free(s);
}

static void test_backend_between_commands(void **state)
{
	struct sim *s = sim_ready(false);
	char junk[2000];

	(void)state;
	sim_b(s, "250 2.0.0 early\r\n");
	memset(junk, 'z', sizeof(junk) - 1);
	junk[sizeof(junk) - 1] = '\0';
	sim_b(s, junk);
	sim_b(s, "\r\n");
	assert_int_equal(s->clen, 0);
	assert_int_equal(s->st.phase, STARTTLS_COMMAND);

	/* Extra lines after a complete reply are dropped as well. */
	sim_c(s, "NOOP\r\n");
	sim_b(s, "250 2.0.0 Ok\r\n250 2.0.0 bonus\r\n");
	assert_string_equal(s->cli, "250 2.0.0 Ok\r\n");
	assert_int_equal(s->st.phase, STARTTLS_COMMAND);
	assert_int_equal(s->st.dropped, 17 + 1999 + 2 + 17);
	sim_free(s);
}

static void test_starttls_variants(void **state)
{
	struct sim *s = sim_ready(false);

	(void)state;
	sim_c(s, "STARTTLS now\r\n");
	assert_string_equal(s->cli, SYNTAX);
	assert_int_equal(s->st.phase, STARTTLS_COMMAND);
	sim_c(s, "STARTTLS\tx\r\n");
	assert_string_equal(s->cli, SYNTAX SYNTAX);
	sim_c(s, "STARTTLSX\r\n"); /* not STARTTLS: the backend's to judge */
	assert_string_equal(s->be, "STARTTLSX\r\n");
	sim_b(s, "502 5.5.2 Error: command not recognized\r\n");
	assert_int_equal(s->belen, 11);
	sim_c(s, "starttls \r\n");
	assert_string_equal(s->cli, SYNTAX SYNTAX
			    "502 5.5.2 Error: command not recognized\r\n"
			    READY);
	assert_int_equal(s->st.phase, STARTTLS_HANDSHAKE);
	assert_string_equal(s->be, "STARTTLSX\r\n");

	sim_tls_done(s);
	s->clen = 0;
	s->cli[0] = '\0';
	sim_c(s, "STARTTLS\r\nStartTLS\r\nSTARTTLS x\r\n");
	assert_string_equal(s->cli, AGAIN AGAIN AGAIN);
	assert_int_equal(s->st.phase, STARTTLS_COMMAND);
	assert_string_equal(s->be, "STARTTLSX\r\n");
	sim_free(s);

	/* Bare LF ends a command too. */
	s = sim_ready(false);
	sim_c(s, "STARTTLS\nQUIT\n");
	assert_string_equal(s->cli, READY);
	assert_int_equal(s->belen, 0);
	sim_free(s);
}

/* ---- tls_required ---- */

static void test_required_refuses(void **state)
{
	static const char *const refused[] = {
		"MAIL FROM:<a@example>\r\n",
		"mail from:<a@example>\r\n",
		"Mail From:<a@example> SIZE=100\r\n",
		"RCPT TO:<b@example>\r\n",
		"rcpt to:<b@example>\r\n",
		"DATA\r\n",
		"data\r\n",
		"DATA \r\n",
		"AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n",
		"auth login\r\n",
		"BDAT 86 LAST\r\n",
		"bdat 0\r\n",
		"MAIL FROM:<a@example>\n",
		/* What Postfix's tokenizer reads as MAIL/RCPT too. */
		" MAIL FROM:<a@example>\r\n",
		"\tRCPT TO:<b@example>\r\n",
		"\rMAIL FROM:<a@example>\r\n",
		"MAIL\tFROM:<a@example>\r\n",
		"MAIL\vFROM:<a@example>\r\n",
		"DATA\f\r\n",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		struct sim *s = sim_ready(true);
		long r;

		print_message("refused %zu\n", i);
		r = starttls_client(&s->st, refused[i], strlen(refused[i]),
				    &s->to_backend, &s->to_client);
		assert_int_equal(r, (long)strlen(refused[i]));
		sim_drain(s);
		assert_string_equal(s->cli, MUST);
		assert_int_equal(s->belen, 0);
		assert_int_equal(s->st.phase, STARTTLS_COMMAND);
		sim_free(s);
	}
}

static void test_required_pipelined(void **state)
{
	struct sim *s = sim_ready(true);

	(void)state;
	/* Refusals are answered at once and do not stop the reading. */
	sim_c(s, "MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\nNOOP\r\nRSET\r\n");
	assert_string_equal(s->cli, MUST MUST MUST);
	assert_string_equal(s->be, "NOOP\r\n");
	assert_int_equal(s->st.phase, STARTTLS_REPLY);
	sim_b(s, "250 2.0.0 Ok\r\n");
	assert_string_equal(s->be, "NOOP\r\nRSET\r\n");
	sim_b(s, "250 2.0.0 Ok\r\n");
	assert_string_equal(s->cli, MUST MUST MUST
			    "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n");
	/* Not mail verbs, though they start like them. */
	sim_c(s, "MAILBOX\r\n");
	sim_b(s, "502 5.5.2 Error: command not recognized\r\n");
	sim_c(s, "VRFY <a>\r\n");
	assert_string_equal(s->be, "NOOP\r\nRSET\r\nMAILBOX\r\nVRFY <a>\r\n");
	assert_int_equal(s->st.phase, STARTTLS_REPLY);
	sim_free(s);
}

static void test_required_after_tls(void **state)
{
	struct sim *s = sim_handshake(true);

	(void)state;
	sim_tls_done(s);
	sim_c(s, "EHLO c\r\nMAIL FROM:<a>\r\n");
	assert_string_equal(s->be, "EHLO c\r\n");
	sim_b(s, "250-mx\r\n250 STARTTLS\r\n");
	assert_string_equal(s->be, "EHLO c\r\nMAIL FROM:<a>\r\n");
	assert_string_equal(s->cli, "250 mx\r\n");
	assert_int_equal(s->st.phase, STARTTLS_RELAY);
	sim_free(s);

	/* A mail verb first thing inside TLS is forwarded and relayed. */
	s = sim_handshake(true);
	sim_tls_done(s);
	sim_c(s, "MAIL FROM:<a>\r\n");
	assert_string_equal(s->be, "MAIL FROM:<a>\r\n");
	assert_int_equal(s->st.phase, STARTTLS_RELAY);
	assert_int_equal(s->clen, 0);
	sim_free(s);
}

/* ---- the client chose plaintext ---- */

static void test_plaintext_mail(void **state)
{
	static const char *const verbs[] = {
		"MAIL FROM:<a>\r\n", "rcpt to:<b>\r\n", "DATA\r\n",
		"AUTH LOGIN\r\n",    "BDAT 5 LAST\r\n", "QUIT\r\n",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		struct sim *s = sim_ready(false);
		char chunk[128];
		size_t len = strlen(verbs[i]);
		long r;

		print_message("verb %zu\n", i);
		snprintf(chunk, sizeof(chunk), "%sRSET\r\n", verbs[i]);
		r = starttls_client(&s->st, chunk, strlen(chunk),
				    &s->to_backend, &s->to_client);
		/* Forwarded, and the machine is done: the rest is the
		 * session's to relay. */
		assert_int_equal(r, (long)len);
		sim_drain(s);
		assert_string_equal(s->be, verbs[i]);
		assert_int_equal(s->clen, 0);
		assert_int_equal(s->st.phase, STARTTLS_RELAY);
		assert_int_equal(starttls_backend(&s->st, "250 ok\r\n", 8,
						  &s->to_client), 0);
		assert_true(buffer_empty(&s->to_client));
		sim_free(s);
	}
}

/* ---- consumption ---- */

static void test_consumption(void **state)
{
	struct sim *s = sim_ready(false);
	static const char chunk[] = "EHLO a\r\nNOOP\r\nRSET\r\n";
	long r;

	(void)state;
	r = starttls_client(&s->st, chunk, sizeof(chunk) - 1, &s->to_backend,
			    &s->to_client);
	assert_int_equal(r, 8); /* stops after the forwarded EHLO */
	assert_int_equal(s->st.phase, STARTTLS_REPLY);
	/* Nothing more is taken while the reply is outstanding. */
	r = starttls_client(&s->st, chunk + 8, sizeof(chunk) - 9,
			    &s->to_backend, &s->to_client);
	assert_int_equal(r, 0);
	sim_drain(s);
	assert_string_equal(s->be, "EHLO a\r\n");

	r = starttls_backend(&s->st, "250-mx\r\n", 8, &s->to_client);
	assert_int_equal(r, 8);
	assert_int_equal(s->st.phase, STARTTLS_REPLY);
	r = starttls_backend(&s->st, "250 SIZE 9\r\n", 12, &s->to_client);
	assert_int_equal(r, 12);
	assert_int_equal(s->st.phase, STARTTLS_COMMAND);
	r = starttls_client(&s->st, chunk + 8, sizeof(chunk) - 9,
			    &s->to_backend, &s->to_client);
	assert_int_equal(r, 6);
	sim_drain(s);
	assert_string_equal(s->be, "EHLO a\r\nNOOP\r\n");
	assert_string_equal(s->cli, "250-mx\r\n250-SIZE 9\r\n250 STARTTLS\r\n");

	/* A partial line is taken and kept. */
	starttls_backend(&s->st, "250 ok\r\n", 8, &s->to_client);
	r = starttls_client(&s->st, "RS", 2, &s->to_backend, &s->to_client);
	assert_int_equal(r, 2);
	r = starttls_client(&s->st, "", 0, &s->to_backend, &s->to_client);
	assert_int_equal(r, 0);
	r = starttls_client(&s->st, "ET\r\nNO", 6, &s->to_backend,
			    &s->to_client);
	assert_int_equal(r, 4);
	sim_drain(s);
	assert_string_equal(s->be, "EHLO a\r\nNOOP\r\nRSET\r\n");

	/* Answered locally: every line is taken in one call. */
	starttls_backend(&s->st, "250 ok\r\n", 8, &s->to_client);
	r = starttls_client(&s->st, "STARTTLS 1\r\nSTARTTLS 2\r\nNO", 26,
			    &s->to_backend, &s->to_client);
	assert_int_equal(r, 26);
	sim_drain(s);
	assert_string_equal(s->cli, "250-mx\r\n250-SIZE 9\r\n250 STARTTLS\r\n"
				    "250 ok\r\n250 ok\r\n" SYNTAX SYNTAX);
	sim_free(s);
}

/* ---- line lengths ---- */

static void test_client_line_limits(void **state)
{
	struct sim *s = sim_ready(true);
	char line[SMTP_LINE_MAX + 64];

	(void)state;
	/* SMTP_LINE_MAX bytes with the CRLF: forwarded. */
	memcpy(line, "NOOP ", 5);
	memset(line + 5, 'n', SMTP_LINE_MAX - 7);
	memcpy(line + SMTP_LINE_MAX - 2, "\r\n", 3);
	sim_c(s, line);
	assert_string_equal(s->be, line);
	sim_b(s, "250 ok\r\n");

	/* One more: refused, dropped, and the next line is read. */
	s->belen = 0;
	s->be[0] = '\0';
	memcpy(line, "NOOP ", 5);
	memset(line + 5, 'n', SMTP_LINE_MAX - 6);
	memcpy(line + SMTP_LINE_MAX - 1, "\r\n", 3);
	assert_int_equal(strlen(line), SMTP_LINE_MAX + 1);
	sim_c(s, line);
	assert_string_equal(s->cli, "250 ok\r\n" TOO_LONG);
	assert_int_equal(s->belen, 0);
	assert_int_equal(s->st.phase, STARTTLS_COMMAND);

	/* Over-long in pieces, then a line: one 500, then the line. */
	memset(line, 'q', 300);
	line[300] = '\0';
	sim_c(s, line);
	sim_c(s, line);
	assert_string_equal(s->cli, "250 ok\r\n" TOO_LONG TOO_LONG);
	sim_c(s, line);
	sim_c(s, "MAIL FROM:<a>\r\nMAIL FROM:<a>\r\n");
	assert_string_equal(s->cli, "250 ok\r\n" TOO_LONG TOO_LONG MUST);
	assert_int_equal(s->belen, 0);
	sim_c(s, "HELO c\r\n");
	assert_string_equal(s->be, "HELO c\r\n");
	sim_free(s);

	/* An over-long STARTTLS line is not STARTTLS. */
	s = sim_ready(false);
	memcpy(line, "STARTTLS", 8);
	memset(line + 8, ' ', SMTP_LINE_MAX);
	memcpy(line + 8 + SMTP_LINE_MAX, "\r\n", 3);
	sim_c(s, line);
	assert_string_equal(s->cli, TOO_LONG);
	assert_int_equal(s->st.phase, STARTTLS_COMMAND);
	sim_free(s);
}

/* ---- after TLS ---- */

static void test_after_tls_commands(void **state)
{
	struct sim *s = sim_handshake(false);

	(void)state;
	sim_tls_done(s);
	/* HELO's reply is relayed as is and commands are read again. */
	sim_c(s, "HELO c\r\nEHLO c\r\n");
	assert_string_equal(s->be, "HELO c\r\n");
	sim_b(s, "250 mx\r\n");
	assert_string_equal(s->be, "HELO c\r\nEHLO c\r\n");
	sim_b(s, "250-mx\r\n250-STARTTLS\r\n250 PIPELINING\r\n"
		 "250 2.1.0 Ok\r\n");
	assert_string_equal(s->cli, "250 mx\r\n250-mx\r\n250 PIPELINING\r\n");
	assert_int_equal(s->st.phase, STARTTLS_COMMAND);
	/* ... and the unsolicited line after the reply was dropped. */
	assert_int_equal(s->st.dropped, strlen("250 2.1.0 Ok\r\n"));
	sim_free(s);

	/* NOOP first: still watching, so the later EHLO reply loses the
	 * backend's STARTTLS too. */
	s = sim_handshake(false);
	sim_tls_done(s);
	sim_c(s, "NOOP\r\nEHLO c\r\n");
	assert_string_equal(s->be, "NOOP\r\n");
	assert_int_equal(s->st.phase, STARTTLS_REPLY);
	sim_b(s, "250 2.0.0 Ok\r\n");
	assert_string_equal(s->be, "NOOP\r\nEHLO c\r\n");
	sim_b(s, "250-mx\r\n250 STARTTLS\r\n");
	assert_string_equal(s->cli, "250 2.0.0 Ok\r\n250 mx\r\n");
	assert_int_equal(s->st.phase, STARTTLS_COMMAND);
	sim_free(s);

	/* A mail command first: nothing left to clean, relay. */
	s = sim_handshake(false);
	sim_tls_done(s);
	sim_c(s, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n");
	assert_string_equal(s->be, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n");
	assert_int_equal(s->st.phase, STARTTLS_RELAY);
	sim_free(s);
}

/* ---- output that does not fit ---- */

static void test_output_full(void **state)
{
	struct starttls st;
	struct buffer to_backend = { 0 };
	struct buffer to_client = { 0 };
	static char fill[BUFFER_SIZE];
	const char *p;
	size_t n;

	(void)state;
	memset(fill, 'f', sizeof(fill));
	starttls_init(&st, true);
	assert_int_equal(starttls_backend(&st, "220 mx\r\n", 8, &to_client), 8);
	buffer_release(&to_client);

	/* A 530 that does not fit. */
	assert_int_equal(buffer_append(&to_client, fill, sizeof(fill)), 0);
	assert_int_equal(starttls_client(&st, "MAIL FROM:<a>\r\n", 15,
					 &to_backend, &to_client), -1);
	buffer_release(&to_client);
	/* A command the backend side cannot take. */
	assert_int_equal(buffer_append(&to_backend, fill, sizeof(fill)), 0);
	assert_int_equal(starttls_client(&st, "HELO c\r\n", 8, &to_backend,
					 &to_client), -1);
	assert_int_equal(st.phase, STARTTLS_COMMAND);
	buffer_release(&to_backend);
	/* The failed lines are gone, not glued to the next one. */
	assert_int_equal(starttls_client(&st, "EHLO c\r\n", 8, &to_backend,
					 &to_client), 8);
	p = buffer_read_ptr(&to_backend, &n);
	assert_int_equal(n, 8);
	assert_memory_equal(p, "EHLO c\r\n", 8);
	assert_true(buffer_empty(&to_client));
	buffer_release(&to_backend);

	/* An EHLO reply that does not fit. */
	assert_int_equal(buffer_append(&to_client, fill, sizeof(fill)), 0);
	assert_int_equal(starttls_backend(&st, "250 mx\r\n", 8, &to_client),
			 -1);
	buffer_release(&to_client);
	/* The too-long answer, on a fresh session. */
	starttls_init(&st, false);
	assert_int_equal(starttls_backend(&st, "220 mx\r\n", 8, &to_client), 8);
	assert_int_equal(buffer_append(&to_client, fill,
				       sizeof(fill) - buffer_used(&to_client)),
			 0);
	memset(fill, 'x', SMTP_LINE_MAX + 1);
	assert_int_equal(starttls_client(&st, fill, SMTP_LINE_MAX + 1,
					 &to_backend, &to_client), -1);
	buffer_release(&to_client);
	buffer_release(&to_backend);
}

/* ---- every split gives the same result ---- */

enum step_kind { STEP_CLIENT, STEP_BACKEND, STEP_TLS, STEP_END };

struct step {
	enum step_kind kind;
	const char *data;
};

struct script {
	const char *name;
	bool required;
	const struct step *steps;
	const char *want_client;
	const char *want_backend;
	enum starttls_phase want_phase;
};

enum feed_mode { FEED_WHOLE, FEED_SPLIT, FEED_BYTES };

static void feed(struct sim *s, enum step_kind kind, const char *p, size_t n)
{
	if (kind == STEP_CLIENT)
		sim_client(s, p, n);
	else
		sim_backend(s, p, n);
}

/* Play a script; in FEED_SPLIT step cut_step is fed as two pieces cut
 * at cut_at; in FEED_BYTES every step is fed a byte at a time. */
static struct sim *play(const struct script *sc, enum feed_mode mode,
			size_t cut_step, size_t cut_at)
{
	struct sim *s = sim_new(sc->required);
	size_t i, j;

	for (i = 0; sc->steps[i].kind != STEP_END; i++) {
		const struct step *st = &sc->steps[i];
		size_t n;

		if (st->kind == STEP_TLS) {
			sim_tls_done(s);
			continue;
		}
		n = strlen(st->data);
		if (mode == FEED_BYTES) {
			for (j = 0; j < n; j++)
				feed(s, st->kind, st->data + j, 1);
		} else if (mode == FEED_SPLIT && i == cut_step) {
			feed(s, st->kind, st->data, cut_at);
			feed(s, st->kind, st->data + cut_at, n - cut_at);
		} else {
			feed(s, st->kind, st->data, n);
		}
	}
	return s;
}

static void same_outcome(const struct script *sc, const struct sim *ref,
			 const struct sim *got, const char *how, size_t step,
			 size_t at)
{
	if (ref->clen == got->clen && ref->belen == got->belen &&
	    memcmp(ref->cli, got->cli, ref->clen) == 0 &&
	    memcmp(ref->be, got->be, ref->belen) == 0 &&
	    ref->st.phase == got->st.phase && ref->plen == got->plen &&
	    ref->st.dropped == got->st.dropped)
		return;
	print_error("script %s fed %s (step %zu at %zu) differs\n"
		    "client saw:\n%s\n--- instead of:\n%s\n"
		    "backend saw:\n%s\n--- instead of:\n%s\n"
		    "phase %s/%s dropped %u/%u\n",
		    sc->name, how, step, at, got->cli, ref->cli, got->be,
		    ref->be, starttls_phase_str(got->st.phase),
		    starttls_phase_str(ref->st.phase), got->st.dropped,
		    ref->st.dropped);
	fail();
}

static void check_script(const struct script *sc)
{
	struct sim *ref = play(sc, FEED_WHOLE, 0, 0);
	struct sim *got;
	size_t i, at;

	print_message("script %s\n", sc->name);
	assert_string_equal(ref->cli, sc->want_client);
	assert_string_equal(ref->be, sc->want_backend);
	assert_int_equal(ref->st.phase, sc->want_phase);

	got = play(sc, FEED_BYTES, 0, 0);
	same_outcome(sc, ref, got, "byte by byte", 0, 0);
	sim_free(got);
	for (i = 0; sc->steps[i].kind != STEP_END; i++) {
		size_t n;

		if (sc->steps[i].kind == STEP_TLS)
			continue;
		n = strlen(sc->steps[i].data);
		for (at = 1; at < n; at++) {
			got = play(sc, FEED_SPLIT, i, at);
			same_outcome(sc, ref, got, "in two", i, at);
			sim_free(got);
		}
	}
	sim_free(ref);
}

/* The whole offload: greeting, EHLO with STARTTLS pipelined and an
 * injected command, backend noise during the handshake, EHLO again
 * inside TLS, then relaying. */
static const struct step steps_offload[] = {
	{ STEP_BACKEND, "220-mx.example.net ESMTP\r\n220 ready\r\n" },
	{ STEP_CLIENT, "EHLO client.example\r\nSTARTTLS\r\n"
		       "MAIL FROM:<evil@example>\r\n" },
	{ STEP_BACKEND, "250-mx.example.net\r\n250-PIPELINING\r\n"
			"250-STARTTLS\r\n250-SIZE 10240000\r\n"
			"250 8BITMIME\r\n" },
	{ STEP_BACKEND, "250 2.0.0 sneaky\r\n" },
	{ STEP_CLIENT, "RCPT TO:<late@example>\r\n" },
	{ STEP_TLS, NULL },
	{ STEP_CLIENT, "EHLO client.example\r\nMAIL FROM:<a@example>\r\n"
		       "RCPT TO:<b@example>\r\nDATA\r\n" },
	{ STEP_BACKEND, "250-mx.example.net\r\n250-PIPELINING\r\n"
			"250 STARTTLS\r\n" },
	/* MAIL reaches the backend only now (one command at a time). */
	{ STEP_BACKEND, "250 2.1.0 Ok\r\n" },
	{ STEP_END, NULL },
};

/* Plaintext by choice: MAIL ends the offload. */
static const struct step steps_plain[] = {
	{ STEP_BACKEND, "220 mx ESMTP\r\n" },
	{ STEP_CLIENT, "EHLO c\r\n" },
	{ STEP_BACKEND, "250-mx\r\n250-STARTTLS\r\n250 SIZE 1000\r\n" },
	{ STEP_CLIENT, "MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\n" },
	{ STEP_BACKEND, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n" },
	{ STEP_END, NULL },
};

/* tls_required, with every kind of local answer. */
static const struct step steps_refusals[] = {
	{ STEP_BACKEND, "220 mx\r\n" },
	{ STEP_CLIENT, "HELO c\r\nmail from:<a>\r\n" },
	{ STEP_BACKEND, "250 mx\r\n" },
	/* 10 x 52 = 520 bytes: over SMTP_LINE_MAX. */
	{ STEP_CLIENT, "STARTTLS now\r\n"
		       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		       "\r\n rcpt to:<b>\r\nNOOP\r\n" },
	{ STEP_BACKEND, "250 2.0.0 Ok\r\n" },
	{ STEP_CLIENT, "QUIT\r\n" },
	{ STEP_BACKEND, "221 2.0.0 Bye\r\n" },
	{ STEP_END, NULL },
};

/* A refusing greeting: relayed from the start. */
static const struct step steps_refused[] = {
	{ STEP_CLIENT, "EHLO c\r\n" },
	{ STEP_BACKEND, "554-5.3.2 busy\r\n554 5.3.2 try later\r\n" },
	{ STEP_CLIENT, "QUIT\r\n" },
	{ STEP_BACKEND, "221 bye\r\n" },
	{ STEP_END, NULL },
};

/* Bare LF, lower case, STARTTLS again inside TLS, HELO inside TLS. */
static const struct step steps_inside[] = {
	{ STEP_BACKEND, "220 mx\n" },
	{ STEP_CLIENT, "ehlo c\n" },
	{ STEP_BACKEND, "250-mx\n250 starttls\n" },
	{ STEP_CLIENT, "starttls\n" },
	{ STEP_BACKEND, "250 STARTTLS\r\n" },
	{ STEP_TLS, NULL },
	{ STEP_CLIENT, "STARTTLS\r\nHELO c\r\nEHLO c\r\n" },
	{ STEP_BACKEND, "250 mx\r\n" },
	{ STEP_BACKEND, "250-mx\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n" },
	{ STEP_END, NULL },
};

static void test_split_offload(void **state)
{
	static const struct script sc = {
		"offload", true, steps_offload,
		"220-mx.example.net ESMTP\r\n220 ready\r\n"
		"250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
		"250-8BITMIME\r\n250 STARTTLS\r\n" READY
		"250-mx.example.net\r\n250 PIPELINING\r\n250 2.1.0 Ok\r\n",
		"EHLO client.example\r\n"
		"EHLO client.example\r\nMAIL FROM:<a@example>\r\n"
		"RCPT TO:<b@example>\r\nDATA\r\n",
		STARTTLS_RELAY,
	};

	(void)state;
	check_script(&sc);
}

static void test_split_plain(void **state)
{
	static const struct script sc = {
		"plain", false, steps_plain,
		"220 mx ESMTP\r\n250-mx\r\n250-SIZE 1000\r\n250 STARTTLS\r\n"
		"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n",
		"EHLO c\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\n",
		STARTTLS_RELAY,
	};

	(void)state;
	check_script(&sc);
}

static void test_split_refusals(void **state)
{
	static const struct script sc = {
		"refusals", true, steps_refusals,
		"220 mx\r\n250 mx\r\n" MUST SYNTAX TOO_LONG MUST
		"250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n",
		"HELO c\r\nNOOP\r\nQUIT\r\n",
		STARTTLS_RELAY,
	};

	(void)state;
	check_script(&sc);
}

static void test_split_refused(void **state)
{
	static const struct script sc = {
		"refused", true, steps_refused,
		"554-5.3.2 busy\r\n554 5.3.2 try later\r\n221 bye\r\n",
		"EHLO c\r\nQUIT\r\n",
		STARTTLS_RELAY,
	};

	(void)state;
	check_script(&sc);
}

static void test_split_inside(void **state)
{
	static const struct script sc = {
		"inside", false, steps_inside,
		"220 mx\n250-mx\r\n250 STARTTLS\r\n" READY AGAIN
		"250 mx\r\n250-mx\r\n250 AUTH PLAIN LOGIN\r\n",
		"ehlo c\nHELO c\r\nEHLO c\r\n",
		STARTTLS_COMMAND,
	};

	(void)state;
	check_script(&sc);
}

/* Long lines on both sides, built at run time: backend junk longer than
 * a line between commands (dropped), an over-long client line (500), an
 * over-long EHLO reply line (relayed as is from there on). */
static void test_split_long_lines(void **state)
{
	static char junk[STARTTLS_LINE_MAX * 3];
	static char long_client[SMTP_LINE_MAX + 100];
	static char long_reply[STARTTLS_LINE_MAX + 200];
	static char want_client[STARTTLS_LINE_MAX * 2];
	const struct step steps[] = {
		{ STEP_BACKEND, "220 mx\r\n" },
		{ STEP_BACKEND, junk },
		{ STEP_BACKEND, "\r\n" },
		{ STEP_CLIENT, long_client },
		{ STEP_BACKEND, "250-mx\r\n" },
		{ STEP_BACKEND, long_reply },
		{ STEP_CLIENT, "NOOP\r\n" }, /* relayed blindly */
		{ STEP_END, NULL },
	};
	const struct script sc = {
		"long lines", false, steps, want_client,
		"EHLO c\r\nNOOP\r\n", STARTTLS_RELAY,
	};

	(void)state;
	memset(junk, 'j', sizeof(junk) - 1);
	memset(long_client, 'x', SMTP_LINE_MAX + 20);
	memcpy(long_client + SMTP_LINE_MAX + 20, "\r\nEHLO c\r\n", 11);
	memcpy(long_reply, "250-XLONG ", 10);
	memset(long_reply + 10, 'a', STARTTLS_LINE_MAX + 100);
	memcpy(long_reply + 10 + STARTTLS_LINE_MAX + 100, "\r\n250 HELP\r\n",
	       13);
	snprintf(want_client, sizeof(want_client), "220 mx\r\n%s250-mx\r\n%s",
		 TOO_LONG, long_reply);
	check_script(&sc);
}

/* Give back the chunks the buffer freelist keeps, for leak checkers. */
static int group_teardown(void **state)
{
	(void)state;
	buffer_trim();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_phase_str),
		cmocka_unit_test(test_greeting_single),
		cmocka_unit_test(test_greeting_multiline),
		cmocka_unit_test(test_greeting_refused),
		cmocka_unit_test(test_greeting_not_smtp),
		cmocka_unit_test(test_ehlo_before_tls),
		cmocka_unit_test(test_ehlo_after_tls),
		cmocka_unit_test(test_ehlo_twice),
		cmocka_unit_test(test_helo_untouched),
		cmocka_unit_test(test_backend_not_smtp),
		cmocka_unit_test(test_injection_same_chunk),
		cmocka_unit_test(test_injection_pipelined_after_ehlo),
		cmocka_unit_test(test_injection_partial_line),
		cmocka_unit_test(test_backend_during_handshake),
		cmocka_unit_test(test_backend_between_commands),
		cmocka_unit_test(test_starttls_variants),
		cmocka_unit_test(test_required_refuses),
		cmocka_unit_test(test_required_pipelined),
		cmocka_unit_test(test_required_after_tls),
		cmocka_unit_test(test_plaintext_mail),
		cmocka_unit_test(test_consumption),
		cmocka_unit_test(test_client_line_limits),
		cmocka_unit_test(test_after_tls_commands),
		cmocka_unit_test(test_output_full),
		cmocka_unit_test(test_split_offload),
		cmocka_unit_test(test_split_plain),
		cmocka_unit_test(test_split_refusals),
		cmocka_unit_test(test_split_refused),
		cmocka_unit_test(test_split_inside),
		cmocka_unit_test(test_split_long_lines),
	};

	return cmocka_run_group_tests_name("starttls", tests, NULL,
					   group_teardown);
}
