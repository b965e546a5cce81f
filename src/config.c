/* config: INI -> validated, immutable struct config.
 *
 * inih does the INI syntax; its handler gets no line numbers in Debian's
 * build, so we feed it through our own reader, which counts physical
 * lines, notices section headers (inih reports none for an empty
 * section), continuation lines, over-long lines and lines inih rejected
 * without calling us. Every problem becomes one "FILE:LINE: message". */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONFIG_MAX_LINE 200 /* INI_MAX_LINE in Debian's inih */

enum config_section { SEC_NONE, SEC_GLOBAL, SEC_FORWARD, SEC_BAD };

struct config_parse {
	const char *name;
	struct config_diag *diag;
	struct config *cfg;
	/* source: a FILE or a string */
	FILE *fp;
	const char *str;
	/* the physical line inih is working on */
	int lineno;
	bool content; /* looks like "key = value" (or a continuation) */
	bool continuation; /* inih passes it on as more of the last value */
	bool have_prev; /* inih has a previous key to continue (prev_name) */
	bool handled; /* the handler ran for it */
	bool replaced; /* we gave inih a blank line instead */
	/* section state */
	enum config_section sec;
	size_t fwd; /* index into cfg->fwd while sec == SEC_FORWARD */
	bool global_seen;
	/* keys seen in the current section, by table index */
	uint64_t seen;
	int last_key; /* table index of the last key, for continuations */
};

static void config_diag_add(struct config_diag *d, bool error,
			    const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Append n bytes and a newline. */
static void config_diag_put(struct config_diag *d, const char *msg, size_t n)
{
	if (d->len + n + 2 > d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 1024;
		char *t;

		while (cap < d->len + n + 2)
			cap *= 2;
		t = realloc(d->text, cap);
		if (t == NULL)
			return;
		d->text = t;
		d->cap = cap;
	}
	memcpy(d->text + d->len, msg, n);
	d->len += n;
	d->text[d->len++] = '\n';
	d->text[d->len] = '\0';
}

static void config_diag_add(struct config_diag *d, bool error,
			    const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	config_diag_put(d, msg, (size_t)n);
	if (error)
		d->errors++;
	else
		d->warnings++;
}

#define config_error(p, line, ...) \
	config_diag_add((p)->diag, true, "%s:%d: " __VA_ARGS__)
#define config_warn(p, line, ...) \
	config_diag_add((p)->diag, false, "%s:%d: warning: " __VA_ARGS__)

void config_diag_free(struct config_diag *d)
{
	free(d->text);
	memset(d, 0, sizeof(*d));
}

int config_parse_duration(const char *text, double *out)
{
	const char *s = text;
	char *end;
	double v, mult = 1;

	/* Plain decimal only: strtod alone would also take "0x1p4", "1e3",
	 * "5." or "inf". */
	if (!isdigit((unsigned char)*s))
		return -1;
	while (isdigit((unsigned char)*s))
		s++;
	if (*s == '.') {
		s++;
		if (!isdigit((unsigned char)*s))
			return -1;
		while (isdigit((unsigned char)*s))
			s++;
	}
	errno = 0;
	v = strtod(text, &end);
	if (errno != 0 || end != s)
		return -1;
	if (*end == 's')
		end++;
	else if (*end == 'm')
		mult = 60, end++;
	else if (*end == 'h')
		mult = 3600, end++;
	if (*end != '\0' || !isfinite(v))
		return -1;
	v *= mult;
	if (v > 365.0 * 86400)
		return -1;
	*out = v;
	return 0;
}

static int config_parse_uint(const char *text, unsigned min, unsigned max,
			     unsigned *out)
{
	char *end;
	unsigned long v;

	if (!isdigit((unsigned char)text[0]))
		return -1;
	errno = 0;
	v = strtoul(text, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = (unsigned)v;
	return 0;
}

static int config_parse_bool(const char *text, bool *out)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(text, yes[i]) == 0)
			return *out = true, 0;
		if (strcasecmp(text, no[i]) == 0)
			return *out = false, 0;
	}
	return -1;
}

/* Index of text in a NULL-terminated list of names, or -1. */
static int config_parse_enum(const char *text, const char *const *names)
{
	for (int i = 0; names[i]; i++)
		if (strcasecmp(text, names[i]) == 0)
			return i;
	return -1;
}

static const char *const config_level_names[] = { "error", "warn", "info",
						   "debug", NULL };
static const char *const config_format_names[] = { "text", "json", NULL };
static const char *const config_proxy_names[] = { "off", "v1", "v2", NULL };
/* Index = enum client_identity; "(unset)" cannot be typed in a value. */
static const char *const config_identity_names[] = {
	"(unset)", "none", "proxy-v1", "proxy-v2", "xclient", NULL
};

const char *config_identity_str(enum client_identity id)
{
	return config_identity_names[id];
}
static const char *const config_tls_names[] = { "off", "implicit",
						 "starttls", NULL };

