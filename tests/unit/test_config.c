/* Unit tests for config: every key and its default, every error with its
 * exact "NAME:LINE: message", physical line numbers through comments,
 * blank and continuation lines, inih's edges (200-byte lines, multi-line
 * values, inline ';' comments), files, quick mode and durations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

/* --- temporary files --------------------------------------------------- */

static char tmpdir[64];
static char cert_path[128];
static char key_path[128];

static void path_in_tmp(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", tmpdir, name);
}

static void write_file(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	if (f == NULL)
		fail_msg("cannot write %s: %s", path, strerror(errno));
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static int group_setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_config.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	path_in_tmp(cert_path, sizeof(cert_path), "cert.pem");
	path_in_tmp(key_path, sizeof(key_path), "key.pem");
	write_file(cert_path, "cert\n", 5);
	write_file(key_path, "key\n", 4);
	return 0;
}

static int group_teardown(void **state)
{
	static const char *const names[] = { "cert.pem", "key.pem", "t.ini",
					     "crlf.ini", "nul.ini",
					     "noread.pem" };
	char path[160];

	(void)state;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		path_in_tmp(path, sizeof(path), names[i]);
		unlink(path);
	}
	return rmdir(tmpdir) == 0 ? 0 : -1;
}

/* --- helpers ----------------------------------------------------------- */

#define FWD_OK "[forward smtp]\nlisten = 192.0.2.1:25\nbackend = 10.0.0.1:2525\n"

#define IDENTITY_ADVICE "client_identity = none if that is intended"

/* Most texts here leave client_identity unset, which earns each forward
 * the same advice; the tests of that advice are below. Drop it. */
static void drop_identity_advice(struct config_diag *d)
{
	char *line = d->text;

	while (line != NULL && *line != '\0') {
		char *nl = strchr(line, '\n');
		size_t n = nl != NULL ? (size_t)(nl - line) + 1 : strlen(line);

		if (memmem(line, n, IDENTITY_ADVICE, strlen(IDENTITY_ADVICE)) != NULL) {
			memmove(line, line + n, strlen(line + n) + 1);
			d->len -= n;
			d->warnings--;
			continue;
		}
		line += n;
	}
	if (d->text != NULL && d->len == 0) {
		free(d->text);
		d->text = NULL;
		d->cap = 0;
	}
}

/* A valid text: no messages at all. */
static struct config *parse_ok(const char *text)
{
	struct config_diag d = { 0 };
	struct config *c = config_parse_string(text, "t.ini", &d);

	drop_identity_advice(&d);
	if (c == NULL || d.errors != 0 || d.warnings != 0)
		fail_msg("rejected (%u errors, %u warnings):\n%s", d.errors,
			 d.warnings, d.text ? d.text : "");
	assert_true(d.len == 0);
	config_diag_free(&d);
	assert_int_equal(c->refs, 1);
	return c;
}

static size_t count_lines(const char *s)
{
	size_t n = 0;

	for (; s && *s; s++)
		n += *s == '\n';
	return n;
}

/* An invalid text: exactly these messages (one per line, in order), and
 * as many errors as non-warning lines. */
static void parse_bad(const char *text, const char *want)
{
	struct config_diag d = { 0 };
	struct config *c = config_parse_string(text, "t.ini", &d);
	size_t nwarn = 0;

	for (const char *s = want; (s = strstr(s, ": warning: ")); s++)
		nwarn++;
	assert_null(c);
	if (d.text == NULL || strcmp(d.text, want) != 0)
		fail_msg("for:\n%s\ngot:\n%swant:\n%s", text,
			 d.text ? d.text : "(nothing)\n", want);
	assert_int_equal(d.errors, count_lines(want) - nwarn);
	assert_int_equal(d.warnings, nwarn);
	assert_int_equal(d.len, strlen(want));
	config_diag_free(&d);
	assert_null(d.text);
	assert_int_equal(d.errors, 0);
}

/* A valid text with exactly these warnings. */
static struct config *parse_warn(const char *text, const char *want)
{
	struct config_diag d = { 0 };
	struct config *c = config_parse_string(text, "t.ini", &d);

	drop_identity_advice(&d);
	if (c == NULL || d.text == NULL || strcmp(d.text, want) != 0)
		fail_msg("got:\n%swant:\n%s", d.text ? d.text : "(nothing)\n",
			 want);
	assert_int_equal(d.errors, 0);
	assert_int_equal(d.warnings, count_lines(want));
	config_diag_free(&d);
	return c;
}

/* "forward smtp" + extra lines (line 4 onwards), expecting this error. */
static void fwd_bad(const char *extra, const char *want)
{
	char text[1024];

	snprintf(text, sizeof(text), FWD_OK "%s", extra);
	parse_bad(text, want);
}

/* --- defaults and every key -------------------------------------------- */

static void test_defaults(void **state)
{
	struct config *c = parse_ok(FWD_OK);
	const struct forward_cfg *f;
	char buf[ADDR_STRLEN];

	(void)state;
	assert_string_equal(c->path, "t.ini");
	assert_null(c->user);
	assert_int_equal(c->log_level, LOG_LVL_INFO);
	assert_int_equal(c->log_format, LOG_FMT_TEXT);
	assert_false(c->syslog);
	assert_int_equal(c->max_connections, 10000);
	assert_int_equal(c->workers, 1);
	assert_true(c->shutdown_timeout == 30.0);
	assert_false(c->has_stats_listen);
	assert_int_equal(c->nfwd, 1);

	f = &c->fwd[0];
	assert_string_equal(f->name, "smtp");
	assert_int_equal(f->line, 1);
	assert_int_equal(f->nlisten, 1);
	assert_string_equal(f->listen[0].text, "192.0.2.1:25");
	assert_int_equal(f->listen[0].line, 2);
	assert_string_equal(addr_format(&f->listen[0].sa, buf, sizeof(buf)),
			    "192.0.2.1:25");
	assert_int_equal(f->nbackend, 1);
	assert_true(f->backend[0].ep.literal);
	assert_string_equal(f->backend[0].text, "10.0.0.1:2525");
	assert_int_equal(f->backend[0].line, 3);
	assert_int_equal(addr_port(&f->backend[0].ep.sa), 2525);
	assert_false(f->acl.has_allow);
	assert_int_equal(f->acl.nallow, 0);
	assert_int_equal(f->acl.ndeny, 0);
	assert_null(f->acl.allow);
	assert_null(f->acl.deny);
	assert_int_equal(f->max_per_ip, 0);
	assert_true(f->connect_timeout == 10.0);
	assert_true(f->idle_timeout == 600.0);
	assert_int_equal(f->proxy_protocol, PROXY_OFF);
	assert_int_equal(f->tls, TLS_OFF);
	assert_null(f->tls_cert);
	assert_null(f->tls_key);
	assert_null(f->tls_protocols);
	assert_null(f->tls_ciphers);
	assert_false(f->tls_required);
	assert_true(f->log_greeting);
	assert_false(f->reject_early_talkers);
	config_unref(c);
}

