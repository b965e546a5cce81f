/* fuzz_config: the INI validation layer. The input is a configuration
 * file. It is parsed twice, from a string (config_parse_string) and as a
 * file (config_load on a memfd), and both must say the same thing; a
 * configuration that passes must hold what validation promises. */
#include <arpa/inet.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "fuzz.h"

static const char *const fcfg_proxy[] = { "off", "v1", "v2" };
static const char *const fcfg_tls[] = { "off", "implicit", "starttls" };

static int fcfg_fd = -1;
static char fcfg_path[64];

/* The same bytes as a file: config_load() reads through stdio (getline),
 * the string path through its own splitter. */
static void fcfg_file_init(void)
{
	if (fcfg_fd != -1)
		return;
	fcfg_fd = memfd_create("fuzz_config", MFD_CLOEXEC);
	fuzz_check(fcfg_fd != -1, "memfd_create failed");
	snprintf(fcfg_path, sizeof(fcfg_path), "/proc/self/fd/%d", fcfg_fd);
}

static void fcfg_file_set(const uint8_t *data, size_t size)
{
	fuzz_check(ftruncate(fcfg_fd, 0) == 0, "ftruncate failed");
	fuzz_check(size == 0 || pwrite(fcfg_fd, data, size, 0) == (ssize_t)size,
		   "pwrite failed");
}

/* Every message is one line naming the file: as many lines as messages. */
static void fcfg_check_diag(const struct config_diag *d, const char *name)
{
	size_t lines = 0, nlen = strlen(name);
	const char *p;

	if (d->len == 0) {
		fuzz_check(d->errors + d->warnings == 0, "messages counted, none written");
		return;
	}
	fuzz_check(d->text != NULL && d->text[d->len] == '\0' &&
			   strlen(d->text) == d->len,
		   "diag text length %zu", d->len);
	for (p = d->text; *p != '\0';) {
		const char *nl = strchr(p, '\n');

		fuzz_check(nl != NULL, "message without newline");
		fuzz_check(strncmp(p, name, nlen) == 0 && p[nlen] == ':',
			   "message does not start with the file name: %.*s",
			   (int)(nl - p), p);
		lines++;
		p = nl + 1;
	}
	fuzz_check(lines == d->errors + d->warnings,
		   "%zu lines for %u errors + %u warnings", lines, d->errors,
		   d->warnings);
}

static bool fcfg_name_ok(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_' || *s == '-' ||
		      *s == '.'))
			return false;
	return true;
}

static bool fcfg_ip(const union sockname *a)
{
	return a->sa.sa_family == AF_INET || a->sa.sa_family == AF_INET6;
}

static void fcfg_check_cidr(const struct cidr *c)
{
	unsigned max = c->family == AF_INET ? 32 : 128;

	fuzz_check(c->family == AF_INET || c->family == AF_INET6,
		   "rule family %u", c->family);
	fuzz_check(c->prefix <= max, "prefix %u", c->prefix);
	for (unsigned bit = c->prefix; bit < 128; bit++)
		fuzz_check(!(c->net[bit / 8] & (0x80 >> (bit % 8))),
			   "host bit %u set in a rule", bit);
}

static void fcfg_check_listen(const struct listen_cfg *l)
{
	char buf[ADDR_STRLEN];

	fuzz_check(fcfg_ip(&l->sa) && addr_port(&l->sa) != 0,
		   "listen address not IP:port");
	fuzz_check(strcmp(l->text, addr_format(&l->sa, buf, sizeof(buf))) == 0,
		   "listen text %s", l->text);
}

static void fcfg_check_forward(const struct config *c,
			       const struct forward_cfg *f)
{
	fuzz_check(f->name != NULL && fcfg_name_ok(f->name), "forward name");
	fuzz_check(config_find_forward(c, f->name) == f, "lookup of %s", f->name);
	fuzz_check(f->nlisten > 0 && f->nbackend > 0, "forward %s incomplete",
		   f->name);
	for (size_t j = 0; j < f->nlisten; j++)
		fcfg_check_listen(&f->listen[j]);
	for (size_t j = 0; j < f->nbackend; j++) {
		const struct backend_cfg *b = &f->backend[j];

		fuzz_check(b->ep.port != 0, "backend port 0");
		if (b->ep.literal)
			fuzz_check(fcfg_ip(&b->ep.sa) &&
					   addr_port(&b->ep.sa) == b->ep.port,
				   "literal backend");
		else
			fuzz_check(b->ep.host[0] != '\0' &&
					   strlen(b->ep.host) < ADDR_HOSTLEN,
				   "backend host");
	}
	for (size_t j = 0; j < f->acl.nallow; j++)
		fcfg_check_cidr(&f->acl.allow[j]);
	for (size_t j = 0; j < f->acl.ndeny; j++)
		fcfg_check_cidr(&f->acl.deny[j]);
	fuzz_check(f->acl.has_allow || f->acl.nallow == 0, "allow without has_allow");
	fuzz_check(f->connect_timeout > 0 && f->connect_timeout <= 365.0 * 86400,
		   "connect_timeout %g", f->connect_timeout);
	fuzz_check(f->idle_timeout > 0 && f->idle_timeout <= 365.0 * 86400,
		   "idle_timeout %g", f->idle_timeout);
	fuzz_check((unsigned)f->proxy_protocol <= PROXY_V2 &&
			   strcmp(config_proxy_str(f->proxy_protocol),
				  fcfg_proxy[f->proxy_protocol]) == 0,
		   "proxy_protocol %d", (int)f->proxy_protocol);
	fuzz_check((unsigned)f->tls <= TLS_STARTTLS &&
			   strcmp(config_tls_str(f->tls), fcfg_tls[f->tls]) == 0,
		   "tls %d", (int)f->tls);
	if (f->tls != TLS_OFF)
		fuzz_check(f->tls_cert != NULL && f->tls_key != NULL,
			   "tls without cert/key");
	fuzz_check(f->max_per_ip <= 1000000, "max_per_ip %u", f->max_per_ip);
}