const char *config_proxy_str(enum proxy_version v)
{
	return config_proxy_names[v];
}

const char *config_tls_str(enum tls_mode m)
{
	return config_tls_names[m];
}

/* Split a comma-separated list in place; calls fn for each trimmed item.
 * Empty items are errors, except after a trailing comma: the list may go
 * on in a continuation line ("listen = a,\n    b"). */
static void config_each_item(struct config_parse *p, const char *key,
			     char *list,
			     void (*fn)(struct config_parse *, const char *))
{
	char *item = list;

	if (*list == '\0') {
		config_error(p, p->lineno, "%s: empty list", p->name, p->lineno,
			     key);
		return;
	}
	for (;;) {
		char *comma = strchr(item, ',');
		char *end = comma ? comma : item + strlen(item);
		bool last = comma == NULL;

		*end = '\0';
		while (isspace((unsigned char)*item))
			item++;
		while (end > item && isspace((unsigned char)end[-1]))
			*--end = '\0';
		if (*item != '\0')
			fn(p, item);
		else if (!last || item == list)
			config_error(p, p->lineno, "%s: empty list item",
				     p->name, p->lineno, key);
		if (last)
			break;
		item = comma + 1;
	}
}

static struct forward_cfg *config_cur_fwd(struct config_parse *p)
{
	return &p->cfg->fwd[p->fwd];
}

static void *config_grow(void *arr, size_t n, size_t size)
{
	/* Grow by doubling at powers of two; n is the current count. */
	if (n == 0 || (n & (n - 1)) == 0)
		return realloc(arr, (n ? n * 2 : 1) * size);
	return arr;
}

static void config_add_listen(struct config_parse *p, const char *item)
{
	struct forward_cfg *f = config_cur_fwd(p);
	struct listen_cfg *l;
	struct endpoint ep;
	const char *why;

	if (addr_parse_endpoint(item, 0, &ep, &why) == -1) {
		config_error(p, p->lineno, "listen %s: %s", p->name, p->lineno,
			     item, why);
		return;
	}
	l = config_grow(f->listen, f->nlisten, sizeof(*l));
	if (l == NULL) {
		config_error(p, p->lineno, "out of memory", p->name, p->lineno);
		return;
	}
	f->listen = l;
	l = &f->listen[f->nlisten++];
	memset(l, 0, sizeof(*l));
	l->sa = ep.sa;
	l->line = p->lineno;
	addr_format(&ep.sa, l->text, sizeof(l->text));
}

static void config_add_backend(struct config_parse *p, const char *item)
{
	struct forward_cfg *f = config_cur_fwd(p);
	struct backend_cfg *b;
	struct endpoint ep;
	const char *why;

	if (addr_parse_endpoint(item, ADDR_ALLOW_HOSTNAME, &ep, &why) == -1) {
		config_error(p, p->lineno, "backend %s: %s", p->name,
			     p->lineno, item, why);
		return;
	}
	b = config_grow(f->backend, f->nbackend, sizeof(*b));
	if (b == NULL) {
		config_error(p, p->lineno, "out of memory", p->name, p->lineno);
		return;
	}
	f->backend = b;
	b = &f->backend[f->nbackend++];
	memset(b, 0, sizeof(*b));
	b->ep = ep;
	b->line = p->lineno;
	if (ep.literal)
		addr_format(&ep.sa, b->text, sizeof(b->text));
	else
		snprintf(b->text, sizeof(b->text), "%s:%u", ep.host, ep.port);
}

static void config_add_cidr(struct config_parse *p, const char *item,
			    struct cidr **list, size_t *n, const char *key)
{
	struct cidr c, *l;

	switch (acl_parse_cidr(item, &c)) {
	case ACL_PARSE_BAD:
		config_error(p, p->lineno, "%s %s: bad CIDR (expected e.g. 192.0.2.0/24 or 2001:db8::/32)",
			     p->name, p->lineno, key, item);
		return;
	case ACL_PARSE_HOSTBITS:
		config_warn(p, p->lineno, "%s %s: address bits beyond the prefix length are ignored",
			    p->name, p->lineno, key, item);
		break;
	case ACL_PARSE_OK:
		break;
	}
	l = config_grow(*list, *n, sizeof(*l));
	if (l == NULL) {
		config_error(p, p->lineno, "out of memory", p->name, p->lineno);
		return;
	}
	*list = l;
	l[(*n)++] = c;
}

static void config_add_allow(struct config_parse *p, const char *item)
{
	struct acl *a = &config_cur_fwd(p)->acl;

	a->has_allow = true;
	config_add_cidr(p, item, &a->allow, &a->nallow, "allow");
}

static void config_add_deny(struct config_parse *p, const char *item)
{
	struct acl *a = &config_cur_fwd(p)->acl;

	config_add_cidr(p, item, &a->deny, &a->ndeny, "deny");
}

