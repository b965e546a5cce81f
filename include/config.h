/* config: the INI file (parsed with inih) turned into a validated,
 * immutable struct. Nothing here opens sockets; the only I/O is reading
 * the file and checking that certificate files are readable. */
#ifndef SMTPFWD_CONFIG_H
#define SMTPFWD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "acl.h"
#include "addr.h"

#define CONFIG_DEFAULT_PATH "/etc/smtpfwd/smtpfwd.ini"

enum log_level { LOG_LVL_ERROR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };
enum log_format { LOG_FMT_TEXT, LOG_FMT_JSON };
enum proxy_version { PROXY_OFF, PROXY_V1, PROXY_V2 };
enum tls_mode { TLS_OFF, TLS_IMPLICIT, TLS_STARTTLS };
/* How the backend learns who the client is (client_identity). */
enum client_identity {
	IDENT_UNSET, /* only while parsing */
	IDENT_NONE,
	IDENT_PROXY_V1,
	IDENT_PROXY_V2,
	IDENT_XCLIENT,
};

struct listen_cfg {
	union sockname sa;
	char text[ADDR_STRLEN]; /* as written, for logs */
	int line;
};

struct backend_cfg {
	struct endpoint ep; /* literal address, or hostname to resolve */
	char text[ADDR_HOSTLEN + 8];
	int line;
};

struct forward_cfg {
	char *name;
	int line;
	struct listen_cfg *listen;
	size_t nlisten;
	struct backend_cfg *backend;
	size_t nbackend;
	struct acl acl;
	unsigned max_per_ip;
	double connect_timeout;
	double idle_timeout;
	enum proxy_version proxy_protocol;
	enum tls_mode tls;
	char *tls_cert;
	char *tls_key;
	char *tls_protocols; /* NULL: TLSv1.2 minimum */
	char *tls_ciphers; /* NULL: OpenSSL's defaults */
	bool tls_required;
	bool log_greeting;
	bool reject_early_talkers;
	enum client_identity identity; /* never IDENT_UNSET once loaded */
	int identity_line; /* where client_identity was set, 0 if not */
	bool identity_defaulted; /* neither key set: none, with a warning */
	int proxy_line; /* where proxy_protocol was set, 0 if not */
};

struct config {
	char *path;
	char *user;
	char *group; /* NULL: the user's primary group */
	enum log_level log_level;
	enum log_format log_format;
	bool syslog;
	unsigned max_connections;
	unsigned workers;
	double shutdown_timeout;
	double health_interval; /* SMTP health checks per backend; 0 = off */
	bool has_stats_listen;
	struct listen_cfg stats_listen;
	struct forward_cfg *fwd;
	size_t nfwd;
	unsigned refs; /* config_ref()/config_unref(); starts at 1 */
};

/* Messages found while loading: one "FILE:LINE: message" line each. */
struct config_diag {
	char *text; /* NUL-terminated, newline after each message */
	size_t len;
	size_t cap;
	unsigned errors;
	unsigned warnings;
};

/* Read and validate a file. Returns NULL when any error was found; every
 * error and warning is appended to diag. */
struct config *config_load(const char *path, struct config_diag *diag);

/* The same from a string (name is used in messages), for tests. */
struct config *config_parse_string(const char *text, const char *name,
				   struct config_diag *diag);

/* A configuration from command-line pairs (quick mode): one forward
 * per pair, all with identity id (IDENT_UNSET: not given). */
struct config *config_from_args(const char *const *listen, size_t nlisten,
				const char *const *backend, size_t nbackend,
				enum client_identity id, struct config_diag *diag);

struct config *config_ref(struct config *cfg);
/* Drop a reference; the last one frees everything. */
void config_unref(struct config *cfg);
void config_diag_free(struct config_diag *diag);

/* Parse "30", "30s", "5m", "1h", "0.5". Returns 0 or -1. */
int config_parse_duration(const char *text, double *out);

const struct forward_cfg *config_find_forward(const struct config *cfg,
					      const char *name);

const char *config_proxy_str(enum proxy_version v);
const char *config_tls_str(enum tls_mode m);
const char *config_identity_str(enum client_identity id);

#endif
