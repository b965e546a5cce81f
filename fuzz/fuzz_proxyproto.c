/* fuzz_proxyproto: the PROXY protocol encoders, round-tripped through a
 * strict decoder written here from the HAProxy specification ("The PROXY
 * protocol, versions 1 & 2"). The input builds the two endpoints (each
 * absent, IPv4, IPv6, IPv4-mapped IPv6, or not IP at all) and the TLS
 * facts (version, cipher, SNI; any of them long enough to overflow the
 * 16-bit length fields). Expected results are worked out here on their
 * own and compared with what the decoder reads back. Buffers one byte
 * short, and shorter, must give -1 and nothing written past their end:
 * they are heap blocks of exactly that size, so ASan sees any overrun.
 *
 * Input: byte 0: bits 0-2 source kind, 3-5 destination kind, 6 TLS facts
 * given, 7 one string inflated to about 64 KiB. Byte 1: bit 0 version,
 * 1 cipher, 2 SNI present; bits 3-4 which string is inflated; bits 5-7
 * pick a short length. Then 16 + 16 address bytes, two 16-bit ports,
 * three length bytes and the string bytes. */
#include <arpa/inet.h>
#include <stdbool.h>

#include "fuzz.h"
#include "proxyproto.h"

#define FPP_CANARY 0xa5
#define FPP_V2_HDR 16

enum fpp_kind {
	FPP_NONE,
	FPP_V4,
	FPP_V6,
	FPP_MAPPED,
	FPP_UNSPEC,
	FPP_UNIX,
	FPP_V6B,
	FPP_V4B,
};

/* An endpoint as the receiver should see it. */
struct fpp_end {
	int family; /* AF_INET, AF_INET6, or 0: not IP */
	uint8_t addr[16];
	uint16_t port;
};

/* What a decoder read back. */
struct fpp_hdr {
	bool local; /* v2 command LOCAL */
	int family; /* 0: UNKNOWN / UNSPEC */
	struct fpp_end src, dst;
	bool ssl;
	uint8_t ssl_client;
	uint32_t ssl_verify;
	const char *version, *cipher, *sni;
	size_t version_len, cipher_len, sni_len;
};

static void fpp_make(enum fpp_kind kind, const uint8_t *b, uint16_t port,
		     union sockname *sa, struct fpp_end *want)
{
	memset(sa, 0, sizeof(*sa));
	memset(want, 0, sizeof(*want));
	want->port = port;
	switch (kind) {
	case FPP_V4:
	case FPP_V4B:
		sa->in4.sin_family = AF_INET;
		memcpy(&sa->in4.sin_addr, b, 4);
		sa->in4.sin_port = htons(port);
		want->family = AF_INET;
		memcpy(want->addr, b, 4);
		break;
	case FPP_MAPPED:
	case FPP_V6:
	case FPP_V6B:
		sa->in6.sin6_family = AF_INET6;
		if (kind == FPP_MAPPED) {
			sa->in6.sin6_addr.s6_addr[10] = 0xff;
			sa->in6.sin6_addr.s6_addr[11] = 0xff;
			memcpy(&sa->in6.sin6_addr.s6_addr[12], b, 4);
		} else {
			memcpy(&sa->in6.sin6_addr, b, 16);
		}
		sa->in6.sin6_port = htons(port);
		sa->in6.sin6_flowinfo = 0x12345;
		sa->in6.sin6_scope_id = 7;
		if (IN6_IS_ADDR_V4MAPPED(&sa->in6.sin6_addr)) {
			want->family = AF_INET;
			memcpy(want->addr, &sa->in6.sin6_addr.s6_addr[12], 4);
		} else {
			want->family = AF_INET6;
			memcpy(want->addr, &sa->in6.sin6_addr, 16);
		}
		break;
	case FPP_UNIX:
		/* A family the encoder does not speak, with junk after it. */
		memcpy(sa, b, sizeof(*sa) < 16 ? sizeof(*sa) : 16);
		sa->sa.sa_family = AF_UNIX;
		break;
	default: /* FPP_UNSPEC, and FPP_NONE (not passed at all) */
		break;
	}
}

