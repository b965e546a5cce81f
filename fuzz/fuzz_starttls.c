/* fuzz_starttls: the STARTTLS dialogue state machine, fed as a byte
 * stream from both sides the way the session feeds it: client bytes wait
 * in a bounded input buffer and are offered while a command is awaited;
 * backend bytes are offered as they come (at most a read's worth at a
 * time); the output buffers are drained after every call.
 *
 * Input: byte 0 bit 0 = tls_required. Then chunks, each a selector byte
 * and data: bit 7 picks the side (0 client, 1 backend), bits 0-6 the
 * length (0..95 as is, 96..127 in steps of 64 up to 2048). A zero-length
 * chunk while the phase is HANDSHAKE completes the TLS handshake.
 *
 * Checked besides the sanitizers:
 *   - every byte sent to the backend is a whole client line, given in
 *     the current TLS epoch, in order; nothing given after STARTTLS was
 *     accepted and before starttls_tls_done() ever reaches the backend;
 *   - with tls_required, no MAIL/RCPT/DATA/AUTH/BDAT line reaches the
 *     backend before TLS;
 *   - the 220 is the last thing the client gets before the handshake, and
 *     nothing reaches either side during it;
 *   - an EHLO reply relayed to the client before TLS holds exactly one
 *     STARTTLS extension when it is a 250, none otherwise; after TLS none;
 *   - backend bytes nobody asked for never reach the client;
 *   - the return values stay within what was given; -1 only when an
 *     output buffer really is full. */
#include <stdbool.h>
#include <strings.h>

#include "fuzz.h"
#include "starttls.h"

#define FST_CIN_MAX (4 * SMTP_LINE_MAX) /* the session's client buffer */
#define FST_READ_MAX 2048 /* the session reads the backend this much */
#define FST_READY "220 2.0.0 Ready to start TLS\r\n"

struct fst_bytes {
	char *p;
	size_t len;
	size_t cap;
};

struct fst {
	struct starttls st;
	struct buffer to_backend;
	struct buffer to_client;
	bool required;
	char cin[FST_CIN_MAX]; /* client bytes not consumed yet */
	size_t cinlen;
	/* Client bytes of this TLS epoch, and where the next line that may
	 * go to the backend starts at the earliest. */
	struct fst_bytes epoch;
	size_t ecur;
	/* The EHLO reply being relayed to the client. */
	bool ehlo_sent;
	bool ehlo_tls; /* TLS was active when the EHLO went out */
	struct fst_bytes reply;
	bool stop; /* the session would end here */
};

static void fst_add(struct fst_bytes *b, const char *p, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 4096;

		while (cap < b->len + n)
			cap *= 2;
		b->p = realloc(b->p, cap);
		fuzz_check(b->p != NULL, "realloc");
		b->cap = cap;
	}
	if (n > 0)
		memcpy(b->p + b->len, p, n);
	b->len += n;
}

static bool fst_space(char c)
{
	return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r';
}

/* The first word of a line, as a backend's tokenizer would take it. */
static bool fst_verb_is(const char *line, size_t n, const char *verb)
{
	size_t i = 0, start, vlen = strlen(verb);

	while (i < n && line[i] != '\n' && fst_space(line[i]))
		i++;
	start = i;
	while (i < n && line[i] != '\n' && !fst_space(line[i]))
		i++;
	return i - start == vlen && strncasecmp(line + start, verb, vlen) == 0;
}

static bool fst_mail_verb(const char *line, size_t n)
{
	return fst_verb_is(line, n, "MAIL") || fst_verb_is(line, n, "RCPT") ||
	       fst_verb_is(line, n, "DATA") || fst_verb_is(line, n, "AUTH") ||
	       fst_verb_is(line, n, "BDAT");
}

/* What went to the backend: one whole line of this epoch's client bytes,
 * starting at a line start at or after the cursor. */
static void fst_backend_got(struct fst *f, const char *p, size_t n)
{
	const char *e = f->epoch.p;
	size_t q;

	fuzz_check(p[n - 1] == '\n', "to the backend without a line end");
	fuzz_check(memchr(p, '\n', n - 1) == NULL, "two lines at once");
	for (q = f->ecur; q + n <= f->epoch.len; q++)
		if ((q == 0 || e[q - 1] == '\n') && memcmp(e + q, p, n) == 0)
			break;
	fuzz_check(q + n <= f->epoch.len,
		   "the backend got a line the client did not send in this TLS epoch: %.*s",
		   (int)n, p);
	f->ecur = q + n;
	if (f->required && !f->st.tls_active)
		fuzz_check(!fst_mail_verb(p, n),
			   "mail command before TLS reached the backend: %.*s",
			   (int)n, p);
	if (fst_verb_is(p, n, "EHLO")) {
		f->ehlo_sent = true;
		f->ehlo_tls = f->st.tls_active;
		f->reply.len = 0;
	} else {
		f->ehlo_sent = false;
	}
}