/* Key handlers: value is a private, writable copy. */
typedef void config_key_fn(struct config_parse *p, const char *key,
			   char *value);

static void config_bad_value(struct config_parse *p, const char *key,
			     const char *value, const char *expect)
{
	config_error(p, p->lineno, "%s = %s: expected %s", p->name, p->lineno,
		     key, value, expect);
}

static void config_set_string(char **dst, const char *value)
{
	free(*dst);
	*dst = strdup(value);
}

#define CONFIG_ENUM_KEY(fname, names, expr, expect)                          \
	static void fname(struct config_parse *p, const char *key, char *v) \
	{                                                                    \
		int i = config_parse_enum(v, names);                        \
		if (i == -1)                                                 \
			config_bad_value(p, key, v, expect);                 \
		else                                                         \
			expr = i;                                            \
	}

CONFIG_ENUM_KEY(config_key_log_level, config_level_names,
		p->cfg->log_level, "error, warn, info or debug")
CONFIG_ENUM_KEY(config_key_log_format, config_format_names,
		p->cfg->log_format, "text or json")
static void config_key_proxy(struct config_parse *p, const char *key, char *v)
{
	int i = config_parse_enum(v, config_proxy_names);

	if (i == -1) {
		config_bad_value(p, key, v, "off, v1 or v2");
		return;
	}
	config_cur_fwd(p)->proxy_protocol = (enum proxy_version)i;
	config_cur_fwd(p)->proxy_line = p->lineno;
}

static void config_key_identity(struct config_parse *p, const char *key,
				char *v)
{
	int i = config_parse_enum(v, config_identity_names);

	if (i <= 0) {
		config_bad_value(p, key, v, "none, proxy-v1, proxy-v2 or xclient");
		return;
	}
	config_cur_fwd(p)->identity = (enum client_identity)i;
	config_cur_fwd(p)->identity_line = p->lineno;
}
CONFIG_ENUM_KEY(config_key_tls, config_tls_names, config_cur_fwd(p)->tls,
		"off, implicit or starttls")

#define CONFIG_BOOL_KEY(fname, dst)                                          \
	static void fname(struct config_parse *p, const char *key, char *v) \
	{                                                                    \
		if (config_parse_bool(v, &(dst)) == -1)                      \
			config_bad_value(p, key, v, "yes or no");            \
	}

CONFIG_BOOL_KEY(config_key_syslog, p->cfg->syslog)
CONFIG_BOOL_KEY(config_key_tls_required, config_cur_fwd(p)->tls_required)
CONFIG_BOOL_KEY(config_key_log_greeting, config_cur_fwd(p)->log_greeting)
CONFIG_BOOL_KEY(config_key_early, config_cur_fwd(p)->reject_early_talkers)