static bool fpp_end_equal(const struct fpp_end *a, const struct fpp_end *b)
{
	size_t n = a->family == AF_INET ? 4 : 16;

	return a->family == b->family && a->port == b->port &&
	       memcmp(a->addr, b->addr, n) == 0;
}

/* ---- v1 ---- */

/* "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", or "PROXY UNKNOWN\r\n". */
static const char *fpp_word(const char *p, const char *end, char *out,
			    size_t len)
{
	const char *sp = p;

	while (sp < end && *sp != ' ' && *sp != '\r')
		sp++;
	if (sp == p || (size_t)(sp - p) >= len)
		return NULL;
	memcpy(out, p, (size_t)(sp - p));
	out[sp - p] = '\0';
	return sp;
}

static bool fpp_port(const char *s, uint16_t *port)
{
	unsigned long v = 0;

	/* decimal, no leading zero but "0" itself, at most 65535 */
	if (s[0] == '\0' || (s[0] == '0' && s[1] != '\0'))
		return false;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return false;
		v = v * 10 + (unsigned long)(*s - '0');
		if (v > 65535)
			return false;
	}
	*port = (uint16_t)v;
	return true;
}

static bool fpp_decode_v1(const char *buf, size_t n, struct fpp_hdr *h)
{
	const char *p = buf, *end = buf + n;
	char w[64];
	int fam;

	memset(h, 0, sizeof(*h));
	if (n > PP_V1_MAX || n < 8 || memcmp(end - 2, "\r\n", 2) != 0 ||
	    memchr(buf, '\n', n - 1) != NULL || memcmp(p, "PROXY ", 6) != 0)
		return false;
	p += 6;
	end -= 2;
	if ((size_t)(end - p) == 7 && memcmp(p, "UNKNOWN", 7) == 0)
		return true;
	if ((p = fpp_word(p, end, w, sizeof(w))) == NULL)
		return false;
	if (strcmp(w, "TCP4") == 0)
		fam = AF_INET;
	else if (strcmp(w, "TCP6") == 0)
		fam = AF_INET6;
	else
		return false;
	h->family = h->src.family = h->dst.family = fam;
	if (p >= end || *p++ != ' ' || (p = fpp_word(p, end, w, sizeof(w))) == NULL ||
	    inet_pton(fam, w, h->src.addr) != 1)
		return false;
	if (p >= end || *p++ != ' ' || (p = fpp_word(p, end, w, sizeof(w))) == NULL ||
	    inet_pton(fam, w, h->dst.addr) != 1)
		return false;
	if (p >= end || *p++ != ' ' || (p = fpp_word(p, end, w, sizeof(w))) == NULL ||
	    !fpp_port(w, &h->src.port))
		return false;
	if (p >= end || *p++ != ' ' || (p = fpp_word(p, end, w, sizeof(w))) == NULL ||
	    !fpp_port(w, &h->dst.port))
		return false;
	return p == end;
}

/* ---- v2 ---- */

static const uint8_t fpp_sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
				     0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

static uint16_t fpp_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/* The SSL TLV's value: client, verify, then sub-TLVs. */
static bool fpp_decode_ssl(const uint8_t *p, size_t n, struct fpp_hdr *h)
{
	if (n < 5 || h->ssl)
		return false;
	h->ssl = true;
	h->ssl_client = p[0];
	h->ssl_verify = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 |
			(uint32_t)p[3] << 8 | p[4];
	p += 5;
	n -= 5;
	while (n > 0) {
		uint16_t len;

		if (n < 3 || (len = fpp_get16(p + 1)) > n - 3)
			return false;
		if (p[0] == 0x21 && h->version == NULL) {
			h->version = (const char *)p + 3;
			h->version_len = len;
		} else if (p[0] == 0x23 && h->cipher == NULL) {
			h->cipher = (const char *)p + 3;
			h->cipher_len = len;
		} else {
			return false; /* nothing else is sent, nothing twice */
		}
		p += 3 + len;
		n -= 3 + (size_t)len;
	}
	return true;
}