/* Take what the last call queued. Returns the client's part in *cli. */
static void fst_drain(struct fst *f, const char **cli, size_t *clen,
		      struct fst_bytes *keep)
{
	const char *p;
	size_t n;

	p = buffer_read_ptr(&f->to_backend, &n);
	if (p != NULL)
		fst_backend_got(f, p, n);
	buffer_release(&f->to_backend);
	p = buffer_read_ptr(&f->to_client, &n);
	keep->len = 0;
	if (p != NULL)
		fst_add(keep, p, n);
	buffer_release(&f->to_client);
	*cli = keep->p;
	*clen = keep->len;
}

/* -1 means an output buffer could not take a line. The buffers are
 * drained before every call, so only a client call can fill one: with
 * enough refused lines in one read, each answered by the proxy. A
 * backend read (at most FST_READ_MAX bytes) never grows past the room. */
static void fst_failed(struct fst *f, bool client)
{
	fuzz_check(client, "-1 from a backend read of at most %d bytes",
		   FST_READ_MAX);
	fuzz_check(buffer_used(&f->to_client) > BUFFER_SIZE - 64 ||
			   buffer_used(&f->to_backend) > BUFFER_SIZE - SMTP_LINE_MAX,
		   "-1 with room left: %zu to the client, %zu to the backend",
		   buffer_used(&f->to_client), buffer_used(&f->to_backend));
	f->stop = true;
}

/* ---- the EHLO reply the client saw ---- */

static bool fst_is_starttls_line(const char *l, size_t n)
{
	size_t end = 4;

	while (end < n && l[end] != ' ' && l[end] != '\t' && l[end] != '\r' &&
	       l[end] != '\n')
		end++;
	return n > 4 && end - 4 == 8 && strncasecmp(l + 4, "STARTTLS", 8) == 0;
}

/* A reply made of "ddd-..." lines and one final "ddd ..." line, each with
 * CRLF; anything else means the state machine gave up on it (the backend
 * stopped speaking SMTP) and passed it on as it was. */
static void fst_check_ehlo_reply(const struct fst *f)
{
	const char *p = f->reply.p, *end = p + f->reply.len;
	unsigned lines = 0, finals = 0, starttls = 0;
	const char *final = NULL;

	while (p < end) {
		const char *lf = memchr(p, '\n', (size_t)(end - p));
		size_t n;

		if (lf == NULL || lf == p || lf[-1] != '\r')
			return; /* not the reply shape: given up */
		n = (size_t)(lf - p) + 1;
		if (n < 6 || p[0] < '0' || p[0] > '9' || p[1] < '0' ||
		    p[1] > '9' || p[2] < '0' || p[2] > '9' ||
		    (p[3] != ' ' && p[3] != '-'))
			return;
		if (p[3] == ' ') {
			finals++;
			final = p;
		} else if (finals > 0) {
			return; /* lines after the final one: given up */
		}
		if (lines > 0 && fst_is_starttls_line(p, n))
			starttls++;
		lines++;
		p = lf + 1;
	}
	if (finals != 1)
		return;
	if (f->ehlo_tls)
		fuzz_check(starttls == 0, "STARTTLS offered inside TLS");
	else if (strncmp(final, "250", 3) == 0)
		fuzz_check(starttls == 1, "%u STARTTLS in a 250 EHLO reply:\n%.*s",
			   starttls, (int)f->reply.len, f->reply.p);
	else
		fuzz_check(starttls == 0, "%u STARTTLS in a failed EHLO reply",
			   starttls);
}

/* ---- the two sides ---- */

static void fst_handshake_done(struct fst *f)
{
	fuzz_check(buffer_empty(&f->to_client) && buffer_empty(&f->to_backend),
		   "output left at the handshake");
	starttls_tls_done(&f->st);
	fuzz_check(f->st.tls_active && f->st.phase == STARTTLS_COMMAND,
		   "after the handshake: %s", starttls_phase_str(f->st.phase));
	/* The session drops its input: the next byte from the client is TLS. */
	f->cinlen = 0;
	f->epoch.len = 0;
	f->ecur = 0;
	f->ehlo_sent = false;
}

/* Offer the client's buffered bytes, as the session does after each
 * event. */
