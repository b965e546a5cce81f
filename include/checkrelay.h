/* checkrelay: the open-relay self-test (smtpfwd --check-relay NAME). It
 * talks to the forward's backend the way a session would, with an
 * outside client address (192.0.2.1, documentation range) passed on by
 * the forward's identity method, and asks the backend to relay:
 * MAIL FROM:<check@example.org>, RCPT TO:<check@example.net>. It never
 * sends DATA, so no mail is ever sent. */
#ifndef SMTPFWD_CHECKRELAY_H
#define SMTPFWD_CHECKRELAY_H

#include <stdio.h>

#include "config.h"

enum checkrelay_result {
	CHECKRELAY_CLOSED = 0, /* relaying refused: good */
	CHECKRELAY_OPEN = 1, /* the backend accepted the outside recipient */
	CHECKRELAY_FAILED = 2, /* the test could not run */
};

/* Runs the test through forward name, reporting on out. */
enum checkrelay_result checkrelay_run(const struct config *cfg,
				      const char *name, FILE *out);

#endif
