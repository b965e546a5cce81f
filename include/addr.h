/* addr: socket addresses as configured ("IPv4:port", "[IPv6]:port",
 * "host:port") and as printed in logs. Pure: no I/O, no resolver. */
#ifndef SMTPFWD_ADDR_H
#define SMTPFWD_ADDR_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* An IPv4 or IPv6 socket address, small enough to embed in a session. */
union sockname {
	struct sockaddr sa;
	struct sockaddr_in in4;
	struct sockaddr_in6 in6;
};

/* "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535" plus NUL. */
#define ADDR_STRLEN 56
#define ADDR_HOSTLEN 254

/* A parsed "host:port". For a literal address, sa is filled in and
 * literal is true; for a hostname, host holds the name to resolve. */
struct endpoint {
	char host[ADDR_HOSTLEN];
	uint16_t port;
	bool literal;
	union sockname sa;
};

enum addr_flags {
	ADDR_ALLOW_HOSTNAME = 1 << 0, /* backends may name a host */
};

/* Parse "1.2.3.4:25", "[::1]:25" or (with ADDR_ALLOW_HOSTNAME)
 * "mail.lan:2525". Returns 0, or -1 with *why set to a static message. */
int addr_parse_endpoint(const char *text, int flags, struct endpoint *out,
			const char **why);

/* Parse a bare IPv4 or IPv6 address (no port) into out (port 0). */
int addr_parse_ip(const char *text, union sockname *out);

/* Length to pass to bind()/connect() for this address. */
socklen_t addr_len(const union sockname *a);

/* Port in host byte order. */
uint16_t addr_port(const union sockname *a);
void addr_set_port(union sockname *a, uint16_t port);

/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d) becomes plain IPv4;
 * anything else is copied unchanged. */
void addr_unmap(const union sockname *in, union sockname *out);

/* "1.2.3.4:25" or "[::1]:25" into buf (ADDR_STRLEN is always enough).
 * Returns buf. */
char *addr_format(const union sockname *a, char *buf, size_t len);

/* The address alone, no port or brackets. Returns buf. */
char *addr_format_ip(const union sockname *a, char *buf, size_t len);

/* Same family, address and port. */
bool addr_equal(const union sockname *a, const union sockname *b);

#endif
