/* fuzz_addr: addresses as configured. The input is one or two lines: the
 * first is given to addr_parse_endpoint (with and without host names),
 * addr_parse_ip and acl_parse_cidr; the second, parsed as an IP address,
 * is the client matched against the first as a CIDR rule. Every parser
 * is checked against a small reference written here, and what parsed
 * must format and parse back to itself. Both lines then go through
 * config_from_args, as `smtpfwd -l A -b B` would. */
#include <arpa/inet.h>
#include <stdbool.h>

#include "acl.h"
#include "addr.h"
#include "config.h"
#include "fuzz.h"

static bool faddr_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Reference for a port: decimal digits only, 1..65535. */
static bool faddr_ref_port(const char *s, uint16_t *port)
{
	unsigned long v = 0;

	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++) {
		if (!faddr_is_digit(*s))
			return false;
		v = v * 10 + (unsigned long)(*s - '0');
		if (v > 65535)
			return false;
	}
	if (v == 0)
		return false;
	*port = (uint16_t)v;
	return true;
}

/* Reference for a host name: labels of letters, digits, '-', '_' (at
 * most 63 bytes, none empty, one final dot allowed), not starting with
 * '.' or '-', the last label not all digits. */
static bool faddr_ref_hostname(const char *h)
{
	size_t n = strlen(h), start = 0;
	bool last_digits = false;

	if (n == 0 || h[0] == '.' || h[0] == '-')
		return false;
	if (h[n - 1] == '.')
		n--;
	while (start <= n) {
		size_t end = start;
		bool digits = true;

		while (end < n && h[end] != '.') {
			char c = h[end];

			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			      faddr_is_digit(c) || c == '-' || c == '_'))
				return false;
			if (!faddr_is_digit(c))
				digits = false;
			end++;
		}
		if (end == start || end - start > 63)
			return false;
		last_digits = digits;
		start = end + 1;
	}
	return !last_digits;
}

static void faddr_roundtrip(const union sockname *a)
{
	char text[ADDR_STRLEN], again[ADDR_STRLEN], ip[ADDR_STRLEN];
	struct endpoint ep;
	union sockname b;
	const char *why = NULL;

	addr_format(a, text, sizeof(text));
	fuzz_check(strlen(text) < ADDR_STRLEN, "formatted too long");
	fuzz_check(addr_parse_endpoint(text, 0, &ep, &why) == 0,
		   "formatted %s does not parse: %s", text, why);
	fuzz_check(addr_equal(a, &ep.sa), "%s parses to something else", text);
	addr_format(&ep.sa, again, sizeof(again));
	fuzz_check(strcmp(text, again) == 0, "%s formats as %s", text, again);

	addr_format_ip(a, ip, sizeof(ip));
	fuzz_check(addr_parse_ip(ip, &b) == 0, "ip %s does not parse", ip);
	addr_set_port(&b, addr_port(a));
	fuzz_check(addr_equal(a, &b), "ip %s parses to something else", ip);
}

/* Shorter buffers than needed: cut, NUL-terminated, never past len. */
static void faddr_format_short(const union sockname *a, size_t len)
{
	char full[ADDR_STRLEN];
	char *buf = malloc(len ? len : 1);

	fuzz_check(buf != NULL, "malloc");
	addr_format(a, full, sizeof(full));
	addr_format(a, buf, len);
	if (len > 0)
		fuzz_check(strlen(buf) < len && strncmp(buf, full, strlen(buf)) == 0,
			   "cut %s to %zu", full, len);
	addr_format_ip(a, buf, len);
	if (len > 0)
		fuzz_check(strlen(buf) < len, "cut ip to %zu", len);
	free(buf);
}

static void faddr_endpoint(const char *text)
{
	struct endpoint e0, e1;
	const char *why0 = NULL, *why1 = NULL;
	int r0 = addr_parse_endpoint(text, 0, &e0, &why0);
	int r1 = addr_parse_endpoint(text, ADDR_ALLOW_HOSTNAME, &e1, &why1);
	const char *colon = strrchr(text, ':');
	uint16_t port;

	if (r0 == -1)
		fuzz_check(why0 != NULL && *why0 != '\0', "no reason");
	if (r1 == -1)
		fuzz_check(why1 != NULL && *why1 != '\0', "no reason");
	if (r0 == 0) {
		fuzz_check(r1 == 0 && memcmp(&e0, &e1, sizeof(e0)) == 0,
			   "allowing host names changed a literal");
		fuzz_check(e0.literal, "literal-only parse gave a host name");
	}
	if (r1 == -1)
		return;
	/* The port is what follows the last colon. */
	fuzz_check(colon != NULL && faddr_ref_port(colon + 1, &port) &&
			   port == e1.port,
		   "port of %s", text);
	fuzz_check(strlen(e1.host) < ADDR_HOSTLEN, "host too long");
	if (e1.literal) {
		fuzz_check(addr_port(&e1.sa) == e1.port, "port in sa");
		fuzz_check((text[0] == '[') == (e1.sa.sa.sa_family == AF_INET6),
			   "brackets and family of %s", text);
		faddr_roundtrip(&e1.sa);
	} else {
		struct in_addr in;

		fuzz_check(faddr_ref_hostname(e1.host), "bad host name %s accepted",
			   e1.host);
		fuzz_check(inet_pton(AF_INET, e1.host, &in) != 1,
			   "IPv4 %s taken as a host name", e1.host);
		fuzz_check(strlen(e1.host) == (size_t)(colon - text),
			   "host is not all before the port");
	}
}