static void test_every_key(void **state)
{
	char text[2048];
	struct config *c;
	const struct forward_cfg *f;

	(void)state;
	snprintf(text, sizeof(text),
		 "[global]\n"
		 "user = smtpfwd\n"
		 "log_level = debug\n"
		 "log_format = json\n"
		 "syslog = yes\n"
		 "max_connections = 500\n"
		 "workers = 0\n"
		 "shutdown_timeout = 5m\n"
		 "stats_listen = 127.0.0.1:9925\n"
		 "[forward submission]\n"
		 "listen = 0.0.0.0:587, [::]:587\n"
		 "backend = 10.8.0.2:2525, mail.lan:2525, [2001:db8::25]:25\n"
		 "allow = 192.0.2.0/24, 2001:db8::/32\n"
		 "deny = 192.0.2.66\n"
		 "max_per_ip = 20\n"
		 "connect_timeout = 2.5\n"
		 "idle_timeout = 1h\n"
		 "proxy_protocol = v2\n"
		 "tls = starttls\n"
		 "tls_cert = %s\n"
		 "tls_key = %s\n"
		 "tls_protocols = TLSv1.3\n"
		 "tls_ciphers = HIGH:!aNULL\n"
		 "tls_required = yes\n"
		 "log_greeting = no\n"
		 "reject_early_talkers = yes\n",
		 cert_path, key_path);
	c = parse_ok(text);
	assert_string_equal(c->user, "smtpfwd");
	assert_int_equal(c->log_level, LOG_LVL_DEBUG);
	assert_int_equal(c->log_format, LOG_FMT_JSON);
	assert_true(c->syslog);
	assert_int_equal(c->max_connections, 500);
	assert_int_equal(c->workers, 0);
	assert_true(c->shutdown_timeout == 300.0);
	assert_true(c->has_stats_listen);
	assert_string_equal(c->stats_listen.text, "127.0.0.1:9925");
	assert_int_equal(c->stats_listen.line, 9);
	assert_int_equal(addr_port(&c->stats_listen.sa), 9925);

	assert_int_equal(c->nfwd, 1);
	f = config_find_forward(c, "submission");
	assert_ptr_equal(f, &c->fwd[0]);
	assert_null(config_find_forward(c, "smtp"));
	assert_int_equal(f->line, 10);
	assert_int_equal(f->nlisten, 2);
	assert_string_equal(f->listen[0].text, "0.0.0.0:587");
	assert_string_equal(f->listen[1].text, "[::]:587");
	assert_int_equal(f->listen[1].line, 11);
	assert_int_equal(f->listen[1].sa.sa.sa_family, AF_INET6);
	assert_int_equal(f->nbackend, 3);
	assert_string_equal(f->backend[0].text, "10.8.0.2:2525");
	assert_true(f->backend[0].ep.literal);
	assert_string_equal(f->backend[1].text, "mail.lan:2525");
	assert_false(f->backend[1].ep.literal);
	assert_string_equal(f->backend[1].ep.host, "mail.lan");
	assert_int_equal(f->backend[1].ep.port, 2525);
	assert_string_equal(f->backend[2].text, "[2001:db8::25]:25");
	assert_int_equal(f->backend[2].line, 12);
	assert_true(f->acl.has_allow);
	assert_int_equal(f->acl.nallow, 2);
	assert_int_equal(f->acl.allow[0].family, AF_INET);
	assert_int_equal(f->acl.allow[0].prefix, 24);
	assert_int_equal(f->acl.allow[1].family, AF_INET6);
	assert_int_equal(f->acl.allow[1].prefix, 32);
	assert_int_equal(f->acl.ndeny, 1);
	assert_int_equal(f->acl.deny[0].prefix, 32);
	assert_int_equal(f->max_per_ip, 20);
	assert_true(f->connect_timeout == 2.5);
	assert_true(f->idle_timeout == 3600.0);
	assert_int_equal(f->proxy_protocol, PROXY_V2);
	assert_int_equal(f->tls, TLS_STARTTLS);
	assert_string_equal(f->tls_cert, cert_path);
	assert_string_equal(f->tls_key, key_path);
	assert_string_equal(f->tls_protocols, "TLSv1.3");
	assert_string_equal(f->tls_ciphers, "HIGH:!aNULL");
	assert_true(f->tls_required);
	assert_false(f->log_greeting);
	assert_true(f->reject_early_talkers);

	/* The allow/deny lists work as parsed. */
	{
		union sockname a;

		assert_int_equal(addr_parse_ip("192.0.2.1", &a), 0);
		assert_true(acl_permits(&f->acl, &a));
		assert_int_equal(addr_parse_ip("::ffff:192.0.2.66", &a), 0);
		assert_false(acl_permits(&f->acl, &a));
		assert_int_equal(addr_parse_ip("198.51.100.1", &a), 0);
		assert_false(acl_permits(&f->acl, &a));
	}
	config_unref(c);
}

static void test_value_spellings(void **state)
{
	struct config *c;

	(void)state;
	/* Booleans and enums ignore case; several spellings of yes/no. */
	c = parse_ok("[global]\nlog_level = WARN\nlog_format = Text\n"
		     "syslog = True\n" FWD_OK "proxy_protocol = V1\n"
		     "tls_required = off\nlog_greeting = 0\n"
		     "reject_early_talkers = on\n");
	assert_int_equal(c->log_level, LOG_LVL_WARN);
	assert_int_equal(c->log_format, LOG_FMT_TEXT);
	assert_true(c->syslog);
	assert_int_equal(c->fwd[0].proxy_protocol, PROXY_V1);
	assert_false(c->fwd[0].tls_required);
	assert_false(c->fwd[0].log_greeting);
	assert_true(c->fwd[0].reject_early_talkers);
	config_unref(c);

	c = parse_ok("[global]\nlog_level = error\nsyslog = 1\n"
		     "shutdown_timeout = 0\nmax_connections = 1000000\n"
		     "workers = 256\n" FWD_OK "tls_required = false\n"
		     "log_greeting = TRUE\nreject_early_talkers = no\n"
		     "proxy_protocol = off\ntls = off\nmax_per_ip = 1000000\n"
		     "connect_timeout = 30s\nidle_timeout = 0.5\n");
	assert_int_equal(c->log_level, LOG_LVL_ERROR);
	assert_true(c->syslog);
	assert_true(c->shutdown_timeout == 0.0);
	assert_int_equal(c->max_connections, 1000000);
	assert_int_equal(c->workers, 256);
	assert_true(c->fwd[0].log_greeting);
	assert_int_equal(c->fwd[0].max_per_ip, 1000000);
	assert_true(c->fwd[0].connect_timeout == 30.0);
	assert_true(c->fwd[0].idle_timeout == 0.5);
	config_unref(c);

	/* inih also takes ':' between key and value, and trims blanks. */
	c = parse_ok("[forward smtp]\nlisten: 192.0.2.1:25\n"
		     "backend   =   10.0.0.1:2525   \n");
	assert_string_equal(c->fwd[0].listen[0].text, "192.0.2.1:25");
	assert_string_equal(c->fwd[0].backend[0].text, "10.0.0.1:2525");
	config_unref(c);
}