#define CONFIG_UINT_KEY(fname, dst, min, max)                                \
	static void fname(struct config_parse *p, const char *key, char *v) \
	{                                                                    \
		unsigned u;                                                  \
		if (config_parse_uint(v, min, max, &u) == -1)                \
			config_bad_value(p, key, v,                          \
					 "a whole number from " #min " to " #max); \
		else                                                         \
			dst = u;                                             \
	}

CONFIG_UINT_KEY(config_key_max_conn, p->cfg->max_connections, 1, 1000000)
CONFIG_UINT_KEY(config_key_workers, p->cfg->workers, 0, 256)
CONFIG_UINT_KEY(config_key_max_per_ip, config_cur_fwd(p)->max_per_ip, 0,
		1000000)

#define CONFIG_TIME_KEY(fname, dst, positive)                                \
	static void fname(struct config_parse *p, const char *key, char *v) \
	{                                                                    \
		double d;                                                    \
		if (config_parse_duration(v, &d) == -1 ||                    \
		    ((positive) && d <= 0))                                  \
			config_bad_value(p, key, v,                          \
					 (positive) ? "a time above 0 (seconds, or with s/m/h)" \
						    : "a time (seconds, or with s/m/h)"); \
		else                                                         \
			dst = d;                                             \
	}

CONFIG_TIME_KEY(config_key_shutdown, p->cfg->shutdown_timeout, false)
CONFIG_TIME_KEY(config_key_health, p->cfg->health_interval, false)
CONFIG_TIME_KEY(config_key_connect_timeout, config_cur_fwd(p)->connect_timeout,
		true)
CONFIG_TIME_KEY(config_key_idle_timeout, config_cur_fwd(p)->idle_timeout, true)

static void config_key_user(struct config_parse *p, const char *key, char *v)
{
	if (*v == '\0') {
		config_bad_value(p, key, v, "a user name");
		return;
	}
	config_set_string(&p->cfg->user, v);
}

static void config_key_group(struct config_parse *p, const char *key, char *v)
{
	if (*v == '\0') {
		config_bad_value(p, key, v, "a group name");
		return;
	}
	config_set_string(&p->cfg->group, v);
}

static void config_key_stats(struct config_parse *p, const char *key, char *v)
{
	struct endpoint ep;
	const char *why;

	if (addr_parse_endpoint(v, 0, &ep, &why) == -1) {
		config_error(p, p->lineno, "%s %s: %s", p->name, p->lineno, key,
			     v, why);
		return;
	}
	p->cfg->has_stats_listen = true;
	p->cfg->stats_listen.sa = ep.sa;
	p->cfg->stats_listen.line = p->lineno;
	addr_format(&ep.sa, p->cfg->stats_listen.text,
		    sizeof(p->cfg->stats_listen.text));
}

static void config_key_listen(struct config_parse *p, const char *key, char *v)
{
	config_each_item(p, key, v, config_add_listen);
}

static void config_key_backend(struct config_parse *p, const char *key, char *v)
{
	config_each_item(p, key, v, config_add_backend);
}

static void config_key_allow(struct config_parse *p, const char *key, char *v)
{
	config_each_item(p, key, v, config_add_allow);
}

static void config_key_deny(struct config_parse *p, const char *key, char *v)
{
	config_each_item(p, key, v, config_add_deny);
}

static void config_key_tls_cert(struct config_parse *p, const char *key,
				char *v)
{
	(void)key;
	config_set_string(&config_cur_fwd(p)->tls_cert, v);
}

static void config_key_tls_key(struct config_parse *p, const char *key,
			       char *v)
{
	(void)key;
	config_set_string(&config_cur_fwd(p)->tls_key, v);
}

static void config_key_tls_protocols(struct config_parse *p, const char *key,
				     char *v)
{
	(void)key;
	config_set_string(&config_cur_fwd(p)->tls_protocols, v);
}

static void config_key_tls_ciphers(struct config_parse *p, const char *key,
				   char *v)
{
	(void)key;
	config_set_string(&config_cur_fwd(p)->tls_ciphers, v);
}

struct config_key {
	enum config_section sec;
	const char *name;
	config_key_fn *fn;
	bool list; /* may continue on following lines */
};

static const struct config_key config_keys[] = {
	{ SEC_GLOBAL, "user", config_key_user, false },
	{ SEC_GLOBAL, "group", config_key_group, false },
	{ SEC_GLOBAL, "log_level", config_key_log_level, false },
	{ SEC_GLOBAL, "log_format", config_key_log_format, false },
	{ SEC_GLOBAL, "syslog", config_key_syslog, false },
	{ SEC_GLOBAL, "max_connections", config_key_max_conn, false },
	{ SEC_GLOBAL, "workers", config_key_workers, false },
	{ SEC_GLOBAL, "shutdown_timeout", config_key_shutdown, false },
	{ SEC_GLOBAL, "health_interval", config_key_health, false },
	{ SEC_GLOBAL, "stats_listen", config_key_stats, false },
	{ SEC_FORWARD, "listen", config_key_listen, true },
	{ SEC_FORWARD, "backend", config_key_backend, true },
	{ SEC_FORWARD, "allow", config_key_allow, true },
	{ SEC_FORWARD, "deny", config_key_deny, true },
	{ SEC_FORWARD, "max_per_ip", config_key_max_per_ip, false },
	{ SEC_FORWARD, "connect_timeout", config_key_connect_timeout, false },
	{ SEC_FORWARD, "idle_timeout", config_key_idle_timeout, false },
	{ SEC_FORWARD, "proxy_protocol", config_key_proxy, false },
	{ SEC_FORWARD, "client_identity", config_key_identity, false },
	{ SEC_FORWARD, "tls", config_key_tls, false },
	{ SEC_FORWARD, "tls_cert", config_key_tls_cert, false },
	{ SEC_FORWARD, "tls_key", config_key_tls_key, false },
	{ SEC_FORWARD, "tls_protocols", config_key_tls_protocols, false },
	{ SEC_FORWARD, "tls_ciphers", config_key_tls_ciphers, false },
	{ SEC_FORWARD, "tls_required", config_key_tls_required, false },
	{ SEC_FORWARD, "log_greeting", config_key_log_greeting, false },
	{ SEC_FORWARD, "reject_early_talkers", config_key_early, false },
};

/* struct config_parse.seen has a bit per key. */
_Static_assert(sizeof(config_keys) / sizeof(config_keys[0]) <= 64,
	       "config_parse.seen is a 64-bit mask");

static void config_forward_defaults(struct forward_cfg *f)
{
	memset(f, 0, sizeof(*f));
	f->connect_timeout = 10;
	f->idle_timeout = 600;
	f->log_greeting = true;
}

static bool config_name_ok(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' &&
		    *s != '.')
			return false;
	return true;
}

