/* acl: CIDR rules and per-address session counts. */
#include "acl.h"
#include "shared.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The 4 or 16 address bytes of a client, IPv4-mapped IPv6 unmapped. */
static int acl_client_bytes(const union sockname *client, uint8_t out[16])
{
	union sockname a;

	addr_unmap(client, &a);
	if (a.sa.sa_family == AF_INET) {
		memcpy(out, &a.in4.sin_addr, 4);
		return AF_INET;
	}
	if (a.sa.sa_family == AF_INET6) {
		memcpy(out, &a.in6.sin6_addr, 16);
		return AF_INET6;
	}
	return -1;
}

enum acl_parse_result acl_parse_cidr(const char *text, struct cidr *out)
{
	char ip[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(text, '/');
	size_t iplen = slash ? (size_t)(slash - text) : strlen(text);
	unsigned maxbits, prefix, i;
	union sockname a;
	bool hostbits = false;

	memset(out, 0, sizeof(*out));
	if (iplen == 0 || iplen >= sizeof(ip))
		return ACL_PARSE_BAD;
	memcpy(ip, text, iplen);
	ip[iplen] = '\0';
	if (addr_parse_ip(ip, &a) == -1)
		return ACL_PARSE_BAD;
	/* A rule written as ::ffff:a.b.c.d/N is an IPv4 rule. */
	out->family = (uint8_t)acl_client_bytes(&a, out->net);
	maxbits = out->family == AF_INET ? 32 : 128;
	if (a.sa.sa_family == AF_INET6 && out->family == AF_INET && slash) {
		/* prefix counted over the mapped form */
		maxbits = 128;
	}
	prefix = maxbits;
	if (slash) {
		char *end;
		unsigned long v;

		if (slash[1] < '0' || slash[1] > '9')
			return ACL_PARSE_BAD;
		errno = 0;
		v = strtoul(slash + 1, &end, 10);
		if (errno != 0 || *end != '\0' || v > maxbits)
			return ACL_PARSE_BAD;
		prefix = (unsigned)v;
	}
	if (maxbits == 128 && out->family == AF_INET) {
		if (prefix < 96)
			return ACL_PARSE_BAD;
		prefix -= 96;
	}
	out->prefix = (uint8_t)prefix;
	for (i = 0; i < 16; i++) {
		unsigned bit = i * 8;
		uint8_t mask;

		if (bit >= prefix)
			mask = 0;
		else if (bit + 8 <= prefix)
			mask = 0xff;
		else
			mask = (uint8_t)(0xff << (8 - (prefix - bit)));
		if (out->net[i] & (uint8_t)~mask)
			hostbits = true;
		out->net[i] &= mask;
	}
	return hostbits ? ACL_PARSE_HOSTBITS : ACL_PARSE_OK;
}

bool acl_cidr_match(const struct cidr *rule, const union sockname *client)
{
	uint8_t b[16];
	unsigned full, rest;

	if (acl_client_bytes(client, b) != rule->family)
		return false;
	full = rule->prefix / 8;
	rest = rule->prefix % 8;
	if (memcmp(b, rule->net, full) != 0)
		return false;
	if (rest != 0) {
		uint8_t mask = (uint8_t)(0xff << (8 - rest));

		if ((b[full] & mask) != rule->net[full])
			return false;
	}
	return true;
}

static bool acl_list_match(const struct cidr *rules, size_t n,
			   const union sockname *client)
{
	for (size_t i = 0; i < n; i++)
		if (acl_cidr_match(&rules[i], client))
			return true;
	return false;
}

bool acl_permits(const struct acl *acl, const union sockname *client)
{
	if (acl_list_match(acl->deny, acl->ndeny, client))
		return false;
	if (!acl->has_allow)
		return true;
	return acl_list_match(acl->allow, acl->nallow, client);
}

/* Per-address counts: open addressing, linear probing, deletion by
 * backward shift (no tombstones, so lookups stay short under churn). */
struct acl_slot {
	uint8_t key[17]; /* family byte + 16 address bytes */
	uint32_t count; /* 0: empty slot */
};

static struct acl_slot *acl_slots;
static size_t acl_nslots; /* power of two */
static size_t acl_nused_local;
static size_t *acl_nused = &acl_nused_local;
/* Shared between worker processes: a fixed table behind a lock. */
static int *acl_lock;

struct acl_shared_hdr {
	int lock;
	size_t nused;
};

static size_t acl_hash(const uint8_t key[17])
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (int i = 0; i < 17; i++) {
		h ^= key[i];
		h *= 1099511628211ull;
	}
	return (size_t)(h ^ (h >> 29));
}

