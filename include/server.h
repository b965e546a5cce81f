/* server: the event loop and everything process-wide: listeners per
 * configuration, signals (TERM/INT drain, HUP reload), limits. */
#ifndef SMTPFWD_SERVER_H
#define SMTPFWD_SERVER_H

#include "config.h"

/* Run until told to stop. cfg is adopted (the server unrefs it). path is
 * the file to re-read on SIGHUP (NULL: quick mode, HUP re-applies the
 * same config). Returns the process exit status. */
int server_run(struct config *cfg, const char *path);

#endif