static void fst_client_run(struct fst *f, struct fst_bytes *out)
{
	while (!f->stop && f->cinlen > 0 &&
	       (f->st.phase == STARTTLS_COMMAND ||
		f->st.phase == STARTTLS_HANDSHAKE)) {
		enum starttls_phase before = f->st.phase;
		long used = starttls_client(&f->st, f->cin, f->cinlen,
					    &f->to_backend, &f->to_client);
		const char *cli;
		size_t clen;

		if (used == -1) {
			fst_failed(f, true);
			return;
		}
		fuzz_check((size_t)used <= f->cinlen, "client took %ld of %zu",
			   used, f->cinlen);
		if (before == STARTTLS_HANDSHAKE)
			fuzz_check((size_t)used == f->cinlen &&
					   buffer_empty(&f->to_backend) &&
					   buffer_empty(&f->to_client),
				   "bytes after STARTTLS were not discarded");
		fst_drain(f, &cli, &clen, out);
		if (f->st.phase == STARTTLS_HANDSHAKE && before != STARTTLS_HANDSHAKE) {
			/* The 220 goes last; everything after STARTTLS is gone. */
			fuzz_check(clen >= sizeof(FST_READY) - 1 &&
					   memcmp(cli + clen - (sizeof(FST_READY) - 1),
						  FST_READY, sizeof(FST_READY) - 1) == 0,
				   "STARTTLS accepted without the 220 last");
			fuzz_check((size_t)used == f->cinlen,
				   "bytes after STARTTLS left for later");
		}
		if (used == 0)
			break;
		memmove(f->cin, f->cin + used, f->cinlen - (size_t)used);
		f->cinlen -= (size_t)used;
	}
}

static void fst_client(struct fst *f, const char *p, size_t n,
		       struct fst_bytes *out)
{
	if (f->st.phase == STARTTLS_HANDSHAKE) {
		/* The session reads nothing now (these would be TLS bytes);
		 * if it did, they must vanish. */
		long used = starttls_client(&f->st, p, n, &f->to_backend,
					    &f->to_client);

		fuzz_check(used == (long)n && buffer_empty(&f->to_backend) &&
				   buffer_empty(&f->to_client),
			   "client bytes during the handshake: took %ld of %zu",
			   used, n);
		return;
	}
	if (n > FST_CIN_MAX - f->cinlen)
		n = FST_CIN_MAX - f->cinlen; /* the session stops reading */
	memcpy(f->cin + f->cinlen, p, n);
	f->cinlen += n;
	fst_add(&f->epoch, p, n);
	fst_client_run(f, out);
}

static void fst_backend(struct fst *f, const char *p, size_t n,
			struct fst_bytes *out)
{
	enum starttls_phase before = f->st.phase;
	const char *cli;
	size_t clen;
	long used = starttls_backend(&f->st, p, n, &f->to_client);

	if (used == -1) {
		fst_failed(f, false);
		return;
	}
	fuzz_check((size_t)used <= n, "backend took %ld of %zu", used, n);
	fuzz_check((size_t)used == n || f->st.phase == STARTTLS_RELAY,
		   "backend bytes left outside RELAY");
	fst_drain(f, &cli, &clen, out);
	if (before == STARTTLS_COMMAND || before == STARTTLS_HANDSHAKE)
		fuzz_check(clen == 0 && (size_t)used == n,
			   "unsolicited backend bytes reached the client in %s",
			   starttls_phase_str(before));
	if (before == STARTTLS_REPLY && f->ehlo_sent) {
		fst_add(&f->reply, cli, clen);
		/* Past RELAY the rest goes to the client as it is. */
		fst_add(&f->reply, p + used, n - (size_t)used);
		if (f->st.phase != STARTTLS_REPLY) {
			fst_check_ehlo_reply(f);
			f->ehlo_sent = false;
		}
	}
	/* A reply is in: commands the client queued may go now. */
	fst_client_run(f, out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	struct fst *f = calloc(1, sizeof(*f));
	struct fst_bytes out = { 0 };

	fuzz_check(f != NULL, "calloc");
	f->required = fuzz_u8(&in) & 1;
	starttls_init(&f->st, f->required);
	fuzz_check(f->st.phase == STARTTLS_GREETING && !f->st.tls_active,
		   "initial state");

	while (in.n > 0 && !f->stop) {
		uint8_t sel = fuzz_u8(&in);
		unsigned v = sel & 0x7f;
		size_t len = v < 96 ? v : (size_t)(v - 95) * 64;
		const char *p;

		if (f->st.phase == STARTTLS_RELAY) {
			/* The session stops calling: nothing is taken now. */
			fuzz_check(starttls_client(&f->st, "x\r\n", 3,
						   &f->to_backend,
						   &f->to_client) == 0 &&
					   starttls_backend(&f->st, "250 x\r\n", 7,
							    &f->to_client) == 0 &&
					   buffer_empty(&f->to_backend) &&
					   buffer_empty(&f->to_client),
				   "bytes taken in RELAY");
			break;
		}
		if (len == 0) {
			if (f->st.phase == STARTTLS_HANDSHAKE)
				fst_handshake_done(f);
			continue;
		}
		p = (const char *)fuzz_take(&in, len, &len);
		if (sel & 0x80)
			fst_backend(f, p, len, &out);
		else
			fst_client(f, p, len, &out);
		fuzz_check(f->st.clen <= sizeof(f->st.cline) &&
				   f->st.blen <= sizeof(f->st.bline) &&
				   f->st.hlen <= sizeof(f->st.held),
			   "line lengths past their arrays");
	}

	buffer_release(&f->to_backend);
	buffer_release(&f->to_client);
	free(f->epoch.p);
	free(f->reply.p);
	free(out.p);
	free(f);
	return 0;
}
