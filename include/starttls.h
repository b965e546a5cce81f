/* starttls: the plaintext SMTP dialogue of a tls=starttls forward, up to
 * the point where it can be relayed blindly. One command at a time goes
 * to the backend (pipelining before TLS buys nothing), so the proxy's own
 * replies can never overtake the backend's. It
 *   - advertises exactly one STARTTLS in the EHLO reply before TLS and
 *     none after it (the backend's own is dropped);
 *   - answers STARTTLS itself with 220 and discards whatever the client
 *     sent after it, so nothing crosses the TLS boundary;
 *   - with tls_required, answers MAIL/RCPT/DATA/AUTH/BDAT before TLS with
 *     530 and never forwards them;
 *   - drops backend bytes nobody asked for (during the handshake, or
 *     between commands), so they cannot pose as answers inside TLS.
 * Pure: no I/O. The session feeds bytes and sends what comes out. */
#ifndef SMTPFWD_STARTTLS_H
#define SMTPFWD_STARTTLS_H

#include <stdbool.h>
#include <stddef.h>

#include "buffer.h"
#include "smtp.h"

enum starttls_phase {
	STARTTLS_GREETING, /* relaying the backend's greeting */
	STARTTLS_COMMAND, /* waiting for the client's next command line */
	STARTTLS_REPLY, /* one command forwarded; relaying its reply */
	STARTTLS_HANDSHAKE, /* 220 queued: the session runs the handshake */
	STARTTLS_RELAY, /* nothing left to do: relay blindly from here */
};

#define STARTTLS_LINE_MAX 1024

struct starttls {
	enum starttls_phase phase;
	bool required; /* tls_required */
	bool tls_active; /* the handshake finished */
	bool ehlo; /* the reply being relayed answers EHLO */
	bool first_line; /* next reply line is the first of its reply */
	bool have_held; /* held holds a line */
	bool held_first; /* ... the first line of the reply */
	bool client_long; /* discarding the rest of an over-long line */
	unsigned dropped; /* unsolicited backend bytes dropped */
	size_t clen;
	size_t blen;
	size_t hlen;
	char cline[SMTP_LINE_MAX];
	char bline[STARTTLS_LINE_MAX];
	char held[STARTTLS_LINE_MAX]; /* last EHLO reply line, not yet sent */
};

void starttls_init(struct starttls *st, bool required);

/* Client bytes. Consumes whole lines while a command is awaited and
 * stops after each one it forwards. In HANDSHAKE it consumes (discards)
 * everything. Returns the bytes consumed, or -1 when out could not take
 * the output. */
long starttls_client(struct starttls *st, const char *data, size_t n,
		     struct buffer *to_backend, struct buffer *to_client);

/* Backend bytes (always all consumed unless RELAY, where none are).
 * Returns the bytes consumed, or -1 as above. */
long starttls_backend(struct starttls *st, const char *data, size_t n,
		      struct buffer *to_client);

/* The handshake completed: commands are awaited again, now over TLS. */
void starttls_tls_done(struct starttls *st);

const char *starttls_phase_str(enum starttls_phase p);

#endif