static void test_several_forwards(void **state)
{
	struct config *c;

	(void)state;
	c = parse_ok("[global]\n[forward smtp]\nlisten = 0.0.0.0:25\n"
		     "backend = 10.0.0.1:25\n\n[forward submissions]\n"
		     "listen = 0.0.0.0:465\nbackend = 10.0.0.1:465\n"
		     "[forward a.b-c_d]\nlisten = [::1]:25\n"
		     "backend = 10.0.0.1:25\n");
	assert_int_equal(c->nfwd, 3);
	assert_string_equal(c->fwd[0].name, "smtp");
	assert_string_equal(c->fwd[1].name, "submissions");
	assert_int_equal(c->fwd[1].line, 6);
	assert_string_equal(c->fwd[2].name, "a.b-c_d");
	assert_int_equal(c->fwd[2].line, 9);
	assert_ptr_equal(config_find_forward(c, "submissions"), &c->fwd[1]);
	assert_null(config_find_forward(c, "SMTP"));
	/* Same port on different addresses, and IPv4 vs IPv6: fine. */
	config_unref(c);
	c = parse_ok("[forward a]\nlisten = 192.0.2.1:25, 192.0.2.2:25\n"
		     "backend = 10.0.0.1:25\n[forward b]\n"
		     "listen = 192.0.2.1:26, [::ffff:192.0.2.1]:25\n"
		     "backend = 10.0.0.1:25\n");
	config_unref(c);
}

static void test_ref_unref(void **state)
{
	struct config *c = parse_ok(FWD_OK);

	(void)state;
	assert_ptr_equal(config_ref(c), c);
	assert_int_equal(c->refs, 2);
	config_unref(c);
	assert_int_equal(c->refs, 1);
	config_unref(c); /* frees; the sanitizer build checks it */
	config_unref(NULL);
}

static void test_enum_names(void **state)
{
	(void)state;
	assert_string_equal(config_proxy_str(PROXY_OFF), "off");
	assert_string_equal(config_proxy_str(PROXY_V1), "v1");
	assert_string_equal(config_proxy_str(PROXY_V2), "v2");
	assert_string_equal(config_tls_str(TLS_OFF), "off");
	assert_string_equal(config_tls_str(TLS_IMPLICIT), "implicit");
	assert_string_equal(config_tls_str(TLS_STARTTLS), "starttls");
}

/* --- durations --------------------------------------------------------- */

static void duration_is(const char *text, double want)
{
	double v = -1;

	if (config_parse_duration(text, &v) != 0)
		fail_msg("\"%s\" rejected", text);
	if (v != want)
		fail_msg("\"%s\" = %g, want %g", text, v, want);
}

static void test_duration(void **state)
{
	static const char *const bad[] = {
		"",    "s",	  "m",	  "-1",	   "+1",    " 1",   "1 ",
		"1 s", "1x",	  "1ms",  "1sec",  "1S",    "1H",   "1d",
		"1e3", "0x10",	  "inf",  "nan",   "1.",    ".5",   "1..2",
		"1.5.", "1s5",	  "8761h", "31536001", "99999999999999999999h",
	};
	double v = 42;

	(void)state;
	duration_is("30", 30);
	duration_is("30s", 30);
	duration_is("5m", 300);
	duration_is("1h", 3600);
	duration_is("0", 0);
	duration_is("0s", 0);
	duration_is("0.5", 0.5);
	duration_is("1.5m", 90);
	duration_is("007", 7);
	duration_is("8760h", 365.0 * 86400);
	duration_is("31536000", 31536000);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (config_parse_duration(bad[i], &v) != -1)
			fail_msg("\"%s\" accepted as %g", bad[i], v);
	}
	/* Nothing stored on failure. */
	v = 42;
	assert_int_equal(config_parse_duration("1x", &v), -1);
	assert_true(v == 42);
}

/* --- errors, one kind at a time ---------------------------------------- */

static void test_unknown_key(void **state)
{
	(void)state;
	parse_bad("[global]\nfoo = 1\n" FWD_OK,
		  "t.ini:2: unknown key 'foo' in [global]\n");
	fwd_bad("lisen = 192.0.2.1:26\n",
		"t.ini:4: unknown key 'lisen' in [forward]\n");
	/* Keys are case-sensitive; each section has its own. */
	fwd_bad("Listen = 192.0.2.1:26\n",
		"t.ini:4: unknown key 'Listen' in [forward]\n");
	fwd_bad("workers = 2\n", "t.ini:4: unknown key 'workers' in [forward]\n");
	parse_bad("[global]\nlisten = 192.0.2.1:25\n" FWD_OK,
		  "t.ini:2: unknown key 'listen' in [global]\n");
	parse_bad("user = x\n" FWD_OK, "t.ini:1: user: key outside a section\n");
	/* The "further keys" not implemented are unknown, not ignored. */
	parse_bad("[global]\nhealth_intervall = 5\n" FWD_OK,
		  "t.ini:2: unknown key 'health_intervall' in [global]\n");
}

static void test_unknown_section(void **state)
{
	(void)state;
	parse_bad("[globl]\nuser = x\n" FWD_OK,
		  "t.ini:1: unknown section [globl] (expected [global] or [forward NAME])\n");
	parse_bad("[forward]\nlisten = 192.0.2.1:25\n" FWD_OK,
		  "t.ini:1: unknown section [forward] (expected [global] or [forward NAME])\n");
	parse_bad("[Global]\n" FWD_OK,
		  "t.ini:1: unknown section [Global] (expected [global] or [forward NAME])\n");
	parse_bad(FWD_OK "[forward bad/name]\nlisten = 192.0.2.1:26\n",
		  "t.ini:4: [forward bad/name]: forward names use letters, digits, '_', '-' and '.'\n");
	parse_bad(FWD_OK "[forward smtp]\nlisten = 192.0.2.1:26\n",
		  "t.ini:4: duplicate [forward smtp] (first at line 1)\n");
	parse_bad("[global]\n[global]\n" FWD_OK,
		  "t.ini:2: duplicate [global] section\n");
	parse_bad("[global\n" FWD_OK, "t.ini:1: section header without ']'\n");
}

static void test_bad_addresses(void **state)
{
	(void)state;
	parse_bad("[forward smtp]\nlisten = mail.lan:25\nbackend = 10.0.0.1:25\n",
		  "t.ini:2: listen mail.lan:25: bad IPv4 address (host names are allowed only for backends)\n"
		  "t.ini:1: [forward smtp]: no listen address\n");
	parse_bad("[forward smtp]\nlisten = 192.0.2.1\nbackend = 10.0.0.1:25\n",
		  "t.ini:2: listen 192.0.2.1: missing :port\n"
		  "t.ini:1: [forward smtp]: no listen address\n");
	parse_bad("[forward smtp]\nlisten = ::1:25\nbackend = 10.0.0.1:25\n",
		  "t.ini:2: listen ::1:25: IPv6 addresses need brackets: [addr]:port\n"
		  "t.ini:1: [forward smtp]: no listen address\n");
	parse_bad("[forward smtp]\nlisten = 192.0.2.1:25\nbackend = [::1\n",
		  "t.ini:3: backend [::1: expected [IPv6]:port\n"
		  "t.ini:1: [forward smtp]: no backend\n");
	parse_bad("[forward smtp]\nlisten = 192.0.2.1:25\nbackend = 10.0.0.256:25\n",
		  "t.ini:3: backend 10.0.0.256:25: bad IPv4 address\n"
		  "t.ini:1: [forward smtp]: no backend\n");
	parse_bad("[forward smtp]\nlisten = 192.0.2.1:25\nbackend = mail..lan:25\n",
		  "t.ini:3: backend mail..lan:25: bad host name\n"
		  "t.ini:1: [forward smtp]: no backend\n");
	parse_bad("[global]\nstats_listen = localhost:9925\n" FWD_OK,
		  "t.ini:2: stats_listen localhost:9925: bad IPv4 address (host names are allowed only for backends)\n");
	/* One bad item: the others are still read and checked. */
	parse_bad("[forward smtp]\nlisten = 192.0.2.1:25, 192.0.2.x:25, 192.0.2.2:0\n"
		  "backend = 10.0.0.1:25\n",
		  "t.ini:2: listen 192.0.2.x:25: bad IPv4 address (host names are allowed only for backends)\n"
		  "t.ini:2: listen 192.0.2.2:0: bad port (1-65535)\n");
}

