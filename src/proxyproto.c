/* proxyproto: PROXY protocol v1 and v2 headers, as laid out in HAProxy's
 * "The PROXY protocol, versions 1 & 2". Encoders only: smtpfwd sends the
 * header towards the backend and never parses one. */
#include "proxyproto.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define PP_V2_HDR_LEN 16
#define PP_V2_CMD_LOCAL 0x20 /* version 2, command LOCAL */
#define PP_V2_CMD_PROXY 0x21 /* version 2, command PROXY */
#define PP_V2_FAM_UNSPEC 0x00
#define PP_V2_FAM_TCP4 0x11
#define PP_V2_FAM_TCP6 0x21
#define PP_V2_LEN_TCP4 12 /* 2 * 4 address bytes + 2 * 2 port bytes */
#define PP_V2_LEN_TCP6 36 /* 2 * 16 address bytes + 2 * 2 port bytes */

#define PP2_TYPE_AUTHORITY 0x02
#define PP2_TYPE_SSL 0x20
#define PP2_SUBTYPE_SSL_VERSION 0x21
#define PP2_SUBTYPE_SSL_CIPHER 0x23
#define PP2_CLIENT_SSL 0x01
#define PP2_TLV_HDR_LEN 3 /* type, length high, length low */
#define PP2_SSL_FIXED_LEN 5 /* client byte + 32-bit verify */

/* Twelve bytes chosen by the spec to make non-PROXY servers choke early;
 * the NUL in the middle means this is never a C string. */
static const uint8_t pp_v2_sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
};

/* Both ends unmapped into s and d. Returns their common family, or
 * AF_UNSPEC when one is missing, is not IP, or the two differ. */
static int pp_pair(const union sockname *src, const union sockname *dst,
		   union sockname *s, union sockname *d)
{
	if (src == NULL || dst == NULL)
		return AF_UNSPEC;
	addr_unmap(src, s);
	addr_unmap(dst, d);
	if (s->sa.sa_family != d->sa.sa_family)
		return AF_UNSPEC;
	if (s->sa.sa_family != AF_INET && s->sa.sa_family != AF_INET6)
		return AF_UNSPEC;
	return s->sa.sa_family;
}

ssize_t pp_encode_v1(char *buf, size_t len, const union sockname *src,
		     const union sockname *dst)
{
	/* Larger than PP_V1_MAX so an overlong result is seen, not cut. */
	char line[PP_V1_MAX + 32];
	char sip[INET6_ADDRSTRLEN], dip[INET6_ADDRSTRLEN];
	union sockname s, d;
	int fam, n;

	fam = pp_pair(src, dst, &s, &d);
	if (fam == AF_UNSPEC)
		n = snprintf(line, sizeof(line), "PROXY UNKNOWN\r\n");
	else
		n = snprintf(line, sizeof(line), "PROXY %s %s %s %u %u\r\n",
			     fam == AF_INET ? "TCP4" : "TCP6",
			     addr_format_ip(&s, sip, sizeof(sip)),
			     addr_format_ip(&d, dip, sizeof(dip)),
			     (unsigned)addr_port(&s), (unsigned)addr_port(&d));
	if (n < 0 || (size_t)n >= sizeof(line) || (size_t)n > len)
		return -1;
	memcpy(buf, line, (size_t)n);
	return n;
}

static uint8_t *pp_put16(uint8_t *p, size_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
	return p + 2;
}

static uint8_t *pp_put_tlv(uint8_t *p, uint8_t type, const char *val,
			   size_t vlen)
{
	*p++ = type;
	p = pp_put16(p, vlen);
	memcpy(p, val, vlen);
	return p + vlen;
}

/* Value length of the PP2_TYPE_SSL TLV. */
static size_t pp_ssl_len(const struct pp_tls *tls)
{
	size_t n = PP2_SSL_FIXED_LEN;

	if (tls->version != NULL)
		n += PP2_TLV_HDR_LEN + strlen(tls->version);
	if (tls->cipher != NULL)
		n += PP2_TLV_HDR_LEN + strlen(tls->cipher);
	return n;
}

/* Bytes of all TLVs for tls, or 0 when some length does not fit the
 * 16-bit fields (the caller treats that as "does not fit"). */