/* A section header line, seen by the reader before inih parses it. */
static void config_section_start(struct config_parse *p, const char *line)
{
	const char *close = strchr(line, ']');
	char name[128];
	size_t n;

	p->seen = 0;
	p->last_key = -1;
	p->sec = SEC_BAD;
	if (close == NULL)
		return; /* inih reports it; see config_reader_check() */
	n = (size_t)(close - line - 1);
	if (n >= sizeof(name)) {
		config_error(p, p->lineno, "section name too long", p->name,
			     p->lineno);
		return;
	}
	memcpy(name, line + 1, n);
	name[n] = '\0';
	if (strcmp(name, "global") == 0) {
		if (p->global_seen)
			config_error(p, p->lineno, "duplicate [global] section",
				     p->name, p->lineno);
		p->global_seen = true;
		p->sec = SEC_GLOBAL;
		return;
	}
	if (strncmp(name, "forward", 7) == 0 && isspace((unsigned char)name[7])) {
		const char *fname = name + 8;
		struct forward_cfg *arr;
		char *fn;

		while (isspace((unsigned char)*fname))
			fname++;
		if (!config_name_ok(fname)) {
			config_error(p, p->lineno, "[%s]: forward names use letters, digits, '_', '-' and '.'",
				     p->name, p->lineno, name);
			return;
		}
		for (size_t i = 0; i < p->cfg->nfwd; i++)
			if (strcmp(p->cfg->fwd[i].name, fname) == 0) {
				config_error(p, p->lineno, "duplicate [forward %s] (first at line %d)",
					     p->name, p->lineno, fname,
					     p->cfg->fwd[i].line);
				return;
			}
		arr = config_grow(p->cfg->fwd, p->cfg->nfwd, sizeof(*arr));
		fn = strdup(fname);
		if (arr == NULL || fn == NULL) {
			free(fn);
			if (arr != NULL)
				p->cfg->fwd = arr;
			config_error(p, p->lineno, "out of memory", p->name,
				     p->lineno);
			return;
		}
		p->cfg->fwd = arr;
		p->fwd = p->cfg->nfwd++;
		config_forward_defaults(&arr[p->fwd]);
		arr[p->fwd].name = fn;
		arr[p->fwd].line = p->lineno;
		p->sec = SEC_FORWARD;
		return;
	}
	config_error(p, p->lineno, "unknown section [%s] (expected [global] or [forward NAME])",
		     p->name, p->lineno, name);
}

static int config_handler(void *user, const char *section, const char *name,
			  const char *value)
{
	struct config_parse *p = user;
	char *copy;
	size_t i;

	(void)section; /* tracked by the reader, which also sees empty ones */
	p->handled = true;
	if (!p->continuation)
		p->have_prev = name[0] != '\0'; /* inih's prev_name */
	if (p->sec == SEC_BAD)
		return 1; /* the section header was reported */
	if (p->sec == SEC_NONE) {
		if (!p->continuation) /* its key line was reported */
			config_error(p, p->lineno, "%s: key outside a section",
				     p->name, p->lineno, name);
		return 1;
	}
	for (i = 0; i < sizeof(config_keys) / sizeof(config_keys[0]); i++)
		if (config_keys[i].sec == p->sec &&
		    strcmp(config_keys[i].name, name) == 0)
			break;
	if (i == sizeof(config_keys) / sizeof(config_keys[0])) {
		if (!p->continuation) /* its key line was reported */
			config_error(p, p->lineno, "unknown key '%s' in [%s]",
				     p->name, p->lineno, name,
				     p->sec == SEC_GLOBAL ? "global" :
							    "forward");
		return 1;
	}
	if (p->continuation && strchr(value, '=') != NULL) {
		/* No list item has '=' in it: an indented key. */
		config_error(p, p->lineno, "a line starting with white space continues '%s'; start a key at the beginning of the line",
			     p->name, p->lineno, name);
		return 1;
	}
	if (p->continuation) {
		if (!config_keys[i].list || p->last_key != (int)i) {
			config_error(p, p->lineno, "%s: a line starting with white space continues a list; %s is not one",
				     p->name, p->lineno, name, name);
			return 1;
		}
	} else if (p->seen & (1ull << i)) {
		config_error(p, p->lineno, "duplicate key '%s'", p->name,
			     p->lineno, name);
		return 1;
	}
	p->seen |= 1ull << i;
	p->last_key = (int)i;
	/* inih's strings do not outlive the call: work on a copy. */
	copy = strdup(value);
	if (copy == NULL) {
		config_error(p, p->lineno, "out of memory", p->name, p->lineno);
		return 1;
	}
	config_keys[i].fn(p, name, copy);
	free(copy);
	return 1;
}

/* inih skipped the previous line without calling us: a syntax error.
 * Runs once per line (before the next one is read, and after the last). */
static void config_reader_check(struct config_parse *p)
{
	if (p->content && !p->handled && !p->replaced)
		config_error(p, p->lineno, "syntax error (expected key = value)",
			     p->name, p->lineno);
	p->content = false;
}

/* One physical line, without its line end, into *line (NUL-terminated);
 * *len is its length. False at the end of the input. */