/* ---- CIDR ---- */

/* Reference for acl_parse_cidr. */
static enum acl_parse_result faddr_ref_cidr(const char *text, struct cidr *out)
{
	char ip[64];
	const char *slash = strchr(text, '/');
	size_t iplen = slash ? (size_t)(slash - text) : strlen(text);
	uint8_t bytes[16];
	unsigned long prefix;
	unsigned max;
	bool mapped = false, hostbits = false;

	memset(out, 0, sizeof(*out));
	if (iplen == 0 || iplen >= sizeof(ip))
		return ACL_PARSE_BAD;
	memcpy(ip, text, iplen);
	ip[iplen] = '\0';
	if (inet_pton(AF_INET, ip, bytes) == 1) {
		out->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, ip, bytes) == 1) {
		static const uint8_t pfx[12] = { 0, 0, 0, 0, 0, 0,
						 0, 0, 0, 0, 0xff, 0xff };

		mapped = memcmp(bytes, pfx, 12) == 0;
		out->family = mapped ? AF_INET : AF_INET6;
		max = 128;
	} else {
		return ACL_PARSE_BAD;
	}
	prefix = mapped ? 128 : max;
	if (slash != NULL) {
		const char *s = slash + 1;

		if (*s == '\0')
			return ACL_PARSE_BAD;
		prefix = 0;
		for (; *s != '\0'; s++) {
			if (!faddr_is_digit(*s))
				return ACL_PARSE_BAD;
			prefix = prefix * 10 + (unsigned long)(*s - '0');
			if (prefix > max)
				return ACL_PARSE_BAD;
		}
	}
	if (mapped) {
		/* ::ffff:a.b.c.d/N counts N over the 128 bits. */
		if (prefix < 96)
			return ACL_PARSE_BAD;
		prefix -= 96;
		memmove(bytes, bytes + 12, 4);
	}
	out->prefix = (uint8_t)prefix;
	for (unsigned bit = 0; bit < (out->family == AF_INET ? 32u : 128u); bit++) {
		uint8_t m = (uint8_t)(0x80 >> (bit % 8));

		if (bit < prefix)
			out->net[bit / 8] |= bytes[bit / 8] & m;
		else if (bytes[bit / 8] & m)
			hostbits = true;
	}
	return hostbits ? ACL_PARSE_HOSTBITS : ACL_PARSE_OK;
}

/* Reference for acl_cidr_match. */
static bool faddr_ref_match(const struct cidr *r, const union sockname *c)
{
	union sockname u;
	const uint8_t *b;

	addr_unmap(c, &u);
	if (u.sa.sa_family != r->family)
		return false;
	b = u.sa.sa_family == AF_INET ? (const uint8_t *)&u.in4.sin_addr :
					(const uint8_t *)&u.in6.sin6_addr;
	for (unsigned bit = 0; bit < r->prefix; bit++) {
		uint8_t m = (uint8_t)(0x80 >> (bit % 8));

		if ((b[bit / 8] & m) != (r->net[bit / 8] & m))
			return false;
	}
	return true;
}

/* A client address with these family and bytes. */
static void faddr_client(union sockname *a, int family, const uint8_t *bytes,
			 uint16_t port)
{
	memset(a, 0, sizeof(*a));
	a->sa.sa_family = (sa_family_t)family;
	if (family == AF_INET)
		memcpy(&a->in4.sin_addr, bytes, 4);
	else
		memcpy(&a->in6.sin6_addr, bytes, 16);
	addr_set_port(a, port);
}

static void faddr_match(const struct cidr *r, const union sockname *c)
{
	bool m = acl_cidr_match(r, c);
	struct acl acl = { 0 };

	fuzz_check(m == faddr_ref_match(r, c), "match %d disagrees", m);
	acl.deny = (struct cidr *)r;
	acl.ndeny = 1;
	fuzz_check(acl_permits(&acl, c) == !m, "deny list");
	acl.ndeny = 0;
	acl.deny = NULL;
	acl.allow = (struct cidr *)r;
	acl.nallow = 1;
	acl.has_allow = true;
	fuzz_check(acl_permits(&acl, c) == m, "allow list");
}