static void test_bad_ports(void **state)
{
	(void)state;
	parse_bad("[forward smtp]\nlisten = 192.0.2.1:0\nbackend = 10.0.0.1:25\n",
		  "t.ini:2: listen 192.0.2.1:0: bad port (1-65535)\n"
		  "t.ini:1: [forward smtp]: no listen address\n");
	parse_bad("[forward smtp]\nlisten = [::1]:65536\nbackend = 10.0.0.1:25\n",
		  "t.ini:2: listen [::1]:65536: bad port (1-65535)\n"
		  "t.ini:1: [forward smtp]: no listen address\n");
	parse_bad("[forward smtp]\nlisten = 192.0.2.1:25\nbackend = mail.lan:smtp\n",
		  "t.ini:3: backend mail.lan:smtp: bad port (1-65535)\n"
		  "t.ini:1: [forward smtp]: no backend\n");
	parse_bad("[global]\nstats_listen = 127.0.0.1:\n" FWD_OK,
		  "t.ini:2: stats_listen 127.0.0.1:: bad port (1-65535)\n");
}

static void test_bad_cidr(void **state)
{
	(void)state;
	fwd_bad("allow = 192.0.2.0/33\n",
		"t.ini:4: allow 192.0.2.0/33: bad CIDR (expected e.g. 192.0.2.0/24 or 2001:db8::/32)\n");
	fwd_bad("deny = 2001:db8::/129, 10.0.0.0/8, example.com\n",
		"t.ini:4: deny 2001:db8::/129: bad CIDR (expected e.g. 192.0.2.0/24 or 2001:db8::/32)\n"
		"t.ini:4: deny example.com: bad CIDR (expected e.g. 192.0.2.0/24 or 2001:db8::/32)\n");
}

static void test_cidr_host_bits_warn(void **state)
{
	struct config *c;

	(void)state;
	c = parse_warn(FWD_OK "allow = 192.0.2.1/24, 10.0.0.0/8\n"
			      "deny = 2001:db8::1/64\n",
		       "t.ini:4: warning: allow 192.0.2.1/24: address bits beyond the prefix length are ignored\n"
		       "t.ini:5: warning: deny 2001:db8::1/64: address bits beyond the prefix length are ignored\n");
	assert_non_null(c);
	/* Kept, masked. */
	assert_int_equal(c->fwd[0].acl.nallow, 2);
	assert_int_equal(c->fwd[0].acl.allow[0].net[3], 0);
	assert_int_equal(c->fwd[0].acl.ndeny, 1);
	config_unref(c);
	/* Warnings are reported next to errors, and counted apart. */
	fwd_bad("allow = 192.0.2.1/24\nmax_per_ip = x\n",
		"t.ini:4: warning: allow 192.0.2.1/24: address bits beyond the prefix length are ignored\n"
		"t.ini:5: max_per_ip = x: expected a whole number from 0 to 1000000\n");
}

static void test_duplicate_key(void **state)
{
	(void)state;
	fwd_bad("backend = 10.0.0.2:25\n", "t.ini:4: duplicate key 'backend'\n");
	parse_bad("[global]\nworkers = 2\n\n; x\nworkers = 3\n" FWD_OK,
		  "t.ini:5: duplicate key 'workers'\n");
	/* The same key in another forward is not a duplicate. */
	config_unref(parse_ok(FWD_OK "[forward b]\nlisten = 192.0.2.1:26\n"
				     "backend = 10.0.0.1:2525\n"));
}

static void test_duplicate_listen(void **state)
{
	(void)state;
	parse_bad("[forward smtp]\nlisten = 192.0.2.1:25, 192.0.2.1:25\n"
		  "backend = 10.0.0.1:25\n",
		  "t.ini:2: duplicate listen address 192.0.2.1:25 (also at line 2)\n");
	/* Across forwards, named once per repeat, pointing at the first. */
	parse_bad(FWD_OK "[forward b]\nlisten = 192.0.2.2:25,\n"
			 "  192.0.2.1:25\nbackend = 10.0.0.1:25\n"
			 "[forward c]\nlisten = [::1]:25, 192.0.2.1:25\n"
			 "backend = 10.0.0.1:25\n",
		  "t.ini:6: duplicate listen address 192.0.2.1:25 (also at line 2)\n"
		  "t.ini:9: duplicate listen address 192.0.2.1:25 (also at line 2)\n");
	/* The same address written two ways. */
	parse_bad("[forward smtp]\nlisten = [::]:25\nbackend = 10.0.0.1:25\n"
		  "[forward b]\nlisten = [0:0::0]:25\nbackend = 10.0.0.1:25\n",
		  "t.ini:5: duplicate listen address [::]:25 (also at line 2)\n");
	parse_bad("[global]\nstats_listen = 192.0.2.1:25\n" FWD_OK,
		  "t.ini:4: listen address 192.0.2.1:25 is also stats_listen\n");
}

static void test_missing_parts(void **state)
{
	(void)state;
	parse_bad("[forward smtp]\nbackend = 10.0.0.1:25\n",
		  "t.ini:1: [forward smtp]: no listen address\n");
	parse_bad("[global]\n\n[forward smtp]\nlisten = 192.0.2.1:25\n",
		  "t.ini:3: [forward smtp]: no backend\n");
	parse_bad(FWD_OK "[forward empty]\n",
		  "t.ini:4: [forward empty]: no listen address\n"
		  "t.ini:4: [forward empty]: no backend\n");
	/* A forward whose only listen item was bad has none. */
	parse_bad("[forward smtp]\nlisten = 192.0.2.1:99999\nbackend = 10.0.0.1:25\n",
		  "t.ini:2: listen 192.0.2.1:99999: bad port (1-65535)\n"
		  "t.ini:1: [forward smtp]: no listen address\n");
}

static void test_no_forward(void **state)
{
	(void)state;
	parse_bad("", "t.ini:1: no [forward NAME] section: nothing to do\n");
	parse_bad("[global]\nworkers = 2\n; end\n",
		  "t.ini:3: no [forward NAME] section: nothing to do\n");
}