static bool config_read_line(struct config_parse *p, char **line, size_t *cap,
			     size_t *len)
{
	size_t n;

	if (p->fp != NULL) {
		ssize_t r = getline(line, cap, p->fp);

		if (r == -1)
			return false;
		n = (size_t)r;
	} else {
		const char *nl;

		if (p->str == NULL || *p->str == '\0')
			return false;
		nl = strchr(p->str, '\n');
		n = nl ? (size_t)(nl - p->str + 1) : strlen(p->str);
		if (*cap < n + 1) {
			char *t = realloc(*line, n + 1);

			if (t == NULL)
				return false;
			*line = t;
			*cap = n + 1;
		}
		memcpy(*line, p->str, n);
		(*line)[n] = '\0';
		p->str += n;
	}
	if (n > 0 && (*line)[n - 1] == '\n')
		n--;
	if (n > 0 && (*line)[n - 1] == '\r')
		n--;
	(*line)[n] = '\0';
	*len = n;
	return true;
}

/* A blank line for inih in place of one we reported and dropped. */
static char *config_reader_blank(struct config_parse *p, char *out, int num)
{
	p->replaced = true;
	snprintf(out, (size_t)num, "\n");
	return out;
}

/* inih's reader: hands it one whole physical line per call, so its line
 * count and ours agree, and notes what inih will do with the line. */
static char *config_reader(char *out, int num, void *stream)
{
	struct config_parse *p = stream;
	char *line = NULL, *start, *s;
	size_t cap = 0, len;

	config_reader_check(p);
	if (!config_read_line(p, &line, &cap, &len)) {
		free(line);
		return NULL;
	}
	p->lineno++;
	p->handled = p->replaced = p->continuation = false;
	start = line;
	/* A UTF-8 byte order mark: drop it here so that a section header
	 * right after it is seen as one. */
	if (p->lineno == 1 && len >= 3 && memcmp(start, "\xEF\xBB\xBF", 3) == 0) {
		start += 3;
		len -= 3;
	}
	for (s = start; isspace((unsigned char)*s); s++)
		;
	/* Room for the line, its '\n' and a NUL. */
	if (len > (size_t)num - 2) {
		config_error(p, p->lineno, "line too long (at most %d characters)",
			     p->name, p->lineno, num - 2);
		free(line);
		return config_reader_blank(p, out, num);
	}
	if (strlen(start) != len) {
		config_error(p, p->lineno, "NUL byte in line", p->name,
			     p->lineno);
		free(line);
		return config_reader_blank(p, out, num);
	}
	/* inih's multi-line values: an indented line after a key, even one
	 * that starts with '[' ("    [::1]:25"). */
	p->continuation = *s != '\0' && *s != ';' && *s != '#' &&
			  s > start && p->have_prev;
	p->content = *s != '\0' && *s != ';' && *s != '#' &&
		     (*s != '[' || p->continuation);
	if (*s == '[' && !p->continuation) {
		config_section_start(p, s);
		if (strchr(s, ']') == NULL) {
			config_error(p, p->lineno, "section header without ']'",
				     p->name, p->lineno);
			p->sec = SEC_BAD;
			free(line);
			return config_reader_blank(p, out, num);
		}
		p->have_prev = false; /* as inih clears prev_name */
	}
	if (p->continuation) {
		/* inih strips " ; comment" from key lines but (in Debian's
		 * r55) not from continuation lines: do it here, same rule. */
		for (char *c = s + 1; *c; c++)
			if (*c == ';' && isspace((unsigned char)c[-1])) {
				*c = '\0';
				len = (size_t)(c - start);
				break;
			}
	}
	memcpy(out, start, len);
	out[len] = '\n';
	out[len + 1] = '\0';
	free(line);
	return out;
}

/* Whole-config checks, after every line was read. */
/* Every file of a comma-separated list (certificates for SNI) must be
 * readable; OpenSSL checks their contents later (-t and start). */
static void config_check_files(struct config_parse *p,
			       const struct forward_cfg *f, const char *key,
			       const char *list)
{
	const char *s = list;

	while (*s != '\0') {
		size_t n = strcspn(s, ",");
		char path[4096];
		size_t a = 0, b = n;

		while (a < b && isspace((unsigned char)s[a]))
			a++;
		while (b > a && isspace((unsigned char)s[b - 1]))
			b--;
		if (b > a && b - a < sizeof(path)) {
			memcpy(path, s + a, b - a);
			path[b - a] = '\0';
			if (access(path, R_OK) == -1)
				config_error(p, f->line, "[forward %s]: %s %s: %s",
					     p->name, f->line, f->name, key, path,
					     strerror(errno));
		}
		s += n;
		if (*s == ',')
			s++;
	}
}

static void config_validate_forwards(struct config_parse *p);

/* client_identity and proxy_protocol describe one choice: make them
 * agree, and say so when a forward hides every client behind us. */