static size_t pp_tlv_len(const struct pp_tls *tls, size_t *ssl_len)
{
	size_t n;

	/* Each string is at most 16 bits long, so the sums cannot wrap. */
	if ((tls->version != NULL && strlen(tls->version) > UINT16_MAX) ||
	    (tls->cipher != NULL && strlen(tls->cipher) > UINT16_MAX) ||
	    (tls->sni != NULL && strlen(tls->sni) > UINT16_MAX))
		return 0;
	*ssl_len = pp_ssl_len(tls);
	if (*ssl_len > UINT16_MAX)
		return 0;
	n = PP2_TLV_HDR_LEN + *ssl_len;
	if (tls->sni != NULL)
		n += PP2_TLV_HDR_LEN + strlen(tls->sni);
	return n;
}

static uint8_t *pp_put_tls(uint8_t *p, const struct pp_tls *tls,
			   size_t ssl_len)
{
	*p++ = PP2_TYPE_SSL;
	p = pp_put16(p, ssl_len);
	*p++ = PP2_CLIENT_SSL;
	/* verify: 0 = no client certificate problem to report */
	memset(p, 0, 4);
	p += 4;
	if (tls->version != NULL)
		p = pp_put_tlv(p, PP2_SUBTYPE_SSL_VERSION, tls->version,
			       strlen(tls->version));
	if (tls->cipher != NULL)
		p = pp_put_tlv(p, PP2_SUBTYPE_SSL_CIPHER, tls->cipher,
			       strlen(tls->cipher));
	if (tls->sni != NULL)
		p = pp_put_tlv(p, PP2_TYPE_AUTHORITY, tls->sni,
			       strlen(tls->sni));
	return p;
}

ssize_t pp_encode_v2(char *buf, size_t len, const union sockname *src,
		     const union sockname *dst, const struct pp_tls *tls)
{
	uint8_t *p = (uint8_t *)buf;
	union sockname s, d;
	size_t addr_len = 0, tlv_len = 0, ssl_len = 0, total;
	uint8_t cmd = PP_V2_CMD_PROXY, fam_byte = PP_V2_FAM_UNSPEC;
	int fam;

	fam = pp_pair(src, dst, &s, &d);
	if (src == NULL || dst == NULL) {
		/* Our own connection (health check): receiver uses the real
		 * endpoints and ignores everything after the header. */
		cmd = PP_V2_CMD_LOCAL;
	} else if (fam == AF_INET) {
		fam_byte = PP_V2_FAM_TCP4;
		addr_len = PP_V2_LEN_TCP4;
	} else if (fam == AF_INET6) {
		fam_byte = PP_V2_FAM_TCP6;
		addr_len = PP_V2_LEN_TCP6;
	}
	/* TLVs ride only after a real address block: with UNSPEC there is
	 * nothing to attach them to and receivers differ in how they skip. */
	if (tls != NULL && addr_len > 0) {
		tlv_len = pp_tlv_len(tls, &ssl_len);
		if (tlv_len == 0 || addr_len + tlv_len > UINT16_MAX)
			return -1;
	}
	total = PP_V2_HDR_LEN + addr_len + tlv_len;
	if (total > len)
		return -1;

	memcpy(p, pp_v2_sig, sizeof(pp_v2_sig));
	p += sizeof(pp_v2_sig);
	*p++ = cmd;
	*p++ = fam_byte;
	p = pp_put16(p, addr_len + tlv_len);
	/* Addresses are already in network order in the sockaddr. */
	if (fam_byte == PP_V2_FAM_TCP4) {
		memcpy(p, &s.in4.sin_addr, 4);
		memcpy(p + 4, &d.in4.sin_addr, 4);
		memcpy(p + 8, &s.in4.sin_port, 2);
		memcpy(p + 10, &d.in4.sin_port, 2);
		p += PP_V2_LEN_TCP4;
	} else if (fam_byte == PP_V2_FAM_TCP6) {
		memcpy(p, &s.in6.sin6_addr, 16);
		memcpy(p + 16, &d.in6.sin6_addr, 16);
		memcpy(p + 32, &s.in6.sin6_port, 2);
		memcpy(p + 34, &d.in6.sin6_port, 2);
		p += PP_V2_LEN_TCP6;
	}
	if (tlv_len > 0)
		p = pp_put_tls(p, tls, ssl_len);
	return (ssize_t)((char *)p - buf);
}
