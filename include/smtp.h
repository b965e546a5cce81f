/* smtp: watches the SMTP dialogue as it streams past, without holding it
 * up. smtp_reply follows one server reply (the greeting), smtp_cmd the
 * client's first command line. Both are fed whatever chunks arrive and
 * bound what they keep. Pure: no I/O. */
#ifndef SMTPFWD_SMTP_H
#define SMTPFWD_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_LINE_MAX 512 /* RFC 5321 4.5.3.1.4/5, with CRLF */
#define SMTP_DOMAIN_MAX 255 /* RFC 5321 4.5.3.1.2 */
#define SMTP_REPLY_SCAN_MAX 4096 /* a greeting longer than this is not one */

struct smtp_reply {
	char text[SMTP_LINE_MAX]; /* lines joined by '\n', CRLF dropped */
	uint16_t len;
	uint16_t code; /* the reply code, 0 while unknown or malformed */
	uint16_t line_pos; /* bytes seen of the current line */
	uint16_t scanned; /* bytes seen of the whole reply */
	char head[4]; /* first four bytes of the current line */
	bool done; /* the final line (or the scan limit) has passed */
	bool truncated; /* text was cut */
	bool cr_dropped; /* a CR did not fit: truncation unless LF follows */
	bool malformed; /* not "ddd " / "ddd-" lines */
};

void smtp_reply_init(struct smtp_reply *r);
/* Returns how many bytes of data belong to the reply: n while it goes
 * on, less once the final line ended inside this chunk. */
size_t smtp_reply_feed(struct smtp_reply *r, const char *data, size_t n);

struct smtp_cmd {
	char verb[8]; /* upper-cased, e.g. "EHLO" */
	char arg[SMTP_DOMAIN_MAX + 1]; /* argument of EHLO/HELO, NUL-terminated */
	uint16_t arg_len;
	uint16_t line_pos;
	uint8_t verb_len;
	uint8_t state;
	bool done; /* the line ended, or passed SMTP_LINE_MAX */
	bool truncated; /* arg was cut */
	bool is_helo; /* verb is EHLO or HELO */
};

void smtp_cmd_init(struct smtp_cmd *c);
/* Returns how many bytes belong to the first line (as smtp_reply_feed). */
size_t smtp_cmd_feed(struct smtp_cmd *c, const char *data, size_t n);

#endif
