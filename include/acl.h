/* acl: CIDR allow/deny lists and the per-address connection count.
 * Pure: no sockets, no event loop. Rules are masked when parsed, so
 * matching is a compare of prefix bits; IPv4-mapped IPv6 clients match
 * IPv4 rules. */
#ifndef SMTPFWD_ACL_H
#define SMTPFWD_ACL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"

struct cidr {
	uint8_t family; /* AF_INET or AF_INET6 */
	uint8_t prefix; /* 0..32 or 0..128 */
	uint8_t net[16]; /* network bytes, host bits zero */
};

enum acl_parse_result {
	ACL_PARSE_OK,
	ACL_PARSE_HOSTBITS, /* valid, but bits past the prefix were set (masked) */
	ACL_PARSE_BAD,
};

/* "192.0.2.0/24", "2001:db8::/32", or a bare address (a host rule). */
enum acl_parse_result acl_parse_cidr(const char *text, struct cidr *out);

bool acl_cidr_match(const struct cidr *rule, const union sockname *client);

/* deny is checked first, then allow; no allow list means everyone. */
struct acl {
	struct cidr *allow;
	size_t nallow;
	struct cidr *deny;
	size_t ndeny;
	bool has_allow;
};

bool acl_permits(const struct acl *acl, const union sockname *client);

/* Count of open sessions per client address (all forwards together).
 * acl_count_take() returns false, taking nothing, when the address already
 * holds `limit` sessions (limit 0 = unlimited). Every successful take is
 * matched by one acl_count_put(). */
bool acl_count_take(const union sockname *client, unsigned limit);
void acl_count_put(const union sockname *client);
unsigned acl_count_get(const union sockname *client);
/* Move the counts into memory shared with worker processes forked
 * later, room for max_addresses addresses. Call before any count is
 * taken. Returns -1 when the memory cannot be had. */
int acl_count_share(size_t max_addresses);

/* Number of addresses currently tracked (for tests and metrics). */
size_t acl_count_addresses(void);

#endif
