/* proxyproto: PROXY protocol v1 (text) and v2 (binary) headers, as in
 * the HAProxy specification "The PROXY protocol, versions 1 & 2". Pure
 * encoders: no I/O. IPv4-mapped IPv6 addresses are sent as IPv4. */
#ifndef SMTPFWD_PROXYPROTO_H
#define SMTPFWD_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "addr.h"

#define PP_V1_MAX 108 /* spec: worst case, CRLF included */
#define PP_V2_MAX 536 /* 16 + 216 (unix) + room for the TLS TLV */

/* Facts about a TLS connection for the PP2_TYPE_SSL TLV. */
struct pp_tls {
	const char *version; /* e.g. "TLSv1.3" */
	const char *cipher; /* e.g. "TLS_AES_256_GCM_SHA384" */
	const char *sni; /* PP2_TYPE_AUTHORITY when non-NULL */
};

/* "PROXY TCP4 src dst sport dport\r\n". src/dst NULL, or of different
 * families: "PROXY UNKNOWN\r\n". Returns the length, or -1 when buf is
 * too small. */
ssize_t pp_encode_v1(char *buf, size_t len, const union sockname *src,
		     const union sockname *dst);

/* The binary header, command PROXY; src/dst NULL gives command LOCAL
 * (family UNSPEC), as health checks send. tls NULL: no TLV. */
ssize_t pp_encode_v2(char *buf, size_t len, const union sockname *src,
		     const union sockname *dst, const struct pp_tls *tls);

#endif