static bool fpp_decode_v2(const uint8_t *buf, size_t n, struct fpp_hdr *h)
{
	size_t len, alen;
	const uint8_t *p;

	memset(h, 0, sizeof(*h));
	if (n < FPP_V2_HDR || memcmp(buf, fpp_sig, 12) != 0)
		return false;
	if (buf[12] != 0x20 && buf[12] != 0x21)
		return false;
	h->local = buf[12] == 0x20;
	len = fpp_get16(buf + 14);
	if (FPP_V2_HDR + len != n)
		return false;
	switch (buf[13]) {
	case 0x00:
		alen = 0;
		break;
	case 0x11:
		alen = 12;
		h->family = AF_INET;
		break;
	case 0x21:
		alen = 36;
		h->family = AF_INET6;
		break;
	default:
		return false;
	}
	if (len < alen)
		return false;
	p = buf + FPP_V2_HDR;
	if (h->family != 0) {
		size_t a = alen == 12 ? 4 : 16;

		h->src.family = h->dst.family = h->family;
		memcpy(h->src.addr, p, a);
		memcpy(h->dst.addr, p + a, a);
		h->src.port = fpp_get16(p + 2 * a);
		h->dst.port = fpp_get16(p + 2 * a + 2);
	}
	p += alen;
	len -= alen;
	while (len > 0) {
		uint16_t tl;

		if (len < 3 || (tl = fpp_get16(p + 1)) > len - 3)
			return false;
		if (p[0] == 0x20) {
			if (!fpp_decode_ssl(p + 3, tl, h))
				return false;
		} else if (p[0] == 0x02 && h->sni == NULL) {
			h->sni = (const char *)p + 3;
			h->sni_len = tl;
		} else {
			return false;
		}
		p += 3 + tl;
		len -= 3 + (size_t)tl;
	}
	return true;
}

/* ---- the encoders against the decoders ---- */

static bool fpp_str_equal(const char *got, size_t glen, const char *want)
{
	if (want == NULL)
		return got == NULL;
	return got != NULL && glen == strlen(want) && memcmp(got, want, glen) == 0;
}

/* A heap block of exactly len bytes (ASan guards its end). */
static char *fpp_block(size_t len)
{
	char *b = malloc(len ? len : 1);

	fuzz_check(b != NULL, "malloc");
	memset(b, FPP_CANARY, len ? len : 1);
	return b;
}

static void fpp_v1(const union sockname *src, const union sockname *dst,
		   const struct fpp_end *ws, const struct fpp_end *wd,
		   uint8_t pick)
{
	char big[PP_V1_MAX + 64];
	struct fpp_hdr h;
	ssize_t n;
	bool known = ws != NULL && wd != NULL && ws->family != 0 &&
		     ws->family == wd->family;

	memset(big, FPP_CANARY, sizeof(big));
	n = pp_encode_v1(big, sizeof(big), src, dst);
	fuzz_check(n > 0 && n <= PP_V1_MAX, "v1 length %zd", n);
	for (size_t i = (size_t)n; i < sizeof(big); i++)
		fuzz_check((uint8_t)big[i] == FPP_CANARY, "v1 wrote past its line");
	fuzz_check(fpp_decode_v1(big, (size_t)n, &h), "v1 does not decode: %.*s",
		   (int)n, big);
	if (!known) {
		fuzz_check(h.family == 0, "v1 names a family for %s",
			   ws == NULL || wd == NULL ? "a missing end" :
						      "mixed or non-IP ends");
	} else {
		fuzz_check(h.family == ws->family && fpp_end_equal(&h.src, ws) &&
				   fpp_end_equal(&h.dst, wd),
			   "v1 round trip: %.*s", (int)n, big);
	}

	/* Exactly enough room; one byte short; shorter. */
	for (int k = 0; k < 3; k++) {
		size_t len = k == 0 ? (size_t)n :
			     k == 1 ? (size_t)n - 1 :
				      (size_t)pick % (size_t)n;
		char *b = fpp_block(len);
		ssize_t r = pp_encode_v1(b, len, src, dst);

		if (k == 0)
			fuzz_check(r == n && memcmp(b, big, (size_t)n) == 0,
				   "v1 into an exact buffer");
		else
			fuzz_check(r == -1, "v1 into %zu bytes gave %zd", len, r);
		free(b);
	}
}

