/* addr: parsing and printing of socket addresses. */
#include "addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int addr_parse_port(const char *s, uint16_t *port)
{
	char *end;
	unsigned long v;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || v == 0 || v > 65535)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

int addr_parse_ip(const char *text, union sockname *out)
{
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, text, &out->in4.sin_addr) == 1) {
		out->in4.sin_family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, text, &out->in6.sin6_addr) == 1) {
		out->in6.sin6_family = AF_INET6;
		return 0;
	}
	return -1;
}

/* RFC 1123 host names: letters, digits, hyphens and dots; no empty labels;
 * underscores too, since container names use them. The last label may
 * not be all digits (RFC 1123 2.1), so a mistyped IPv4 address such as
 * 10.0.0.256 is an error here rather than a name the resolver fails on
 * (or, worse, reads as inet_aton() would). */
static bool addr_hostname_ok(const char *h)
{
	size_t label = 0;
	bool digits = true, last_digits = false;

	if (*h == '\0' || *h == '.' || *h == '-')
		return false;
	for (; *h; h++) {
		if (*h == '.') {
			if (label == 0)
				return false;
			last_digits = digits;
			label = 0;
			digits = true;
			continue;
		}
		if (!((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') ||
		      (*h >= '0' && *h <= '9') || *h == '-' || *h == '_'))
			return false;
		if (*h < '0' || *h > '9')
			digits = false;
		if (++label > 63)
			return false;
	}
	/* "name." (fully qualified): the label before the dot counts. */
	return label > 0 ? !digits : !last_digits;
}

int addr_parse_endpoint(const char *text, int flags, struct endpoint *out,
			const char **why)
{
	char host[ADDR_HOSTLEN];
	const char *colon, *port;
	size_t hlen;

	memset(out, 0, sizeof(*out));
	if (text[0] == '[') {
		const char *close = strchr(text, ']');

		if (close == NULL || close[1] != ':') {
			*why = "expected [IPv6]:port";
			return -1;
		}
		hlen = (size_t)(close - text - 1);
		if (hlen == 0 || hlen >= sizeof(host)) {
			*why = "bad IPv6 address";
			return -1;
		}
		memcpy(host, text + 1, hlen);
		host[hlen] = '\0';
		port = close + 2;
		if (inet_pton(AF_INET6, host, &out->sa.in6.sin6_addr) != 1) {
			*why = "bad IPv6 address";
			return -1;
		}
		out->sa.in6.sin6_family = AF_INET6;
	} else {
		colon = strrchr(text, ':');
		if (colon == NULL) {
			*why = "missing :port";
			return -1;
		}
		if (memchr(text, ':', (size_t)(colon - text)) != NULL) {
			*why = "IPv6 addresses need brackets: [addr]:port";
			return -1;
		}
		hlen = (size_t)(colon - text);
		if (hlen == 0 || hlen >= sizeof(host)) {
			*why = "missing address";
			return -1;
		}
		memcpy(host, text, hlen);
		host[hlen] = '\0';
		port = colon + 1;
		if (inet_pton(AF_INET, host, &out->sa.in4.sin_addr) == 1) {
			out->sa.in4.sin_family = AF_INET;
		} else if (!(flags & ADDR_ALLOW_HOSTNAME)) {
			*why = "bad IPv4 address (host names are allowed only for backends)";
			return -1;
		} else if (!addr_hostname_ok(host)) {
			*why = strspn(host, "0123456789.") == hlen ?
				       "bad IPv4 address" :
				       "bad host name";
			return -1;
		}
	}
	if (addr_parse_port(port, &out->port) == -1) {
		*why = "bad port (1-65535)";
		return -1;
	}
	memcpy(out->host, host, hlen + 1);
	out->literal = out->sa.sa.sa_family != 0;
	if (out->literal)
		addr_set_port(&out->sa, out->port);
	return 0;
}

socklen_t addr_len(const union sockname *a)
{
	return a->sa.sa_family == AF_INET6 ? sizeof(a->in6) : sizeof(a->in4);
}

uint16_t addr_port(const union sockname *a)
{
	if (a->sa.sa_family == AF_INET6)
		return ntohs(a->in6.sin6_port);
	if (a->sa.sa_family == AF_INET)
		return ntohs(a->in4.sin_port);
	return 0;
}

void addr_set_port(union sockname *a, uint16_t port)
{
	if (a->sa.sa_family == AF_INET6)
		a->in6.sin6_port = htons(port);
	else
		a->in4.sin_port = htons(port);
}

void addr_unmap(const union sockname *in, union sockname *out)
{
	if (in->sa.sa_family == AF_INET6 &&
	    IN6_IS_ADDR_V4MAPPED(&in->in6.sin6_addr)) {
		union sockname v4;

		memset(&v4, 0, sizeof(v4));
		v4.in4.sin_family = AF_INET;
		v4.in4.sin_port = in->in6.sin6_port;
		memcpy(&v4.in4.sin_addr, &in->in6.sin6_addr.s6_addr[12], 4);
		*out = v4;
		return;
	}
	if (out != in)
		*out = *in;
}

char *addr_format_ip(const union sockname *a, char *buf, size_t len)
{
	const void *src = a->sa.sa_family == AF_INET6 ?
				  (const void *)&a->in6.sin6_addr :
				  (const void *)&a->in4.sin_addr;

	if (len == 0)
		return buf;
	if ((a->sa.sa_family != AF_INET && a->sa.sa_family != AF_INET6) ||
	    inet_ntop(a->sa.sa_family, src, buf, (socklen_t)len) == NULL)
		snprintf(buf, len, "-");
	return buf;
}

char *addr_format(const union sockname *a, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	addr_format_ip(a, ip, sizeof(ip));
	if (a->sa.sa_family == AF_INET6)
		snprintf(buf, len, "[%s]:%u", ip, addr_port(a));
	else if (a->sa.sa_family == AF_INET)
		snprintf(buf, len, "%s:%u", ip, addr_port(a));
	else
		snprintf(buf, len, "-");
	return buf;
}

bool addr_equal(const union sockname *a, const union sockname *b)
{
	if (a->sa.sa_family != b->sa.sa_family)
		return false;
	if (a->sa.sa_family == AF_INET)
		return a->in4.sin_port == b->in4.sin_port &&
		       a->in4.sin_addr.s_addr == b->in4.sin_addr.s_addr;
	if (a->sa.sa_family == AF_INET6)
		return a->in6.sin6_port == b->in6.sin6_port &&
		       memcmp(&a->in6.sin6_addr, &b->in6.sin6_addr, 16) == 0;
	return false;
}
