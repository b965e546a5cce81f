/* tls: one SSL_CTX per certificate. The first is the default; an SNI
 * callback switches a connection to the context whose certificate names
 * the requested host. Settings are the same on every context. */
#include "tls.h"

#include <ctype.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TLS_MAX_CERTS 16

struct tls_ctx {
	SSL_CTX *ctx[TLS_MAX_CERTS];
	X509 *cert[TLS_MAX_CERTS]; /* borrowed from ctx, for SNI matching */
	size_t n;
};

void tls_error_string(char *buf, size_t len)
{
	unsigned long e, last = 0;

	while ((e = ERR_get_error()) != 0)
		last = e;
	if (last == 0)
		snprintf(buf, len, "unknown TLS error");
	else
		ERR_error_string_n(last, buf, len);
}

/* Split "a, b,c" in place into at most max trimmed items. */
static size_t tls_split(char *s, char **out, size_t max)
{
	size_t n = 0;
	char *tok, *save = NULL;

	for (tok = strtok_r(s, ",", &save); tok != NULL && n < max;
	     tok = strtok_r(NULL, ",", &save)) {
		char *end;

		while (isspace((unsigned char)*tok))
			tok++;
		end = tok + strlen(tok);
		while (end > tok && isspace((unsigned char)end[-1]))
			*--end = '\0';
		if (*tok != '\0')
			out[n++] = tok;
	}
	return n;
}

static int tls_parse_min_version(const char *protocols, int *min)
{
	static const struct {
		const char *name;
		int version;
	} names[] = {
		{ "TLSv1.2", TLS1_2_VERSION },
		{ "TLSv1.3", TLS1_3_VERSION },
	};
	char copy[128], *items[8];
	size_t n, i, j;

	*min = TLS1_2_VERSION;
	if (protocols == NULL)
		return 0;
	snprintf(copy, sizeof(copy), "%s", protocols);
	n = tls_split(copy, items, 8);
	if (n == 0)
		return -1;
	*min = TLS1_3_VERSION + 1;
	for (i = 0; i < n; i++) {
		for (j = 0; j < 2; j++)
			if (strcasecmp(items[i], names[j].name) == 0)
				break;
		if (j == 2)
			return -1; /* older versions are not offered at all */
		if (names[j].version < *min)
			*min = names[j].version;
	}
	return 0;
}

static int tls_sni_cb(SSL *ssl, int *alert, void *arg)
{
	struct tls_ctx *t = arg;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	size_t i;

	(void)alert;
	if (name == NULL)
		return SSL_TLSEXT_ERR_OK;
	for (i = 1; i < t->n; i++) {
		if (X509_check_host(t->cert[i], name, 0, 0, NULL) == 1) {
			SSL_set_SSL_CTX(ssl, t->ctx[i]);
			break;
		}
	}
	/* No match: stay on the default certificate; the client decides. */
	return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *tls_ctx_one(const char *cert, const char *key, int min,
			    const char *ciphers, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	char why[200];

	if (ctx == NULL) {
		tls_error_string(why, sizeof(why));
		snprintf(err, errlen, "cannot create a TLS context: %s", why);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, min);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION |
					 SSL_OP_NO_RENEGOTIATION |
					 SSL_OP_CIPHER_SERVER_PREFERENCE |
					 SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* Partial writes suit the pump; released buffers keep idle TLS
	 * sessions small. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
				      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
				      SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"smtpfwd", 7);
	if (ciphers != NULL && SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
		tls_error_string(why, sizeof(why));
		snprintf(err, errlen, "tls_ciphers \"%s\": %s", ciphers, why);
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		tls_error_string(why, sizeof(why));
		snprintf(err, errlen, "tls_cert %s: %s", cert, why);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		tls_error_string(why, sizeof(why));
		snprintf(err, errlen, "tls_key %s: %s", key, why);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		tls_error_string(why, sizeof(why));
		snprintf(err, errlen, "tls_key %s does not match tls_cert %s: %s",
			 key, cert, why);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

struct tls_ctx *tls_ctx_new(const char *certs, const char *keys,
			    const char *protocols, const char *ciphers,
			    char *err, size_t errlen)
{
	char cbuf[4096], kbuf[4096], *cv[TLS_MAX_CERTS], *kv[TLS_MAX_CERTS];
	size_t nc, nk, i;
	struct tls_ctx *t;
	int min;

	if (certs == NULL || keys == NULL) {
		snprintf(err, errlen, "tls_cert and tls_key are required");
		return NULL;
	}
	if (tls_parse_min_version(protocols, &min) == -1) {
		snprintf(err, errlen,
			 "tls_protocols \"%s\": use TLSv1.2 and/or TLSv1.3",
			 protocols);
		return NULL;
	}
	snprintf(cbuf, sizeof(cbuf), "%s", certs);
	snprintf(kbuf, sizeof(kbuf), "%s", keys);
	nc = tls_split(cbuf, cv, TLS_MAX_CERTS);
	nk = tls_split(kbuf, kv, TLS_MAX_CERTS);
	if (nc == 0 || nc != nk) {
		snprintf(err, errlen,
			 "tls_cert and tls_key must list the same number of files (%zu and %zu)",
			 nc, nk);
		return NULL;
	}
	t = calloc(1, sizeof(*t));
	if (t == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	for (i = 0; i < nc; i++) {
		t->ctx[i] = tls_ctx_one(cv[i], kv[i], min, ciphers, err, errlen);
		if (t->ctx[i] == NULL) {
			tls_ctx_free(t);
			return NULL;
		}
		t->n++;
		t->cert[i] = SSL_CTX_get0_certificate(t->ctx[i]);
	}
	if (t->n > 1) {
		SSL_CTX_set_tlsext_servername_callback(t->ctx[0], tls_sni_cb);
		SSL_CTX_set_tlsext_servername_arg(t->ctx[0], t);
	}
	return t;
}

void tls_ctx_free(struct tls_ctx *t)
{
	size_t i;

	if (t == NULL)
		return;
	for (i = 0; i < t->n; i++)
		SSL_CTX_free(t->ctx[i]);
	free(t);
}

SSL *tls_new(struct tls_ctx *t, int fd)
{
	SSL *ssl = SSL_new(t->ctx[0]);

	if (ssl == NULL)
		return NULL;
	if (SSL_set_fd(ssl, fd) != 1) {
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_accept_state(ssl);
	return ssl;
}

int tls_handshake(SSL *ssl, int *want, char *err, size_t errlen)
{
	int rc = SSL_do_handshake(ssl);

	if (rc == 1)
		return 0;
	switch (SSL_get_error(ssl, rc)) {
	case SSL_ERROR_WANT_READ:
		*want = TLS_WANT_READ;
		return 1;
	case SSL_ERROR_WANT_WRITE:
		*want = TLS_WANT_WRITE;
		return 1;
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() == 0) {
			snprintf(err, errlen, "the client ended the connection during the handshake");
			return -1;
		}
		/* fall through */
	default:
		if (ERR_peek_error() == 0) {
			snprintf(err, errlen, "the client ended the connection during the handshake");
			return -1;
		}
		tls_error_string(err, errlen);
		return -1;
	}
}

const char *tls_version(const SSL *ssl)
{
	return SSL_get_version(ssl);
}

const char *tls_cipher(const SSL *ssl)
{
	return SSL_get_cipher_name(ssl);
}

const char *tls_sni(const SSL *ssl)
{
	return SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
}