static void config_validate_identity(struct config_parse *p,
				     struct forward_cfg *f)
{
	static const enum proxy_version want[] = {
		[IDENT_NONE] = PROXY_OFF,
		[IDENT_PROXY_V1] = PROXY_V1,
		[IDENT_PROXY_V2] = PROXY_V2,
		[IDENT_XCLIENT] = PROXY_OFF,
	};

	if (f->identity == IDENT_UNSET) {
		if (f->proxy_protocol == PROXY_V1)
			f->identity = IDENT_PROXY_V1;
		else if (f->proxy_protocol == PROXY_V2)
			f->identity = IDENT_PROXY_V2;
		else {
			f->identity = IDENT_NONE;
			f->identity_defaulted = true; /* warned about at the end */
		}
		return;
	}
	if (f->proxy_line != 0 && f->proxy_protocol != want[f->identity])
		config_error(p, f->proxy_line,
			     "[forward %s]: proxy_protocol = %s contradicts client_identity = %s (line %d)",
			     p->name, f->proxy_line, f->name,
			     config_proxy_str(f->proxy_protocol),
			     config_identity_str(f->identity), f->identity_line);
	else
		f->proxy_protocol = want[f->identity];
}

static void config_validate(struct config_parse *p)
{
	struct config *c = p->cfg;

	config_validate_forwards(p);
	if (c->group != NULL && c->user == NULL)
		config_error(p, 1, "group = %s needs user (the group is set when dropping to that user)",
			     p->name, 1, c->group);
	/* Only a configuration that would run gets this advice: among
	 * errors it would be noise. */
	for (size_t i = 0; p->diag->errors == 0 && i < c->nfwd; i++)
		if (c->fwd[i].identity_defaulted)
			config_warn(p, c->fwd[i].line,
				    "[forward %s]: the backend will see every client as coming from smtpfwd "
				    "(no PROXY header, no XCLIENT); set client_identity = proxy-v2 or xclient, "
				    "or client_identity = none if that is intended",
				    p->name, c->fwd[i].line, c->fwd[i].name);
}

static void config_validate_forwards(struct config_parse *p)
{
	struct config *c = p->cfg;

	if (c->nfwd == 0)
		config_error(p, p->lineno > 0 ? p->lineno : 1,
			     "no [forward NAME] section: nothing to do",
			     p->name, p->lineno > 0 ? p->lineno : 1);
	for (size_t i = 0; i < c->nfwd; i++) {
		struct forward_cfg *f = &c->fwd[i];

		if (f->nlisten == 0)
			config_error(p, f->line, "[forward %s]: no listen address",
				     p->name, f->line, f->name);
		if (f->nbackend == 0)
			config_error(p, f->line, "[forward %s]: no backend",
				     p->name, f->line, f->name);
		if (f->tls != TLS_OFF) {
			if (f->tls_cert == NULL)
				config_error(p, f->line, "[forward %s]: tls = %s needs tls_cert",
					     p->name, f->line, f->name,
					     config_tls_str(f->tls));
			else
				config_check_files(p, f, "tls_cert", f->tls_cert);
			if (f->tls_key == NULL)
				config_error(p, f->line, "[forward %s]: tls = %s needs tls_key",
					     p->name, f->line, f->name,
					     config_tls_str(f->tls));
			else
				config_check_files(p, f, "tls_key", f->tls_key);
		}
		if (f->tls_required && f->tls != TLS_STARTTLS)
			config_warn(p, f->line, "[forward %s]: tls_required applies only to tls = starttls",
				    p->name, f->line, f->name);
		config_validate_identity(p, f);
		for (size_t j = 0; j < f->nlisten; j++) {
			struct listen_cfg *l = &f->listen[j];
			bool dup = false;

			/* Same address and port anywhere before this one: one
			 * message per repeat, naming the first. */
			for (size_t k = 0; k <= i && !dup; k++) {
				struct forward_cfg *g = &c->fwd[k];
				size_t m = k == i ? j : g->nlisten;

				for (size_t q = 0; q < m && !dup; q++)
					if (addr_equal(&g->listen[q].sa, &l->sa)) {
						config_error(p, l->line, "duplicate listen address %s (also at line %d)",
							     p->name, l->line,
							     l->text,
							     g->listen[q].line);
						dup = true;
					}
			}
			if (c->has_stats_listen &&
			    addr_equal(&c->stats_listen.sa, &l->sa))
				config_error(p, l->line, "listen address %s is also stats_listen",
					     p->name, l->line, l->text);
		}
	}
}

static struct config *config_new(void)
{
	struct config *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->refs = 1;
	c->log_level = LOG_LVL_INFO;
	c->log_format = LOG_FMT_TEXT;
	c->max_connections = 10000;
	c->workers = 1;
	c->shutdown_timeout = 30;
	return c;
}

static struct config *config_run(struct config_parse *p)
{
	int rc;

