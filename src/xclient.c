/* xclient: see the header. */
#include "xclient.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

void xclient_init(struct xclient *x, const char *ehlo_name,
		  const union sockname *client, const union sockname *local)
{
	memset(x, 0, sizeof(*x));
	x->phase = XCLIENT_GREETING;
	snprintf(x->ehlo_name, sizeof(x->ehlo_name), "%s", ehlo_name);
	addr_unmap(client, &x->client);
	addr_unmap(local, &x->local);
}

/* xtext (RFC 3461 section 4): '+', '=' and bytes outside 33..126 become
 * "+HH". Returns the length written or -1. */
static long xclient_xtext(char *buf, size_t len, const char *v)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (; *v != '\0'; v++) {
		unsigned char c = (unsigned char)*v;

		if (c < 33 || c > 126 || c == '+' || c == '=') {
			if (o + 3 >= len)
				return -1;
			buf[o++] = '+';
			buf[o++] = hex[c >> 4];
			buf[o++] = hex[c & 15];
		} else {
			if (o + 1 >= len)
				return -1;
			buf[o++] = (char)c;
		}
	}
	buf[o] = '\0';
	return (long)o;
}

/* Postfix's form of an address: IPv4 dotted, IPv6 with "IPV6:", and an
 * IPv4-mapped IPv6 address as the IPv4 address it stands for. */
static void xclient_addr(const union sockname *a, char *buf, size_t len)
{
	char ip[ADDR_STRLEN];
	union sockname u;

	addr_unmap(a, &u);
	addr_format_ip(&u, ip, sizeof(ip));
	snprintf(buf, len, "%s%s", u.sa.sa_family == AF_INET6 ? "IPV6:" : "",
		 ip);
}

long xclient_format(char *buf, size_t len, unsigned attrs,
		    const union sockname *client, const union sockname *local)
{
	struct {
		unsigned attr;
		const char *name;
		const union sockname *a;
		bool port;
	} fields[] = {
		{ XCLIENT_ADDR, "ADDR", client, false },
		{ XCLIENT_PORT, "PORT", client, true },
		{ XCLIENT_NAME, "NAME", NULL, false },
		{ XCLIENT_PROTO, "PROTO", NULL, false },
		{ XCLIENT_DESTADDR, "DESTADDR", local, false },
		{ XCLIENT_DESTPORT, "DESTPORT", local, true },
	};
	size_t o, i;
	int n;

	n = snprintf(buf, len, "XCLIENT");
	if (n < 0 || (size_t)n >= len)
		return -1;
	o = (size_t)n;
	for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		char raw[ADDR_STRLEN + 8], enc[3 * sizeof(raw)];

		if (!(attrs & fields[i].attr))
			continue;
		if (fields[i].attr == XCLIENT_NAME)
			/* No DNS lookups here: the backend may do its own. */
			snprintf(raw, sizeof(raw), "[UNAVAILABLE]");
		else if (fields[i].attr == XCLIENT_PROTO)
			snprintf(raw, sizeof(raw), "ESMTP");
		else if (fields[i].port)
			snprintf(raw, sizeof(raw), "%u",
				 (unsigned)addr_port(fields[i].a));
		else
			xclient_addr(fields[i].a, raw, sizeof(raw));
		if (xclient_xtext(enc, sizeof(enc), raw) == -1)
			return -1;
		n = snprintf(buf + o, len - o, " %s=%s", fields[i].name, enc);
		if (n < 0 || (size_t)n >= len - o)
			return -1;
		o += (size_t)n;
	}
	if (o + 3 > len || o + 2 > SMTP_LINE_MAX)
		return -1;
	memcpy(buf + o, "\r\n", 3);
	return (long)o + 2;
}

/* The attribute names after "XCLIENT" in an EHLO line. */
static unsigned xclient_parse_attrs(const char *p, size_t n)
{
	static const struct {
		const char *name;
		unsigned attr;
	} names[] = {
		{ "ADDR", XCLIENT_ADDR },	  { "PORT", XCLIENT_PORT },
		{ "NAME", XCLIENT_NAME },	  { "PROTO", XCLIENT_PROTO },
		{ "DESTADDR", XCLIENT_DESTADDR }, { "DESTPORT", XCLIENT_DESTPORT },
	};
	unsigned attrs = 0;
	size_t i = 0, j;

	while (i < n) {
		size_t start;

		while (i < n && isspace((unsigned char)p[i]))
			i++;
		start = i;
		while (i < n && !isspace((unsigned char)p[i]))
			i++;
		for (j = 0; j < sizeof(names) / sizeof(names[0]); j++)
			if (strlen(names[j].name) == i - start &&
			    strncasecmp(p + start, names[j].name, i - start) == 0)
				attrs |= names[j].attr;
	}
	return attrs;
}

static void xclient_fail(struct xclient *x, const char *what, const char *line,
			 size_t n)
{
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;
	snprintf(x->failure, sizeof(x->failure), "%s%s%.*s", what,
		 n > 0 ? ": " : "", (int)n, line);
	x->phase = XCLIENT_FAILED;
}