static void test_bad_values(void **state)
{
	static const struct {
		const char *line;
		const char *want;
	} g[] = {
		{ "log_level = verbose", "log_level = verbose: expected error, warn, info or debug" },
		{ "log_level = ", "log_level = : expected error, warn, info or debug" },
		{ "log_format = xml", "log_format = xml: expected text or json" },
		{ "syslog = maybe", "syslog = maybe: expected yes or no" },
		{ "syslog = y", "syslog = y: expected yes or no" },
		{ "max_connections = 0", "max_connections = 0: expected a whole number from 1 to 1000000" },
		{ "max_connections = 1000001", "max_connections = 1000001: expected a whole number from 1 to 1000000" },
		{ "max_connections = -5", "max_connections = -5: expected a whole number from 1 to 1000000" },
		{ "max_connections = 10k", "max_connections = 10k: expected a whole number from 1 to 1000000" },
		{ "max_connections = 99999999999999999999999", "max_connections = 99999999999999999999999: expected a whole number from 1 to 1000000" },
		{ "workers = 257", "workers = 257: expected a whole number from 0 to 256" },
		{ "workers = two", "workers = two: expected a whole number from 0 to 256" },
		{ "shutdown_timeout = 30x", "shutdown_timeout = 30x: expected a time (seconds, or with s/m/h)" },
		{ "shutdown_timeout = -1", "shutdown_timeout = -1: expected a time (seconds, or with s/m/h)" },
	};
	static const struct {
		const char *line;
		const char *want;
	} fw[] = {
		{ "max_per_ip = -1", "max_per_ip = -1: expected a whole number from 0 to 1000000" },
		{ "max_per_ip = 1.5", "max_per_ip = 1.5: expected a whole number from 0 to 1000000" },
		{ "connect_timeout = 0", "connect_timeout = 0: expected a time above 0 (seconds, or with s/m/h)" },
		{ "connect_timeout = 10 s", "connect_timeout = 10 s: expected a time above 0 (seconds, or with s/m/h)" },
		{ "idle_timeout = 1d", "idle_timeout = 1d: expected a time above 0 (seconds, or with s/m/h)" },
		{ "idle_timeout = 0s", "idle_timeout = 0s: expected a time above 0 (seconds, or with s/m/h)" },
		{ "proxy_protocol = v3", "proxy_protocol = v3: expected off, v1 or v2" },
		{ "proxy_protocol = yes", "proxy_protocol = yes: expected off, v1 or v2" },
		{ "tls = on", "tls = on: expected off, implicit or starttls" },
		{ "tls = ssl", "tls = ssl: expected off, implicit or starttls" },
		{ "tls_required = sometimes", "tls_required = sometimes: expected yes or no" },
		{ "log_greeting = 2", "log_greeting = 2: expected yes or no" },
		{ "reject_early_talkers = nah", "reject_early_talkers = nah: expected yes or no" },
	};
	char text[512], want[512];

	(void)state;
	for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
		snprintf(text, sizeof(text), "; comment\n[global]\n%s\n" FWD_OK,
			 g[i].line);
		snprintf(want, sizeof(want), "t.ini:3: %s\n", g[i].want);
		parse_bad(text, want);
	}
	for (size_t i = 0; i < sizeof(fw) / sizeof(fw[0]); i++) {
		snprintf(text, sizeof(text), FWD_OK "\n%s\n", fw[i].line);
		snprintf(want, sizeof(want), "t.ini:5: %s\n", fw[i].want);
		parse_bad(text, want);
	}
}

static void test_empty_lists(void **state)
{
	struct config *c;

	(void)state;
	parse_bad("[forward smtp]\nlisten =\nbackend = 10.0.0.1:25\n",
		  "t.ini:2: listen: empty list\n"
		  "t.ini:1: [forward smtp]: no listen address\n");
	fwd_bad("allow = 192.0.2.0/24, , 10.0.0.0/8\n",
		"t.ini:4: allow: empty list item\n");
	fwd_bad("allow = ,192.0.2.0/24\n", "t.ini:4: allow: empty list item\n");
	fwd_bad("deny = 192.0.2.0/24,,10.0.0.0/8\n",
		"t.ini:4: deny: empty list item\n");
	/* A trailing comma is fine (the list may go on in a continuation
	 * line, or not). */
	c = parse_ok(FWD_OK "allow = 192.0.2.0/24,\n");
	assert_int_equal(c->fwd[0].acl.nallow, 1);
	config_unref(c);
}

static void test_tls_needs_files(void **state)
{
	char text[1024], want[1024];

	(void)state;
	parse_bad(FWD_OK "tls = implicit\n",
		  "t.ini:1: [forward smtp]: tls = implicit needs tls_cert\n"
		  "t.ini:1: [forward smtp]: tls = implicit needs tls_key\n");
	snprintf(text, sizeof(text), FWD_OK "tls = starttls\ntls_cert = %s\n",
		 cert_path);
	parse_bad(text, "t.ini:1: [forward smtp]: tls = starttls needs tls_key\n");
	snprintf(text, sizeof(text), FWD_OK "tls = starttls\ntls_key = %s\n",
		 key_path);
	parse_bad(text, "t.ini:1: [forward smtp]: tls = starttls needs tls_cert\n");
	/* Missing files. */
	snprintf(text, sizeof(text),
		 FWD_OK "tls = implicit\ntls_cert = %s/nope.pem\ntls_key = %s\n",
		 tmpdir, key_path);
	snprintf(want, sizeof(want),
		 "t.ini:1: [forward smtp]: tls_cert %s/nope.pem: No such file or directory\n",
		 tmpdir);
	parse_bad(text, want);
	snprintf(text, sizeof(text),
		 FWD_OK "tls = implicit\ntls_cert = %s\ntls_key = %s/nokey.pem\n",
		 cert_path, tmpdir);
	snprintf(want, sizeof(want),
		 "t.ini:1: [forward smtp]: tls_key %s/nokey.pem: No such file or directory\n",
		 tmpdir);
	parse_bad(text, want);
	/* Unreadable even for root: a path through a plain file. */
	snprintf(text, sizeof(text),
		 FWD_OK "tls = starttls\ntls_cert = %s/sub\ntls_key = %s\n",
		 cert_path, key_path);
	snprintf(want, sizeof(want),
		 "t.ini:1: [forward smtp]: tls_cert %s/sub: Not a directory\n",
		 cert_path);
	parse_bad(text, want);
	/* tls = off: the files are not looked at. */
	config_unref(parse_ok(FWD_OK "tls_cert = /nonexistent/c.pem\n"
				     "tls_key = /nonexistent/k.pem\n"));
}

static void test_tls_unreadable_cert(void **state)
{
	char path[160], text[1024], want[1024];

	(void)state;
	if (geteuid() == 0)
		skip(); /* root reads a mode 000 file */
	path_in_tmp(path, sizeof(path), "noread.pem");
	write_file(path, "x", 1);
	assert_int_equal(chmod(path, 0), 0);
	snprintf(text, sizeof(text),
		 FWD_OK "tls = implicit\ntls_cert = %s\ntls_key = %s\n", path,
		 key_path);
	snprintf(want, sizeof(want),
		 "t.ini:1: [forward smtp]: tls_cert %s: Permission denied\n",
		 path);
	parse_bad(text, want);
}

static void test_tls_required_warning(void **state)
{
	struct config *c;

	(void)state;
	c = parse_warn(FWD_OK "tls_required = yes\n",
		       "t.ini:1: warning: [forward smtp]: tls_required applies only to tls = starttls\n");
	assert_true(c->fwd[0].tls_required);
	config_unref(c);
}

/* --- inih edges: lines, continuations, comments ------------------------ */

static void test_syntax_errors(void **state)
{
	(void)state;
	fwd_bad("max_per_ip 5\n", "t.ini:4: syntax error (expected key = value)\n");
	/* The last line, without a newline: reported once. */
	fwd_bad("oops", "t.ini:4: syntax error (expected key = value)\n");
	parse_bad("just words\n" FWD_OK,
		  "t.ini:1: syntax error (expected key = value)\n");
	fwd_bad("]\n", "t.ini:4: syntax error (expected key = value)\n");
	/* An empty key. */
	fwd_bad("= 5\n", "t.ini:4: unknown key '' in [forward]\n");
}