static bool acl_key(const union sockname *client, uint8_t key[17])
{
	memset(key, 0, 17);
	int fam = acl_client_bytes(client, key + 1);
	if (fam == -1)
		return false;
	key[0] = (uint8_t)fam;
	return true;
}

static struct acl_slot *acl_find(const uint8_t key[17])
{
	if (acl_nslots == 0)
		return NULL;
	for (size_t i = acl_hash(key) & (acl_nslots - 1);;
	     i = (i + 1) & (acl_nslots - 1)) {
		if (acl_slots[i].count == 0)
			return NULL;
		if (memcmp(acl_slots[i].key, key, 17) == 0)
			return &acl_slots[i];
	}
}

static struct acl_slot *acl_insert_slot(struct acl_slot *slots, size_t n,
					const uint8_t key[17])
{
	size_t i = acl_hash(key) & (n - 1);

	while (slots[i].count != 0)
		i = (i + 1) & (n - 1);
	memcpy(slots[i].key, key, 17);
	return &slots[i];
}

static bool acl_grow(void)
{
	size_t n = acl_nslots ? acl_nslots * 2 : 64;
	struct acl_slot *slots;

	if (acl_lock != NULL)
		return false; /* the shared table is sized once: full is full */
	slots = calloc(n, sizeof(*slots));
	if (slots == NULL)
		return false;
	for (size_t i = 0; i < acl_nslots; i++)
		if (acl_slots[i].count != 0)
			acl_insert_slot(slots, n, acl_slots[i].key)->count =
				acl_slots[i].count;
	free(acl_slots);
	acl_slots = slots;
	acl_nslots = n;
	return true;
}

static bool acl_count_take_locked(const union sockname *client, unsigned limit)
{
	uint8_t key[17];
	struct acl_slot *s;

	if (!acl_key(client, key))
		return false;
	s = acl_find(key);
	if (s != NULL) {
		if (limit != 0 && s->count >= limit)
			return false;
		s->count++;
		return true;
	}
	if (((*acl_nused) + 1) * 2 > acl_nslots && !acl_grow())
		return false;
	s = acl_insert_slot(acl_slots, acl_nslots, key);
	s->count = 1;
	(*acl_nused)++;
	return true;
}

static void acl_count_put_locked(const union sockname *client)
{
	uint8_t key[17];
	struct acl_slot *s;
	size_t i, j, mask = acl_nslots - 1;

	if (!acl_key(client, key) || (s = acl_find(key)) == NULL)
		return;
	if (--s->count > 0)
		return;
	/* Backward-shift: pull later members of the probe run into the hole. */
	i = (size_t)(s - acl_slots);
	for (j = (i + 1) & mask; acl_slots[j].count != 0; j = (j + 1) & mask) {
		size_t home = acl_hash(acl_slots[j].key) & mask;

		/* j may move to i if its home is not in the range (i, j]. */
		if (((j - home) & mask) >= ((j - i) & mask)) {
			acl_slots[i] = acl_slots[j];
			acl_slots[j].count = 0;
			i = j;
		}
	}
	acl_slots[i].count = 0;
	(*acl_nused)--;
}

unsigned acl_count_get(const union sockname *client)
{
	uint8_t key[17];
	struct acl_slot *s;

	if (!acl_key(client, key) || (s = acl_find(key)) == NULL)
		return 0;
	return s->count;
}

size_t acl_count_addresses(void)
{
	return (*acl_nused);
}

bool acl_count_take(const union sockname *client, unsigned limit)
{
	bool ok;

	if (acl_lock != NULL)
		shared_lock(acl_lock);
	ok = acl_count_take_locked(client, limit);
	if (acl_lock != NULL)
		shared_unlock(acl_lock);
	return ok;
}

void acl_count_put(const union sockname *client)
{
	if (acl_lock != NULL)
		shared_lock(acl_lock);
	acl_count_put_locked(client);
	if (acl_lock != NULL)
		shared_unlock(acl_lock);
}

int acl_count_share(size_t max_addresses)
{
	size_t n = 64;
	struct acl_shared_hdr *h;

	while (n < 2 * max_addresses)
		n *= 2;
	h = shared_alloc(sizeof(*h) + n * sizeof(struct acl_slot));
	if (h == NULL)
		return -1;
	free(acl_slots);
	acl_slots = (struct acl_slot *)(void *)(h + 1);
	acl_nslots = n;
	acl_nused = &h->nused;
	acl_lock = &h->lock;
	return 0;
}