/* The TLV bytes expected for tls (0 when the lengths do not fit). */
static size_t fpp_tlv_len(const struct pp_tls *tls, bool *fits)
{
	size_t v = tls->version ? strlen(tls->version) : 0;
	size_t c = tls->cipher ? strlen(tls->cipher) : 0;
	size_t s = tls->sni ? strlen(tls->sni) : 0;
	size_t ssl = 5 + (tls->version ? 3 + v : 0) + (tls->cipher ? 3 + c : 0);

	*fits = v <= UINT16_MAX && c <= UINT16_MAX && s <= UINT16_MAX &&
		ssl <= UINT16_MAX;
	return 3 + ssl + (tls->sni ? 3 + s : 0);
}

static void fpp_v2(const union sockname *src, const union sockname *dst,
		   const struct fpp_end *ws, const struct fpp_end *wd,
		   const struct pp_tls *tls, uint8_t pick)
{
	bool local = ws == NULL || wd == NULL;
	int fam = !local && ws->family != 0 && ws->family == wd->family ?
			  ws->family :
			  0;
	size_t alen = fam == AF_INET ? 12 : fam == AF_INET6 ? 36 : 0;
	bool fits = true;
	size_t tlv = tls != NULL && alen > 0 ? fpp_tlv_len(tls, &fits) : 0;
	size_t want;
	struct fpp_hdr h;
	char *b;
	ssize_t n;

	if (!fits || alen + tlv > UINT16_MAX) {
		/* Too long for the 16-bit length, whatever the room. */
		size_t len = FPP_V2_HDR + alen + tlv + 64;

		b = fpp_block(len);
		fuzz_check(pp_encode_v2(b, len, src, dst, tls) == -1,
			   "v2 with %zu bytes of TLV did not refuse", tlv);
		fuzz_check(b[0] == (char)FPP_CANARY &&
				   memcmp(b, b + 1, len - 1) == 0,
			   "v2 wrote while refusing");
		free(b);
		return;
	}
	want = FPP_V2_HDR + alen + tlv;
	b = fpp_block(want);
	n = pp_encode_v2(b, want, src, dst, tls);
	fuzz_check(n == (ssize_t)want, "v2 length %zd, want %zu", n, want);
	fuzz_check(fpp_decode_v2((const uint8_t *)b, (size_t)n, &h),
		   "v2 does not decode");
	fuzz_check(h.local == local, "v2 command");
	fuzz_check(h.family == fam, "v2 family %d, want %d", h.family, fam);
	if (fam != 0)
		fuzz_check(fpp_end_equal(&h.src, ws) && fpp_end_equal(&h.dst, wd),
			   "v2 addresses");
	if (tlv > 0) {
		fuzz_check(h.ssl && h.ssl_client == 0x01 && h.ssl_verify == 0,
			   "v2 SSL TLV");
		fuzz_check(fpp_str_equal(h.version, h.version_len, tls->version),
			   "v2 SSL version");
		fuzz_check(fpp_str_equal(h.cipher, h.cipher_len, tls->cipher),
			   "v2 SSL cipher");
		fuzz_check(fpp_str_equal(h.sni, h.sni_len, tls->sni),
			   "v2 authority");
	} else {
		fuzz_check(!h.ssl && h.sni == NULL, "v2 TLV without TLS or address");
	}
	/* PP_V2_MAX holds any real handshake's facts: a version name, an
	 * OpenSSL cipher name, an SNI host name (at most 255 bytes). */
	if (tls == NULL || ((tls->version == NULL || strlen(tls->version) <= 32) &&
			    (tls->cipher == NULL || strlen(tls->cipher) <= 64) &&
			    (tls->sni == NULL || strlen(tls->sni) <= 255)))
		fuzz_check(n <= PP_V2_MAX, "v2 header of %zd bytes past PP_V2_MAX", n);
	free(b);

	/* One byte short, and shorter: -1, nothing written past the end. */
	for (int k = 0; k < 2; k++) {
		size_t len = k == 0 ? want - 1 : (size_t)pick % want;

		b = fpp_block(len);
		fuzz_check(pp_encode_v2(b, len, src, dst, tls) == -1,
			   "v2 into %zu of %zu bytes", len, want);
		free(b);
	}
}

