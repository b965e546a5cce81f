/* tls: OpenSSL server contexts for a forward (certificates, versions,
 * ciphers, SNI) and the facts about a finished handshake that the log
 * and the PROXY v2 TLV need. */
#ifndef SMTPFWD_TLS_H
#define SMTPFWD_TLS_H

#include <stddef.h>

struct ssl_st;
struct tls_ctx;

/* certs and keys: comma-separated lists of the same length; the first
 * pair is the default, the others are chosen by SNI. protocols: NULL or
 * e.g. "TLSv1.3" (the lowest listed becomes the minimum; default
 * TLSv1.2). ciphers: NULL or an OpenSSL cipher list for TLS 1.2.
 * Returns NULL with a message in err. */
struct tls_ctx *tls_ctx_new(const char *certs, const char *keys,
			    const char *protocols, const char *ciphers,
			    char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx *t);

/* A server-side SSL for an accepted socket, or NULL. */
struct ssl_st *tls_new(struct tls_ctx *t, int fd);

enum tls_want { TLS_WANT_READ = 1, TLS_WANT_WRITE = 2 };

/* One step of the handshake: 0 done, 1 call again once *want (enum
 * tls_want) is possible, -1 failed with OpenSSL's reason in err. */
int tls_handshake(struct ssl_st *ssl, int *want, char *err, size_t errlen);

const char *tls_version(const struct ssl_st *ssl);
const char *tls_cipher(const struct ssl_st *ssl);
/* The server name the client asked for, or NULL. */
const char *tls_sni(const struct ssl_st *ssl);

/* OpenSSL's reason for the last error on this thread (and clears it). */
void tls_error_string(char *buf, size_t len);

#endif
