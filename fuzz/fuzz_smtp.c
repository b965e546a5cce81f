/* fuzz_smtp: the streaming SMTP scanners (smtp_reply for the greeting,
 * smtp_cmd for the client's first line). The input's first byte says how
 * many of the following bytes are chunk lengths; the rest is the stream,
 * fed to both scanners in chunks of those lengths, the way reads happen
 * to cut it. Checked on every call: no more consumed than given, nothing
 * after done, the kept text NUL-terminated within its array. Checked at
 * the end: the result does not depend on the cuts (the whole stream fed
 * at once gives the same state), and smtp_cmd agrees with a reference
 * written from the header's description. */
#include <stdbool.h>

#include "fuzz.h"
#include "smtp.h"

#define FSMTP_MAX_SPLITS 16

struct fsmtp_feed {
	struct smtp_reply r;
	struct smtp_cmd c;
	size_t r_used; /* stream bytes consumed by each */
	size_t c_used;
};

static void fsmtp_check_reply(const struct smtp_reply *r)
{
	fuzz_check(r->len < SMTP_LINE_MAX && r->text[r->len] == '\0',
		   "reply text len %u", r->len);
	fuzz_check(r->scanned <= SMTP_REPLY_SCAN_MAX, "scanned %u", r->scanned);
	/* CRs dropped and a '\n' per later line, in place of its LF */
	fuzz_check(r->len <= r->scanned, "kept %u of %u bytes", r->len,
		   r->scanned);
	fuzz_check(r->code <= 999, "code %u", r->code);
	if (r->malformed)
		fuzz_check(r->done && r->code == 0, "malformed but going on");
}

static void fsmtp_check_cmd(const struct smtp_cmd *c)
{
	fuzz_check(c->arg_len <= SMTP_DOMAIN_MAX && c->arg[c->arg_len] == '\0',
		   "arg len %u", c->arg_len);
	fuzz_check(c->line_pos <= SMTP_LINE_MAX, "line_pos %u", c->line_pos);
	if (c->is_helo)
		fuzz_check(c->verb_len == 4 && (memcmp(c->verb, "EHLO", 4) == 0 ||
						memcmp(c->verb, "HELO", 4) == 0),
			   "is_helo for %.*s", 7, c->verb);
	if (c->truncated)
		fuzz_check(c->arg_len == SMTP_DOMAIN_MAX, "truncated short arg");
}

/* One chunk to both scanners. */
static void fsmtp_chunk(struct fsmtp_feed *f, const char *stream, size_t total,
			size_t len)
{
	if (f->r_used < total || len == 0) {
		size_t n = f->r_used + len > total ? total - f->r_used : len;
		bool was_done = f->r.done;
		size_t used = smtp_reply_feed(&f->r, stream + f->r_used, n);

		fuzz_check(used <= n, "reply took %zu of %zu", used, n);
		fuzz_check(!was_done || used == 0, "reply took %zu after done", used);
		fuzz_check(used == n || f->r.done, "reply stopped early, not done");
		f->r_used += used;
		fsmtp_check_reply(&f->r);
	}
	if (f->c_used < total || len == 0) {
		size_t n = f->c_used + len > total ? total - f->c_used : len;
		bool was_done = f->c.done;
		size_t used = smtp_cmd_feed(&f->c, stream + f->c_used, n);

		fuzz_check(used <= n, "cmd took %zu of %zu", used, n);
		fuzz_check(!was_done || used == 0, "cmd took %zu after done", used);
		fuzz_check(used == n || f->c.done, "cmd stopped early, not done");
		f->c_used += used;
		fsmtp_check_cmd(&f->c);
	}
}

/* What smtp_cmd should have found in the stream. */
static void fsmtp_ref_cmd(const char *s, size_t n, struct smtp_cmd *want,
			  size_t *used)
{
	size_t line, i = 0;
	const char *lf;

	memset(want, 0, sizeof(*want));
	lf = memchr(s, '\n', n < SMTP_LINE_MAX ? n : SMTP_LINE_MAX);
	if (lf != NULL) {
		line = (size_t)(lf - s);
		*used = line + 1;
		want->done = true;
	} else {
		line = n < SMTP_LINE_MAX ? n : SMTP_LINE_MAX;
		*used = line;
		want->done = n >= SMTP_LINE_MAX;
	}
	/* The verb: up to space, tab or CR. */
	while (i < line && s[i] != ' ' && s[i] != '\t' && s[i] != '\r') {
		char ch = s[i];

		if (want->verb_len < 7)
			want->verb[want->verb_len] =
				(ch >= 'a' && ch <= 'z') ? (char)(ch - 32) : ch;
		if (want->verb_len < 255)
			want->verb_len++;
		i++;
	}
	/* Known once the verb has ended: at a separator or the line end. */
	want->is_helo = (i < line || want->done) && want->verb_len == 4 &&
			(memcmp(want->verb, "EHLO", 4) == 0 ||
			 memcmp(want->verb, "HELO", 4) == 0);
	/* The argument only after a space or tab, not after CR. */
	if (i < line && s[i] != '\r') {
		while (i < line && (s[i] == ' ' || s[i] == '\t'))
			i++;
		while (i < line && s[i] != ' ' && s[i] != '\t' && s[i] != '\r') {
			if (want->arg_len == SMTP_DOMAIN_MAX) {
				want->truncated = true;
				break;
			}
			want->arg[want->arg_len++] = s[i++];
		}
	}
}