/* A string of the input's bytes (NUL ends it early, as C strings do). */
static char *fpp_string(struct fuzz_in *in, size_t len, size_t inflate)
{
	size_t got;
	const uint8_t *p = fuzz_take(in, len, &got);
	size_t n = inflate ? inflate : got;
	char *s = malloc(n + 1);

	fuzz_check(s != NULL, "malloc");
	for (size_t i = 0; i < n; i++)
		s[i] = got ? (char)p[i % got] : 'x';
	s[n] = '\0';
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	uint8_t k = fuzz_u8(&in), f = fuzz_u8(&in);
	uint8_t ab[2][16] = { { 0 } };
	union sockname sa[2];
	struct fpp_end want[2];
	struct pp_tls tls = { 0 };
	char *str[3];
	size_t got, lens[3];
	uint8_t pick = (uint8_t)(f >> 5);
	int inflate_which = (f >> 3) & 3;

	memcpy(ab[0], fuzz_take(&in, 16, &got), got);
	memcpy(ab[1], fuzz_take(&in, 16, &got), got);
	fpp_make((enum fpp_kind)(k & 7), ab[0], fuzz_u16(&in), &sa[0], &want[0]);
	fpp_make((enum fpp_kind)((k >> 3) & 7), ab[1], fuzz_u16(&in), &sa[1],
		 &want[1]);
	for (int i = 0; i < 3; i++)
		lens[i] = fuzz_u8(&in);
	for (int i = 0; i < 3; i++) {
		size_t inflate = 0;

		/* Around the 16-bit limit: 65471 .. 65726 bytes. */
		if ((k & 0x80) && inflate_which == i)
			inflate = UINT16_MAX - 64 + lens[i];
		str[i] = fpp_string(&in, lens[i], inflate);
	}
	tls.version = (f & 1) ? str[0] : NULL;
	tls.cipher = (f & 2) ? str[1] : NULL;
	tls.sni = (f & 4) ? str[2] : NULL;

	{
		const union sockname *s = (k & 7) == FPP_NONE ? NULL : &sa[0];
		const union sockname *d = ((k >> 3) & 7) == FPP_NONE ? NULL : &sa[1];
		const struct fpp_end *ws = s ? &want[0] : NULL;
		const struct fpp_end *wd = d ? &want[1] : NULL;

		/* pick varies the "shorter" length from run to run */
		pick = (uint8_t)(pick * 37 + lens[0]);
		fpp_v1(s, d, ws, wd, pick);
		fpp_v2(s, d, ws, wd, (k & 0x40) ? &tls : NULL, pick);
	}
	for (int i = 0; i < 3; i++)
		free(str[i]);
	return 0;
}