static void fcfg_check_config(const struct config *c)
{
	fuzz_check(c->refs == 1, "refs %u", c->refs);
	fuzz_check(c->nfwd > 0, "accepted without a forward");
	fuzz_check(c->max_connections >= 1 && c->max_connections <= 1000000,
		   "max_connections %u", c->max_connections);
	fuzz_check(c->workers <= 256, "workers %u", c->workers);
	fuzz_check(c->shutdown_timeout >= 0 &&
			   c->shutdown_timeout <= 365.0 * 86400,
		   "shutdown_timeout %g", c->shutdown_timeout);
	fuzz_check((unsigned)c->log_level <= LOG_LVL_DEBUG, "log_level");
	fuzz_check((unsigned)c->log_format <= LOG_FMT_JSON, "log_format");
	if (c->has_stats_listen)
		fcfg_check_listen(&c->stats_listen);
	for (size_t i = 0; i < c->nfwd; i++) {
		const struct forward_cfg *f = &c->fwd[i];

		fcfg_check_forward(c, f);
		for (size_t k = 0; k < i; k++)
			fuzz_check(strcmp(c->fwd[k].name, f->name) != 0,
				   "duplicate forward %s accepted", f->name);
		/* No listen address twice, nor the stats address. */
		for (size_t j = 0; j < f->nlisten; j++) {
			const union sockname *a = &f->listen[j].sa;

			fuzz_check(!c->has_stats_listen ||
					   !addr_equal(a, &c->stats_listen.sa),
				   "listen = stats_listen accepted");
			for (size_t k = 0; k <= i; k++) {
				const struct forward_cfg *g = &c->fwd[k];
				size_t m = k == i ? j : g->nlisten;

				for (size_t q = 0; q < m; q++)
					fuzz_check(!addr_equal(a, &g->listen[q].sa),
						   "duplicate listen %s accepted",
						   f->listen[j].text);
			}
		}
	}
}

/* Both readers agree: same verdict, same messages. */
static void fcfg_compare(const struct config *a, const struct config_diag *da,
			 const struct config *b, const struct config_diag *db)
{
	fuzz_check((a == NULL) == (b == NULL), "string and file verdicts differ");
	fuzz_check(da->errors == db->errors && da->warnings == db->warnings,
		   "string %u/%u, file %u/%u errors/warnings", da->errors,
		   da->warnings, db->errors, db->warnings);
	fuzz_check(da->len == db->len &&
			   (da->len == 0 || memcmp(da->text, db->text, da->len) == 0),
		   "messages differ:\n--- string\n%s--- file\n%s",
		   da->text ? da->text : "", db->text ? db->text : "");
	if (a != NULL)
		fuzz_check(a->nfwd == b->nfwd, "forward counts differ");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config_diag ds = { 0 }, df = { 0 };
	struct config *cs, *cf;
	char *text = fuzz_strndup(data, size);

	fcfg_file_init();
	cs = config_parse_string(text, fcfg_path, &ds);
	fcfg_check_diag(&ds, fcfg_path);
	fuzz_check((cs == NULL) == (ds.errors > 0), "verdict %p with %u errors",
		   (void *)cs, ds.errors);
	if (cs != NULL) {
		fcfg_check_config(cs);
		/* A second reference outlives the first unref. */
		config_ref(cs);
		config_unref(cs);
		fuzz_check(cs->refs == 1, "refs after ref/unref %u", cs->refs);
	}

	fcfg_file_set(data, size);
	cf = config_load(fcfg_path, &df);
	fcfg_check_diag(&df, fcfg_path);
	fuzz_check((cf == NULL) == (df.errors > 0), "file verdict");
	if (cf != NULL)
		fcfg_check_config(cf);
	/* A string ends at its first NUL; a file does not. */
	if (memchr(data, '\0', size) == NULL)
		fcfg_compare(cs, &ds, cf, &df);

	config_unref(cs);
	config_unref(cf);
	config_diag_free(&ds);
	config_diag_free(&df);
	free(text);
	return 0;
}