static void test_comments(void **state)
{
	struct config *c;

	(void)state;
	c = parse_ok("; leading comment\n# hash comment\n\n"
		     "[global] ; trailing comment on a header\n"
		     "workers = 4 ; four\n"
		     "user = mail;not-a-comment\n"
		     "   ; indented comment\n"
		     "[forward smtp]\n"
		     "listen = 192.0.2.1:25 ; public\n"
		     "backend = 10.0.0.1:2525\t; the LAN box\n");
	assert_int_equal(c->workers, 4);
	/* ';' starts a comment only after white space. */
	assert_string_equal(c->user, "mail;not-a-comment");
	assert_string_equal(c->fwd[0].listen[0].text, "192.0.2.1:25");
	assert_int_equal(c->fwd[0].listen[0].line, 9);
	assert_string_equal(c->fwd[0].backend[0].text, "10.0.0.1:2525");
	config_unref(c);
	/* '#' is a comment only at the start of a line. */
	fwd_bad("max_per_ip = 5 # five\n",
		"t.ini:4: max_per_ip = 5 # five: expected a whole number from 0 to 1000000\n");
	fwd_bad("max_per_ip = 5;five\n",
		"t.ini:4: max_per_ip = 5;five: expected a whole number from 0 to 1000000\n");
}

static void test_continuation_lines(void **state)
{
	struct config *c;
	const struct forward_cfg *f;

	(void)state;
	c = parse_ok("[forward smtp]\n"
		     "listen = 192.0.2.1:25,\n"
		     "         192.0.2.2:25\n"
		     "\t[::1]:25, [::2]:25 ; IPv6 too\n"
		     "  ; a comment between\n"
		     "\n"
		     "    [::3]:25\n"
		     "backend = 10.0.0.1:2525\n"
		     "  mail.lan:2525\n"
		     "allow = 192.0.2.0/24\n"
		     "  2001:db8::/32\n"
		     "deny = 192.0.2.9\n"
		     "  192.0.2.10,\n"
		     "  192.0.2.11\n");
	f = &c->fwd[0];
	assert_int_equal(f->nlisten, 5);
	assert_string_equal(f->listen[0].text, "192.0.2.1:25");
	assert_int_equal(f->listen[0].line, 2);
	assert_string_equal(f->listen[1].text, "192.0.2.2:25");
	assert_int_equal(f->listen[1].line, 3);
	assert_string_equal(f->listen[2].text, "[::1]:25");
	assert_int_equal(f->listen[2].line, 4);
	assert_string_equal(f->listen[3].text, "[::2]:25");
	assert_int_equal(f->listen[3].line, 4);
	assert_string_equal(f->listen[4].text, "[::3]:25");
	assert_int_equal(f->listen[4].line, 7);
	assert_int_equal(f->nbackend, 2);
	assert_string_equal(f->backend[1].text, "mail.lan:2525");
	assert_int_equal(f->backend[1].line, 9);
	assert_int_equal(f->acl.nallow, 2);
	assert_int_equal(f->acl.ndeny, 3);
	config_unref(c);

	/* An indented first key of a section is a key, not a continuation
	 * (there is nothing to continue)... */
	c = parse_ok("[forward smtp]\n  listen = 192.0.2.1:25\n"
		     "backend = 10.0.0.1:2525\n");
	assert_int_equal(c->fwd[0].nlisten, 1);
	assert_int_equal(c->fwd[0].nbackend, 1);
	config_unref(c);
	/* ...but after a key, an indented key continues it, as in inih and
	 * Python's configparser: said plainly. */
	parse_bad("[forward smtp]\n  listen = 192.0.2.1:25\n"
		  "  backend = 10.0.0.1:2525\n",
		  "t.ini:3: a line starting with white space continues 'listen'; start a key at the beginning of the line\n"
		  "t.ini:1: [forward smtp]: no backend\n");

	/* Only lists continue. */
	fwd_bad("max_per_ip = 5\n  6\n",
		"t.ini:5: max_per_ip: a line starting with white space continues a list; max_per_ip is not one\n");
	/* A continuation of a key that was reported is not reported again. */
	fwd_bad("lsten = 192.0.2.1:26\n   192.0.2.1:27\n",
		"t.ini:4: unknown key 'lsten' in [forward]\n");
	/* A bad item on a continuation line has that line's number. */
	fwd_bad("allow = 192.0.2.0/24,\n\n ; note\n   192.0.2.0/40\n",
		"t.ini:7: allow 192.0.2.0/40: bad CIDR (expected e.g. 192.0.2.0/24 or 2001:db8::/32)\n");
	/* An indented section header after a key continues the value. */
	fwd_bad("deny = 192.0.2.9\n  [forward b]\n",
		"t.ini:5: deny [forward b]: bad CIDR (expected e.g. 192.0.2.0/24 or 2001:db8::/32)\n");
}

/* A line of exactly n characters ("; xxx..."). */
static char *comment_line(size_t n)
{
	char *s = malloc(n + 1);

	assert_non_null(s);
	memset(s, 'x', n);
	s[0] = ';';
	s[n] = '\0';
	return s;
}

static void test_long_lines(void **state)
{
	char *l198 = comment_line(198), *l199 = comment_line(199);
	char text[2048], val[256];
	struct config *c;

	(void)state;
	/* 198 characters fit (INI_MAX_LINE 200 less '\n' and NUL), with
	 * "\n", "\r\n" or at the end of the text. */
	snprintf(text, sizeof(text), "%s\n%s\r\n" FWD_OK "%s", l198, l198,
		 l198);
	config_unref(parse_ok(text));
	/* 199 do not, wherever they are; the line numbers after stay right. */
	snprintf(text, sizeof(text),
		 "%s\n[forward smtp]\nlisten = 192.0.2.1:25\n%s\r\n"
		 "backend = 10.0.0.1:2525\nworkers = 1\n%s",
		 l199, l199, l199);
	parse_bad(text, "t.ini:1: line too long (at most 198 characters)\n"
			"t.ini:4: line too long (at most 198 characters)\n"
			"t.ini:6: unknown key 'workers' in [forward]\n"
			"t.ini:7: line too long (at most 198 characters)\n");
	/* A long value is refused, not cut at 198 and then misread. */
	memset(val, '1', 190);
	val[190] = '\0';
	snprintf(text, sizeof(text), FWD_OK "max_per_ip = %s\n", val);
	parse_bad(text, "t.ini:4: line too long (at most 198 characters)\n");
	/* Far longer than inih's buffer: one message, and the rest of that
	 * line is not read as further lines. */
	{
		char *huge = comment_line(5000);
		char *t = malloc(6000);

		assert_non_null(t);
		huge[100] = '\n'; /* line 1: 100 chars */
		huge[101] = 'k';
		snprintf(t, 6000, "%s\n" FWD_OK, huge);
		parse_bad(t, "t.ini:2: line too long (at most 198 characters)\n");
		free(t);
		free(huge);
	}
	/* A key = value line of exactly 198 characters is read whole. */
	snprintf(text, sizeof(text), FWD_OK "tls_ciphers = ");
	memset(val, 'C', 198 - strlen("tls_ciphers = "));
	val[198 - strlen("tls_ciphers = ")] = '\0';
	strcat(text, val);
	strcat(text, "\n");
	c = parse_ok(text);
	assert_string_equal(c->fwd[0].tls_ciphers, val);
	config_unref(c);
	free(l198);
	free(l199);
}