static void faddr_cidr(const char *text, const union sockname *client,
		       bool have_client)
{
	struct cidr got, want;
	enum acl_parse_result rg = acl_parse_cidr(text, &got);
	enum acl_parse_result rw = faddr_ref_cidr(text, &want);
	unsigned max;
	union sockname a;
	uint8_t bytes[16];

	fuzz_check(rg == rw, "acl_parse_cidr(%s) = %d, reference %d", text,
		   (int)rg, (int)rw);
	if (rg == ACL_PARSE_BAD)
		return;
	fuzz_check(memcmp(&got, &want, sizeof(got)) == 0,
		   "acl_parse_cidr(%s) rule differs", text);
	max = got.family == AF_INET ? 32 : 128;

	/* The network itself, and its IPv4-mapped form, match. */
	memcpy(bytes, got.net, 16);
	faddr_client(&a, got.family, bytes, 25);
	faddr_match(&got, &a);
	fuzz_check(acl_cidr_match(&got, &a), "%s misses its own network", text);
	if (got.family == AF_INET) {
		uint8_t m[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

		memcpy(m + 12, got.net, 4);
		faddr_client(&a, AF_INET6, m, 25);
		fuzz_check(acl_cidr_match(&got, &a), "%s misses its mapped form",
			   text);
	}
	/* A bit inside the prefix changes the verdict; one outside does not. */
	for (unsigned bit = 0; bit < max; bit += 1 + bit / 4) {
		memcpy(bytes, got.net, 16);
		bytes[bit / 8] ^= (uint8_t)(0x80 >> (bit % 8));
		faddr_client(&a, got.family, bytes, 0);
		fuzz_check(acl_cidr_match(&got, &a) == (bit >= got.prefix),
			   "%s with bit %u flipped", text, bit);
	}
	if (have_client)
		faddr_match(&got, client);
}

/* ---- bare addresses ---- */

static void faddr_ip(const char *text, union sockname *out, bool *ok)
{
	union sockname a, u;
	uint8_t bytes[16];

	*ok = addr_parse_ip(text, &a) == 0;
	if (inet_pton(AF_INET, text, bytes) == 1)
		fuzz_check(*ok && a.sa.sa_family == AF_INET &&
				   memcmp(&a.in4.sin_addr, bytes, 4) == 0,
			   "IPv4 %s", text);
	else if (inet_pton(AF_INET6, text, bytes) == 1)
		fuzz_check(*ok && a.sa.sa_family == AF_INET6 &&
				   memcmp(&a.in6.sin6_addr, bytes, 16) == 0,
			   "IPv6 %s", text);
	else
		fuzz_check(!*ok, "%s is no address", text);
	if (!*ok)
		return;
	fuzz_check(addr_port(&a) == 0, "port of a bare address");
	fuzz_check(addr_len(&a) == (a.sa.sa_family == AF_INET6 ?
					    sizeof(struct sockaddr_in6) :
					    sizeof(struct sockaddr_in)),
		   "addr_len");
	addr_set_port(&a, 2525);
	faddr_roundtrip(&a);
	addr_unmap(&a, &u);
	if (a.sa.sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&a.in6.sin6_addr))
		fuzz_check(u.sa.sa_family == AF_INET &&
				   memcmp(&u.in4.sin_addr,
					  &a.in6.sin6_addr.s6_addr[12], 4) == 0 &&
				   addr_port(&u) == 2525,
			   "unmap");
	else
		fuzz_check(addr_equal(&a, &u), "unmap changed an address");
	*out = a;
}

/* ---- quick mode ---- */

static void faddr_args(const char *listen, const char *backend)
{
	struct config_diag d = { 0 };
	struct config *c = config_from_args(&listen, 1, &backend, 1, IDENT_PROXY_V2, &d);

	fuzz_check((c == NULL) == (d.errors > 0), "verdict with %u errors",
		   d.errors);
	fuzz_check(d.len == 0 || (d.text[d.len] == '\0' && d.text[d.len - 1] == '\n'),
		   "diag text");
	if (c != NULL) {
		fuzz_check(c->nfwd == 1 && c->fwd[0].nlisten >= 1 &&
				   c->fwd[0].nbackend >= 1 &&
				   c->fwd[0].proxy_protocol == PROXY_V2,
			   "quick forward");
		config_unref(c);
	}
	config_diag_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_strndup(data, size);
	char *second = strchr(text, '\n');
	union sockname a, client;
	bool ok, have_client = false;

	if (second != NULL)
		*second++ = '\0';
	if (second != NULL) {
		char *end = strchr(second, '\n');

		if (end != NULL)
			*end = '\0';
		faddr_ip(second, &client, &have_client);
	}

	faddr_endpoint(text);
	faddr_ip(text, &a, &ok);
	if (ok)
		faddr_format_short(&a, size % ADDR_STRLEN);
	faddr_cidr(text, &client, have_client);
	faddr_args(text, second != NULL ? second : text);

	free(text);
	return 0;
}
