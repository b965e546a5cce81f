/* main: command line. Everything else lives in the modules. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkrelay.h"
#include "config.h"
#include "log.h"
#include "pump.h"
#include "server.h"
#include "tls.h"

#define MAIN_MAX_PAIRS 64

static void main_usage(FILE *out)
{
	fprintf(out,
		"usage: smtpfwd [-t] [-c FILE]\n"
		"       smtpfwd [-t] -l LISTEN -b BACKEND [-P v1|v2|xclient|none] [-l ... -b ...]\n"
		"       smtpfwd --check-relay NAME [-c FILE]\n"
		"       smtpfwd -V | -h\n"
		"\n"
		"  -c FILE     configuration file (default %s)\n"
		"  -t          check the configuration and exit\n"
		"  -l LISTEN   quick mode: address to listen on, e.g. 0.0.0.0:25\n"
		"  -b BACKEND  quick mode: mail server for the -l before it, e.g. 10.0.0.2:2525\n"
		"  -P ID       quick mode: how the backends learn the client's address:\n"
		"              v1 or v2 (PROXY header), xclient, or none\n"
		"  -R, --check-relay NAME\n"
		"              open-relay self-test through forward NAME: exit 0 when\n"
		"              the backend refuses to relay, 1 when it accepts, 2 when\n"
		"              the test cannot run (no mail is ever sent)\n"
		"  -V          print the version\n"
		"  -h          print this help\n"
		"\n"
		"Runs in the foreground and logs to stderr. SIGTERM/SIGINT: stop\n"
		"accepting and let sessions finish; SIGHUP: re-read FILE.\n"
		"Environment: SMTPFWD_LISTEN, SMTPFWD_BACKEND (comma-separated) and\n"
		"SMTPFWD_PROXY_PROTOCOL (off|v1|v2) or SMTPFWD_CLIENT_IDENTITY\n"
		"(none|proxy-v1|proxy-v2|xclient) define one forward when neither\n"
		"-c nor -l/-b is given. SMTPFWD_NO_SPLICE=1 forces the copy pump.\n",
		CONFIG_DEFAULT_PATH);
}

/* Containers: SMTPFWD_LISTEN / SMTPFWD_BACKEND (comma-separated lists)
 * and SMTPFWD_PROXY_PROTOCOL describe one forward "env". They are used
 * only when the command line names neither -c nor -l/-b: what is typed
 * wins over what is inherited. NULL (and no message) when unset. */
static struct config *main_env_config(struct config_diag *diag)
{
	const char *listen = getenv("SMTPFWD_LISTEN");
	const char *backend = getenv("SMTPFWD_BACKEND");
	const char *pp = getenv("SMTPFWD_PROXY_PROTOCOL");
	const char *id = getenv("SMTPFWD_CLIENT_IDENTITY");
	char text[4096];
	int n;

	if (listen == NULL && backend == NULL)
		return NULL;
	for (const char *v = listen; v != NULL && *v != '\0'; v++)
		if ((unsigned char)*v < 0x20)
			listen = "";
	for (const char *v = backend; v != NULL && *v != '\0'; v++)
		if ((unsigned char)*v < 0x20)
			backend = "";
	for (const char *v = pp; v != NULL && *v != '\0'; v++)
		if ((unsigned char)*v < 0x20)
			pp = "";
	for (const char *v = id; v != NULL && *v != '\0'; v++)
		if ((unsigned char)*v < 0x20)
			id = "";
	/* Line numbers in messages count in this text: line 2 is listen,
	 * 3 backend, 4 proxy_protocol, 5 client_identity. */
	n = snprintf(text, sizeof(text),
		     "[forward env]\n%s%s\n%s%s\n%s%s\n%s%s\n",
		     listen != NULL ? "listen = " : "; no SMTPFWD_LISTEN",
		     listen != NULL ? listen : "",
		     backend != NULL ? "backend = " : "; no SMTPFWD_BACKEND",
		     backend != NULL ? backend : "",
		     pp != NULL ? "proxy_protocol = " : ";", pp != NULL ? pp : "",
		     id != NULL ? "client_identity = " : ";", id != NULL ? id : "");
	if (n < 0 || (size_t)n >= sizeof(text)) {
		fprintf(stderr, "smtpfwd: SMTPFWD_LISTEN/SMTPFWD_BACKEND too long\n");
		return NULL;
	}
	return config_parse_string(text, "environment", diag);
}

/* What only OpenSSL can tell: the key matches the certificate, the chain
 * parses, the cipher list is valid. The daemon does the same at start. */