static void test_line_numbers(void **state)
{
	(void)state;
	/* Physical lines: comments, blank lines, CRLF, continuation lines
	 * and a too-long line all count as one each. */
	parse_bad("; one\n"
		  "\n"
		  "[global]\r\n"
		  "  ; four\r\n"
		  "workers = 2\n"
		  "log_level = loud\n"
		  "[forward smtp]\n"
		  "listen = 192.0.2.1:25,\n"
		  "   192.0.2.2:25\n"
		  "\n"
		  "   192.0.2.3:x\n"
		  "backend = 10.0.0.1:2525\n"
		  "bogus\n"
		  "[nope]\n"
		  "user = x\n"
		  "[forward b]\n"
		  "listen = 192.0.2.2:25\n"
		  "backend = 10.0.0.1:2525, 10.0.0.1:0\n"
		  "proxy_protocol = v9\n"
		  "tls = implicit\n",
		  "t.ini:6: log_level = loud: expected error, warn, info or debug\n"
		  "t.ini:11: listen 192.0.2.3:x: bad port (1-65535)\n"
		  "t.ini:13: syntax error (expected key = value)\n"
		  "t.ini:14: unknown section [nope] (expected [global] or [forward NAME])\n"
		  "t.ini:18: backend 10.0.0.1:0: bad port (1-65535)\n"
		  "t.ini:19: proxy_protocol = v9: expected off, v1 or v2\n"
		  "t.ini:16: [forward b]: tls = implicit needs tls_cert\n"
		  "t.ini:16: [forward b]: tls = implicit needs tls_key\n"
		  "t.ini:17: duplicate listen address 192.0.2.2:25 (also at line 9)\n");
}

static void test_many_errors_all_reported(void **state)
{
	char text[4096], want[8192];
	size_t tl = 0, wl = 0;

	(void)state;
	/* Forty bad lines: forty messages, none lost or merged. */
	tl += (size_t)snprintf(text + tl, sizeof(text) - tl, FWD_OK);
	for (int i = 0; i < 40; i++) {
		tl += (size_t)snprintf(text + tl, sizeof(text) - tl,
				       "x%d = 1\n", i);
		wl += (size_t)snprintf(want + wl, sizeof(want) - wl,
				       "t.ini:%d: unknown key 'x%d' in [forward]\n",
				       i + 4, i);
	}
	parse_bad(text, want);
}

static void test_bom(void **state)
{
	struct config *c;

	(void)state;
	c = parse_ok("\xEF\xBB\xBF[global]\nworkers = 3\n" FWD_OK);
	assert_int_equal(c->workers, 3);
	config_unref(c);
	c = parse_ok("\xEF\xBB\xBF; comment\n" FWD_OK);
	assert_int_equal(c->fwd[0].line, 2);
	config_unref(c);
	/* Only at the very start. */
	parse_bad(FWD_OK "\xEF\xBB\xBFworkers = 3\n",
		  "t.ini:4: unknown key '\xEF\xBB\xBFworkers' in [forward]\n");
}

/* --- files ------------------------------------------------------------- */

static void test_load_file(void **state)
{
	char path[160];
	struct config_diag d = { 0 };
	struct config *c;
	static const char crlf[] =
		"; smtpfwd\r\n[global]\r\nlog_format = json\r\n\r\n"
		"[forward smtp]\r\nlisten = 192.0.2.1:25,\r\n  [::1]:25\r\n"
		"backend = mail.lan:2525\r\n";

	(void)state;
	path_in_tmp(path, sizeof(path), "crlf.ini");
	write_file(path, crlf, sizeof(crlf) - 1);
	c = config_load(path, &d);
	assert_non_null(c);
	drop_identity_advice(&d);
	assert_int_equal(d.errors, 0);
	assert_int_equal(d.warnings, 0);
	assert_string_equal(c->path, path);
	assert_int_equal(c->log_format, LOG_FMT_JSON);
	assert_int_equal(c->fwd[0].line, 5);
	assert_int_equal(c->fwd[0].nlisten, 2);
	assert_int_equal(c->fwd[0].listen[1].line, 7);
	assert_string_equal(c->fwd[0].backend[0].text, "mail.lan:2525");
	config_unref(c);
	config_diag_free(&d);
}

static void test_load_errors(void **state)
{
	char path[160], want[512];
	struct config_diag d = { 0 };
	static const char bad[] = "[global]\nworkers = x\n\n[forward smtp]\n"
				  "listen = 192.0.2.1:25\n";
	static const char nul[] = "[forward smtp]\nlisten = 192.0.2.1:25\0junk\n"
				  "backend = 10.0.0.1:25\n";

	(void)state;
	path_in_tmp(path, sizeof(path), "t.ini");
	write_file(path, bad, sizeof(bad) - 1);
	assert_null(config_load(path, &d));
	snprintf(want, sizeof(want),
		 "%s:2: workers = x: expected a whole number from 0 to 256\n"
		 "%s:4: [forward smtp]: no backend\n",
		 path, path);
	assert_string_equal(d.text, want);
	assert_int_equal(d.errors, 2);
	config_diag_free(&d);

	/* A NUL byte would silently cut the line: refused. */
	path_in_tmp(path, sizeof(path), "nul.ini");
	write_file(path, nul, sizeof(nul) - 1);
	assert_null(config_load(path, &d));
	snprintf(want, sizeof(want),
		 "%s:2: NUL byte in line\n"
		 "%s:1: [forward smtp]: no listen address\n",
		 path, path);
	assert_string_equal(d.text, want);
	assert_int_equal(d.errors, 2);
	config_diag_free(&d);

	path_in_tmp(path, sizeof(path), "missing.ini");
	assert_null(config_load(path, &d));
	snprintf(want, sizeof(want), "%s: No such file or directory\n", path);
	assert_string_equal(d.text, want);
	assert_int_equal(d.errors, 1);
	config_diag_free(&d);

	/* Messages from several loads accumulate until freed. */
	assert_null(config_load(path, &d));
	assert_null(config_parse_string("", "x.ini", &d));
	snprintf(want, sizeof(want),
		 "%s: No such file or directory\n"
		 "x.ini:1: no [forward NAME] section: nothing to do\n",
		 path);
	assert_string_equal(d.text, want);
	assert_int_equal(d.errors, 2);
	config_diag_free(&d);
}

/* --- quick mode -------------------------------------------------------- */