	p->cfg = config_new();
	p->last_key = -1;
	if (p->cfg == NULL) {
		config_diag_add(p->diag, true, "%s: out of memory", p->name);
		return NULL;
	}
	p->cfg->path = strdup(p->name);
	rc = ini_parse_stream(config_reader, p, config_handler, p);
	config_reader_check(p); /* the last line */
	if (rc == -2)
		config_diag_add(p->diag, true, "%s: out of memory", p->name);
	else if (rc > 0 && p->diag->errors == 0)
		/* inih found an error we did not see: report its line. */
		config_error(p, rc, "syntax error", p->name, rc);
	config_validate(p);
	if (p->diag->errors > 0) {
		config_unref(p->cfg);
		return NULL;
	}
	return p->cfg;
}

struct config *config_load(const char *path, struct config_diag *diag)
{
	struct config_parse p = { .name = path, .diag = diag };
	struct config *c;

	p.fp = fopen(path, "r");
	if (p.fp == NULL) {
		config_diag_add(diag, true, "%s: %s", path, strerror(errno));
		return NULL;
	}
	c = config_run(&p);
	fclose(p.fp);
	return c;
}

struct config *config_parse_string(const char *text, const char *name,
				   struct config_diag *diag)
{
	struct config_parse p = { .name = name, .diag = diag, .str = text };

	return config_run(&p);
}

struct config *config_from_args(const char *const *listen, size_t nlisten,
				const char *const *backend, size_t nbackend,
				enum client_identity id, struct config_diag *diag)
{
	static const char name[] = "command line";
	struct config_diag tmp = { 0 };
	char *text = NULL;
	size_t len = 0;
	FILE *mem;
	struct config *c = NULL;

	if (nlisten == 0 || nlisten != nbackend) {
		config_diag_add(diag, true, "command line: give -l LISTEN and -b BACKEND in pairs");
		return NULL;
	}
	mem = open_memstream(&text, &len);
	if (mem == NULL) {
		config_diag_add(diag, true, "command line: out of memory");
		return NULL;
	}
	/* Build an INI text so quick mode gets exactly the same checks. */
	fprintf(mem, "[global]\n");
	for (size_t i = 0; i < nlisten; i++) {
		for (const char *s = listen[i]; *s; s++)
			if (iscntrl((unsigned char)*s))
				goto bad;
		for (const char *s = backend[i]; *s; s++)
			if (iscntrl((unsigned char)*s))
				goto bad;
		fprintf(mem, "[forward quick%zu]\nlisten = %s\nbackend = %s\n",
			i + 1, listen[i], backend[i]);
		if (id != IDENT_UNSET)
			fprintf(mem, "client_identity = %s\n", config_identity_str(id));
	}
	fclose(mem);
	c = config_parse_string(text, "command line", &tmp);
	free(text);
	/* Line numbers of the text built above mean nothing to the user:
	 * "command line:3: listen x: ..." becomes "command line: listen x:
	 * ...". */
	for (const char *m = tmp.text; m != NULL && *m != '\0';) {
		const char *nl = strchr(m, '\n');
		size_t n = nl ? (size_t)(nl - m) : strlen(m);
		size_t at = sizeof(name); /* past "command line:" */

		while (at < n && isdigit((unsigned char)m[at]))
			at++;
		if (strncmp(m, name, sizeof(name) - 1) == 0 &&
		    m[sizeof(name) - 1] == ':' && at > sizeof(name) &&
		    at < n && m[at] == ':') {
			char line[600];
			int k = snprintf(line, sizeof(line), "%s%.*s", name,
					 (int)(n - at), m + at);

			if (k > 0)
				config_diag_put(diag, line,
						(size_t)k < sizeof(line) ?
							(size_t)k :
							sizeof(line) - 1);
		} else {
			config_diag_put(diag, m, n);
		}
		m += nl ? n + 1 : n;
	}
	diag->errors += tmp.errors;
	diag->warnings += tmp.warnings;
	config_diag_free(&tmp);
	return c;
bad:
	fclose(mem);
	free(text);
	config_diag_add(diag, true, "command line: control characters in an address");
	return NULL;
}

const struct forward_cfg *config_find_forward(const struct config *cfg,
					      const char *name)
{
	for (size_t i = 0; i < cfg->nfwd; i++)
		if (strcmp(cfg->fwd[i].name, name) == 0)
			return &cfg->fwd[i];
	return NULL;
}

struct config *config_ref(struct config *cfg)
{
	cfg->refs++;
	return cfg;
}

void config_unref(struct config *cfg)
{
	if (cfg == NULL || --cfg->refs > 0)
		return;
	for (size_t i = 0; i < cfg->nfwd; i++) {
		struct forward_cfg *f = &cfg->fwd[i];

		free(f->name);
		free(f->listen);
		free(f->backend);
		free(f->acl.allow);
		free(f->acl.deny);
		free(f->tls_cert);
		free(f->tls_key);
		free(f->tls_protocols);
		free(f->tls_ciphers);
	}
	free(cfg->fwd);
	free(cfg->user);
	free(cfg->group);
	free(cfg->path);
	free(cfg);
}
