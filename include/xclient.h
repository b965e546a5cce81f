/* xclient: tell the backend who the client really is with Postfix's
 * XCLIENT command (https://www.postfix.org/XCLIENT_README.html), for
 * backends that do not take a PROXY header. The proxy, not the client,
 * talks first:
 *
 *   backend: 220 greeting          (kept from the client)
 *   proxy:   EHLO <our name>
 *   backend: 250-... XCLIENT ADDR PORT ...
 *   proxy:   XCLIENT ADDR=... PORT=... NAME=[UNAVAILABLE] ...
 *   backend: 220 greeting          (passed to the client as its greeting)
 *
 * Anything else fails the session: never forward with the wrong identity.
 * Pure: no I/O. */
#ifndef SMTPFWD_XCLIENT_H
#define SMTPFWD_XCLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "addr.h"
#include "buffer.h"
#include "smtp.h"

#define XCLIENT_REPLY_MAX 4096

enum xclient_phase {
	XCLIENT_GREETING, /* waiting for the backend's first 220 */
	XCLIENT_EHLO, /* our EHLO sent, reading its reply */
	XCLIENT_REPLY, /* XCLIENT sent, reading the new greeting */
	XCLIENT_DONE, /* the new greeting went to to_client */
	XCLIENT_FAILED, /* failure holds why */
};

/* XCLIENT attributes we may send, as advertised by the backend. */
enum xclient_attr {
	XCLIENT_ADDR = 1 << 0,
	XCLIENT_PORT = 1 << 1,
	XCLIENT_NAME = 1 << 2,
	XCLIENT_PROTO = 1 << 3,
	XCLIENT_DESTADDR = 1 << 4,
	XCLIENT_DESTPORT = 1 << 5,
};

struct xclient {
	enum xclient_phase phase;
	unsigned attrs; /* enum xclient_attr, from the EHLO reply */
	bool offered; /* the EHLO reply had an XCLIENT line */
	union sockname client;
	union sockname local;
	char ehlo_name[SMTP_DOMAIN_MAX + 1];
	size_t llen;
	char line[SMTP_LINE_MAX]; /* current backend line */
	size_t rlen;
	char reply[XCLIENT_REPLY_MAX]; /* reply so far, as received */
	char failure[SMTP_LINE_MAX]; /* what went wrong, for the log */
};

void xclient_init(struct xclient *x, const char *ehlo_name,
		  const union sockname *client, const union sockname *local);

/* Backend bytes. Our commands go to to_backend; once the new greeting is
 * complete it goes to to_client and the phase is DONE. Returns the bytes
 * consumed (less than n only once DONE or FAILED), or -1 when an output
 * buffer is full. */
long xclient_backend(struct xclient *x, const char *data, size_t n,
		     struct buffer *to_backend, struct buffer *to_client);

/* "XCLIENT ADDR=... PORT=...\r\n" with the attributes in attrs; values
 * xtext-encoded (RFC 3461), IPv6 as "IPV6:...". Returns its length, or
 * -1 when it does not fit in len. */
long xclient_format(char *buf, size_t len, unsigned attrs,
		    const union sockname *client, const union sockname *local);

#endif