/* One complete line of a reply. Returns 1 at its final line, 0 before,
 * -1 when it is not a reply line (x failed). */
static int xclient_reply_line(struct xclient *x, const char *line, size_t n)
{
	if (n < 4 || !isdigit((unsigned char)line[0]) ||
	    !isdigit((unsigned char)line[1]) ||
	    !isdigit((unsigned char)line[2]) ||
	    (line[3] != ' ' && line[3] != '-' && line[3] != '\r' &&
	     line[3] != '\n')) {
		xclient_fail(x, "backend reply is not SMTP", line, n);
		return -1;
	}
	if (x->rlen + n > sizeof(x->reply)) {
		xclient_fail(x, "backend reply too long", line, n);
		return -1;
	}
	memcpy(x->reply + x->rlen, line, n);
	x->rlen += n;
	return line[3] == '-' ? 0 : 1;
}

static int xclient_line(struct xclient *x, const char *line, size_t n,
			struct buffer *to_backend, struct buffer *to_client)
{
	char cmd[SMTP_LINE_MAX + 8];
	int end;
	long len;

	if (x->phase == XCLIENT_EHLO && x->rlen > 0 && n > 4 &&
	    strncasecmp(line + 4, "XCLIENT", 7) == 0 &&
	    (n == 11 || isspace((unsigned char)line[11]))) {
		x->offered = true;
		x->attrs = xclient_parse_attrs(line + 11, n - 11);
	}
	end = xclient_reply_line(x, line, n);
	if (end != 1)
		return 0;
	switch (x->phase) {
	case XCLIENT_GREETING:
		if (strncmp(x->reply, "220", 3) != 0) {
			xclient_fail(x, "backend greeting", x->reply, x->rlen);
			return 0;
		}
		len = snprintf(cmd, sizeof(cmd), "EHLO %s\r\n", x->ehlo_name);
		if (buffer_append(to_backend, cmd, (size_t)len) == -1)
			return -1;
		x->phase = XCLIENT_EHLO;
		break;
	case XCLIENT_EHLO:
		if (strncmp(x->reply, "250", 3) != 0) {
			xclient_fail(x, "backend refused our EHLO", x->reply,
				     strcspn(x->reply, "\n") + 1);
			return 0;
		}
		if (!x->offered || !(x->attrs & XCLIENT_ADDR)) {
			char said[SMTP_LINE_MAX / 2];
			size_t i, o = 0;

			/* The backend's own words, lines joined, for the log. */
			for (i = 0; i < x->rlen && o + 1 < sizeof(said); i++) {
				char ch = x->reply[i];

				if (ch == '\r')
					continue;
				said[o++] = ch == '\n' ? ' ' : ch;
			}
			while (o > 0 && said[o - 1] == ' ')
				o--;
			xclient_fail(x, x->offered ?
						"backend's XCLIENT does not take ADDR; its EHLO reply" :
						"backend does not offer XCLIENT to us (Postfix: "
						"smtpd_authorized_xclient_hosts); its EHLO reply",
				     said, o);
			return 0;
		}
		len = xclient_format(cmd, sizeof(cmd), x->attrs, &x->client,
				     &x->local);
		if (len == -1) {
			xclient_fail(x, "XCLIENT command too long", "", 0);
			return 0;
		}
		if (buffer_append(to_backend, cmd, (size_t)len) == -1)
			return -1;
		x->phase = XCLIENT_REPLY;
		break;
	case XCLIENT_REPLY:
		if (strncmp(x->reply, "220", 3) != 0) {
			xclient_fail(x, "backend refused XCLIENT", x->reply,
				     strcspn(x->reply, "\n") + 1);
			return 0;
		}
		if (buffer_append(to_client, x->reply, x->rlen) == -1)
			return -1;
		x->phase = XCLIENT_DONE;
		return 0;
	default:
		return 0;
	}
	x->rlen = 0;
	return 0;
}

long xclient_backend(struct xclient *x, const char *data, size_t n,
		     struct buffer *to_backend, struct buffer *to_client)
{
	size_t used = 0;

	while (used < n && x->phase != XCLIENT_DONE &&
	       x->phase != XCLIENT_FAILED) {
		const char *p = data + used;
		const char *lf = memchr(p, '\n', n - used);
		size_t take = lf != NULL ? (size_t)(lf - p) + 1 : n - used;

		if (x->llen + take > sizeof(x->line)) {
			/* Fill the line and stop at the byte past it, so the
			 * quote and the count do not depend on how the bytes
			 * arrived. */
			size_t room = sizeof(x->line) - x->llen;

			memcpy(x->line + x->llen, p, room);
			used += room + 1;
			xclient_fail(x, "backend line too long", x->line, 80);
			break;
		}
		used += take;
		memcpy(x->line + x->llen, p, take);
		x->llen += take;
		if (lf == NULL)
			break;
		take = x->llen;
		x->llen = 0;
		if (xclient_line(x, x->line, take, to_backend, to_client) == -1)
			return -1;
	}
	return (long)used;
}