static void fsmtp_compare_cmd(const struct smtp_cmd *c, const char *s,
			      size_t n, size_t used)
{
	struct smtp_cmd want;
	size_t want_used;
	size_t keep;

	fsmtp_ref_cmd(s, n, &want, &want_used);
	fuzz_check(used == want_used, "cmd used %zu, want %zu", used, want_used);
	fuzz_check(c->done == want.done, "cmd done %d", c->done);
	fuzz_check(c->verb_len == want.verb_len, "verb_len %u, want %u",
		   c->verb_len, want.verb_len);
	keep = want.verb_len < 7 ? want.verb_len : 7;
	fuzz_check(memcmp(c->verb, want.verb, keep) == 0, "verb differs");
	fuzz_check(c->arg_len == want.arg_len &&
			   memcmp(c->arg, want.arg, want.arg_len) == 0,
		   "arg differs: %u/%u", c->arg_len, want.arg_len);
	fuzz_check(c->truncated == want.truncated, "truncated %d", c->truncated);
	fuzz_check(c->is_helo == want.is_helo, "is_helo %d", c->is_helo);
}

/* The final line of a well-formed reply ended with its LF. */
static void fsmtp_check_reply_end(const struct smtp_reply *r, const char *s,
				  size_t used)
{
	if (!r->done || r->malformed)
		return;
	if (r->scanned < SMTP_REPLY_SCAN_MAX) {
		fuzz_check(used > 0 && s[used - 1] == '\n',
			   "reply done without a line end");
	}
	if (r->code != 0) {
		char digits[4];

		snprintf(digits, sizeof(digits), "%03u", r->code);
		fuzz_check(r->len >= 3 && memcmp(r->text, digits, 3) == 0,
			   "text does not start with the code");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	size_t nsplit = fuzz_u8(&in) % (FSMTP_MAX_SPLITS + 1);
	uint8_t splits[FSMTP_MAX_SPLITS];
	struct fsmtp_feed cut, whole;
	const char *stream;
	size_t total, k, idle = 0;

	for (k = 0; k < nsplit; k++)
		splits[k] = fuzz_u8(&in);
	stream = (const char *)fuzz_take(&in, in.n, &total);

	smtp_reply_init(&cut.r);
	smtp_cmd_init(&cut.c);
	cut.r_used = cut.c_used = 0;
	/* Lengths: a split byte below 0x80 is itself; above, 64 per step,
	 * so chunks also cross the 512 and 4096 byte limits. */
	for (k = 0; cut.r_used < total || cut.c_used < total; k++) {
		size_t len = total;

		if (nsplit > 0) {
			uint8_t b = splits[k % nsplit];

			len = b < 0x80 ? b : (size_t)(b - 0x7f) * 64;
		}
		fsmtp_chunk(&cut, stream, total, len);
		if ((cut.r.done || cut.r_used == total) &&
		    (cut.c.done || cut.c_used == total))
			break;
		/* zero-length chunks only: give the rest at once */
		idle = len == 0 ? idle + 1 : 0;
		if (nsplit > 0 && idle >= nsplit)
			nsplit = 0;
	}

	smtp_reply_init(&whole.r);
	smtp_cmd_init(&whole.c);
	whole.r_used = whole.c_used = 0;
	fsmtp_chunk(&whole, stream, total, total);

	fuzz_check(cut.r_used == whole.r_used, "reply used %zu cut, %zu whole",
		   cut.r_used, whole.r_used);
	fuzz_check(cut.r.done == whole.r.done && cut.r.code == whole.r.code &&
			   cut.r.malformed == whole.r.malformed &&
			   cut.r.truncated == whole.r.truncated &&
			   cut.r.scanned == whole.r.scanned &&
			   cut.r.len == whole.r.len &&
			   memcmp(cut.r.text, whole.r.text, whole.r.len) == 0,
		   "reply depends on the cuts");
	fuzz_check(cut.c_used == whole.c_used, "cmd used %zu cut, %zu whole",
		   cut.c_used, whole.c_used);
	fuzz_check(cut.c.done == whole.c.done &&
			   cut.c.verb_len == whole.c.verb_len &&
			   memcmp(cut.c.verb, whole.c.verb, sizeof(cut.c.verb)) == 0 &&
			   cut.c.arg_len == whole.c.arg_len &&
			   memcmp(cut.c.arg, whole.c.arg, cut.c.arg_len) == 0 &&
			   cut.c.truncated == whole.c.truncated &&
			   cut.c.is_helo == whole.c.is_helo,
		   "cmd depends on the cuts");

	fsmtp_compare_cmd(&whole.c, stream, total, whole.c_used);
	fsmtp_check_reply_end(&whole.r, stream, whole.r_used);
	return 0;
}