static unsigned main_check_tls(const struct config *cfg, const char *name)
{
	unsigned errors = 0;
	size_t i;

	for (i = 0; i < cfg->nfwd; i++) {
		const struct forward_cfg *f = &cfg->fwd[i];
		char err[512];
		struct tls_ctx *t;

		if (f->tls == TLS_OFF)
			continue;
		t = tls_ctx_new(f->tls_cert, f->tls_key, f->tls_protocols,
				f->tls_ciphers, err, sizeof(err));
		if (t == NULL) {
			fprintf(stderr, "%s:%d: [forward %s]: %s\n", name,
				f->line, f->name, err);
			errors++;
		}
		tls_ctx_free(t);
	}
	return errors;
}

int main(int argc, char **argv)
{
	const char *path = NULL, *listen[MAIN_MAX_PAIRS], *backend[MAIN_MAX_PAIRS];
	size_t nlisten = 0, nbackend = 0;
	enum client_identity id = IDENT_UNSET;
	bool test_only = false, pp_set = false;
	struct config_diag diag = { 0 };
	struct config *cfg;
	const char *env, *check_relay = NULL, *source = "command line";
	static const struct option longopts[] = {
		{ "check-relay", required_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "c:tl:b:P:R:Vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'R':
			check_relay = optarg;
			break;
		case 'c':
			path = optarg;
			break;
		case 't':
			test_only = true;
			break;
		case 'l':
		case 'b':
			if ((c == 'l' ? nlisten : nbackend) == MAIN_MAX_PAIRS) {
				fprintf(stderr, "smtpfwd: at most %d -%c\n",
					MAIN_MAX_PAIRS, c);
				return 2;
			}
			if (c == 'l')
				listen[nlisten++] = optarg;
			else
				backend[nbackend++] = optarg;
			break;
		case 'P':
			if (strcmp(optarg, "v1") == 0) {
				id = IDENT_PROXY_V1;
			} else if (strcmp(optarg, "v2") == 0) {
				id = IDENT_PROXY_V2;
			} else if (strcmp(optarg, "xclient") == 0) {
				id = IDENT_XCLIENT;
			} else if (strcmp(optarg, "none") == 0) {
				id = IDENT_NONE;
			} else {
				fprintf(stderr, "smtpfwd: -P takes v1, v2, xclient or none, not \"%s\"\n",
					optarg);
				return 2;
			}
			pp_set = true;
			break;
		case 'V':
			printf("smtpfwd %s\n", SMTPFWD_VERSION);
			return 0;
		case 'h':
			main_usage(stdout);
			return 0;
		default:
			main_usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "smtpfwd: unexpected argument \"%s\"\n", argv[optind]);
		main_usage(stderr);
		return 2;
	}
	if ((nlisten > 0 || nbackend > 0) && path != NULL) {
		fprintf(stderr, "smtpfwd: use either -c FILE or -l/-b, not both\n");
		return 2;
	}
	if (pp_set && nlisten == 0) {
		fprintf(stderr, "smtpfwd: -P goes with -l/-b (in a file: proxy_protocol)\n");
		return 2;
	}

	if (nlisten > 0 || nbackend > 0) {
		cfg = config_from_args(listen, nlisten, backend, nbackend, id, &diag);
	} else if (path == NULL &&
		   (getenv("SMTPFWD_LISTEN") != NULL || getenv("SMTPFWD_BACKEND") != NULL)) {
		cfg = main_env_config(&diag);
		source = "environment";
	} else {
		if (path == NULL)
			path = CONFIG_DEFAULT_PATH;
		cfg = config_load(path, &diag);
	}
	if (cfg != NULL && !test_only && check_relay == NULL) {
		/* The daemon: warnings become log lines like everything else. */
		log_setup(cfg->log_level, cfg->log_format, cfg->syslog);
		log_text_lines(LOG_LVL_WARN, "config", diag.text);
	} else if (diag.len > 0) {
		fputs(diag.text, stderr);
	}
	config_diag_free(&diag);
	if (cfg == NULL && check_relay != NULL)
		return CHECKRELAY_FAILED; /* "could not run", never "open" */
	if (cfg == NULL) {
		if (!test_only)
			fprintf(stderr, "smtpfwd: not starting: configuration has errors\n");
		return 1;
	}
	if (check_relay != NULL) {
		enum checkrelay_result r = checkrelay_run(cfg, check_relay, stdout);

		config_unref(cfg);
		return (int)r;
	}
	if (test_only) {
		if (main_check_tls(cfg, path != NULL ? path : source) > 0) {
			config_unref(cfg);
			return 1;
		}
		printf("%s: ok\n", path != NULL ? path : source);
		config_unref(cfg);
		return 0;
	}
	env = getenv("SMTPFWD_NO_SPLICE");
	if (env != NULL && *env != '\0' && strcmp(env, "0") != 0)
		pump_disable_splice();
	return server_run(cfg, path);
}