/* client_identity: one choice with proxy_protocol, advice when unset. */
static void test_client_identity(void **state)
{
	struct config_diag d = { 0 };
	struct config *c;

	(void)state;
	/* Unset: none, and the advice names the forward's line. */
	c = config_parse_string("[global]\n" FWD_OK, "t.ini", &d);
	assert_non_null(c);
	assert_int_equal(c->fwd[0].identity, IDENT_NONE);
	assert_int_equal(d.warnings, 1);
	assert_non_null(strstr(d.text, "t.ini:2: warning: [forward smtp]: the backend will see"));
	config_unref(c);
	config_diag_free(&d);

	/* Written as none: no advice. */
	c = parse_ok(FWD_OK "client_identity = none\n");
	assert_int_equal(c->fwd[0].identity, IDENT_NONE);
	config_unref(c);
	c = config_parse_string(FWD_OK "client_identity = none\n", "t.ini", &d);
	assert_null(d.text);
	config_unref(c);

	/* proxy-v1/v2 set proxy_protocol; proxy_protocol alone sets it too. */
	c = parse_ok(FWD_OK "client_identity = proxy-v1\n");
	assert_int_equal(c->fwd[0].proxy_protocol, PROXY_V1);
	config_unref(c);
	c = parse_ok(FWD_OK "proxy_protocol = v2\n");
	assert_int_equal(c->fwd[0].identity, IDENT_PROXY_V2);
	config_unref(c);
	c = parse_ok(FWD_OK "client_identity = xclient\n");
	assert_int_equal(c->fwd[0].identity, IDENT_XCLIENT);
	assert_int_equal(c->fwd[0].proxy_protocol, PROXY_OFF);
	config_unref(c);
	c = parse_ok(FWD_OK "client_identity = proxy-v2\nproxy_protocol = v2\n");
	assert_int_equal(c->fwd[0].proxy_protocol, PROXY_V2);
	config_unref(c);

	/* Contradictions are errors at the proxy_protocol line. */
	fwd_bad("client_identity = xclient\nproxy_protocol = v2\n",
		"t.ini:5: [forward smtp]: proxy_protocol = v2 contradicts client_identity = xclient (line 4)\n");
	fwd_bad("proxy_protocol = v1\nclient_identity = proxy-v2\n",
		"t.ini:4: [forward smtp]: proxy_protocol = v1 contradicts client_identity = proxy-v2 (line 5)\n");
	fwd_bad("client_identity = maybe\n",
		"t.ini:4: client_identity = maybe: expected none, proxy-v1, proxy-v2 or xclient\n");

	/* Among errors the advice is left out. */
	c = config_parse_string(FWD_OK "max_per_ip = lots\n", "t.ini", &d);
	assert_null(c);
	assert_int_equal(d.warnings, 0);
	assert_null(strstr(d.text, IDENTITY_ADVICE));
	config_diag_free(&d);
}

static void test_from_args(void **state)
{
	const char *l1[] = { "0.0.0.0:25" }, *b1[] = { "mail.lan:2525" };
	const char *l2[] = { "0.0.0.0:25", "[::]:587" };
	const char *b2[] = { "10.0.0.1:25", "10.0.0.1:587" };
	struct config_diag d = { 0 };
	struct config *c;

	(void)state;
	c = config_from_args(l1, 1, b1, 1, IDENT_PROXY_V2, &d);
	assert_non_null(c);
	assert_int_equal(d.errors, 0);
	assert_int_equal(c->nfwd, 1);
	assert_string_equal(c->fwd[0].listen[0].text, "0.0.0.0:25");
	assert_string_equal(c->fwd[0].backend[0].text, "mail.lan:2525");
	assert_int_equal(c->fwd[0].proxy_protocol, PROXY_V2);
	/* Everything else at its default. */
	assert_int_equal(c->workers, 1);
	assert_int_equal(c->max_connections, 10000);
	assert_true(c->fwd[0].connect_timeout == 10.0);
	assert_int_equal(c->fwd[0].tls, TLS_OFF);
	config_unref(c);

	c = config_from_args(l2, 2, b2, 2, IDENT_UNSET, &d);
	assert_non_null(c);
	assert_int_equal(c->nfwd, 2);
	assert_string_equal(c->fwd[1].listen[0].text, "[::]:587");
	assert_string_equal(c->fwd[1].backend[0].text, "10.0.0.1:587");
	assert_int_equal(c->fwd[1].proxy_protocol, PROXY_OFF);
	config_unref(c);
	/* Without -P each forward gets the identity advice, nothing else. */
	assert_int_equal(d.warnings, 2);
	drop_identity_advice(&d);
	assert_null(d.text);

	/* Unpaired. */
	assert_null(config_from_args(l2, 2, b1, 1, IDENT_UNSET, &d));
	assert_string_equal(d.text,
			    "command line: give -l LISTEN and -b BACKEND in pairs\n");
	assert_int_equal(d.errors, 1);
	config_diag_free(&d);
	assert_null(config_from_args(l1, 0, b1, 0, IDENT_UNSET, &d));
	assert_int_equal(d.errors, 1);
	config_diag_free(&d);
}

static void test_from_args_errors(void **state)
{
	const char *lbad[] = { "mail.lan:25" }, *b[] = { "10.0.0.1:25" };
	const char *l[] = { "0.0.0.0:25" };
	const char *nl[] = { "0.0.0.0:25\n[global]" };
	const char *inj[] = { "10.0.0.1:25 ; x" };
	const char *ld[] = { "0.0.0.0:25", "0.0.0.0:25" };
	const char *bd[] = { "10.0.0.1:25", "10.0.0.2:25" };
	struct config_diag d = { 0 };
	struct config *c;

	(void)state;
	/* The same checks as a file; the messages say where they came
	 * from, without line numbers of a file the user never wrote. */
	assert_null(config_from_args(lbad, 1, b, 1, IDENT_UNSET, &d));
	assert_string_equal(d.text,
			    "command line: listen mail.lan:25: bad IPv4 address (host names are allowed only for backends)\n"
			    "command line: [forward quick1]: no listen address\n");
	assert_int_equal(d.errors, 2);
	assert_int_equal(d.warnings, 0);
	config_diag_free(&d);

	assert_null(config_from_args(ld, 2, bd, 2, IDENT_UNSET, &d));
	assert_string_equal(d.text,
			    "command line: duplicate listen address 0.0.0.0:25 (also at line 3)\n");
	assert_int_equal(d.errors, 1);
	config_diag_free(&d);

	/* No way to smuggle INI syntax in. */
	assert_null(config_from_args(nl, 1, b, 1, IDENT_UNSET, &d));
	assert_string_equal(d.text,
			    "command line: control characters in an address\n");
	config_diag_free(&d);
	c = config_from_args(l, 1, inj, 1, IDENT_PROXY_V1, &d);
	/* " ; x" is an inline comment to inih: the address alone is used. */
	assert_non_null(c);
	assert_string_equal(c->fwd[0].backend[0].text, "10.0.0.1:25");
	assert_int_equal(c->fwd[0].proxy_protocol, PROXY_V1);
	config_unref(c);
	config_diag_free(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_every_key),
		cmocka_unit_test(test_value_spellings),
		cmocka_unit_test(test_several_forwards),
		cmocka_unit_test(test_ref_unref),
		cmocka_unit_test(test_enum_names),
		cmocka_unit_test(test_duration),
		cmocka_unit_test(test_unknown_key),
		cmocka_unit_test(test_unknown_section),
		cmocka_unit_test(test_bad_addresses),
		cmocka_unit_test(test_bad_ports),
		cmocka_unit_test(test_bad_cidr),
		cmocka_unit_test(test_cidr_host_bits_warn),
		cmocka_unit_test(test_duplicate_key),
		cmocka_unit_test(test_duplicate_listen),
		cmocka_unit_test(test_missing_parts),
		cmocka_unit_test(test_no_forward),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_empty_lists),
		cmocka_unit_test(test_tls_needs_files),
		cmocka_unit_test(test_tls_unreadable_cert),
		cmocka_unit_test(test_tls_required_warning),
		cmocka_unit_test(test_syntax_errors),
		cmocka_unit_test(test_comments),
		cmocka_unit_test(test_continuation_lines),
		cmocka_unit_test(test_long_lines),
		cmocka_unit_test(test_line_numbers),
		cmocka_unit_test(test_many_errors_all_reported),
		cmocka_unit_test(test_bom),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_from_args),
		cmocka_unit_test(test_client_identity),
		cmocka_unit_test(test_from_args_errors),
	};

	return cmocka_run_group_tests_name("config", tests, group_setup,
					   group_teardown);
}
