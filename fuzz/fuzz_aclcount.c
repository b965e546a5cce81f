/* fuzz_aclcount: the per-address session count (acl_count_*), an open
 * addressing table with backward-shift deletion that every client
 * address passes through. The input picks a pool of addresses (IPv4,
 * IPv6, IPv4-mapped) and then a sequence of take/put/get operations; a
 * plain array here is the reference. Every run ends with the table empty
 * again, as the process-wide table must be between sessions. */
#include <arpa/inet.h>
#include <stdbool.h>

#include "acl.h"
#include "fuzz.h"

#define FACL_POOL 32
#define FACL_BULK_MAX 1024

struct facl_entry {
	union sockname sa;
	uint8_t key[17]; /* family + bytes, unmapped */
};

struct facl_ref {
	uint8_t key[17];
	unsigned count;
};

static struct facl_ref facl_refs[FACL_POOL];
static size_t facl_nrefs;

static void facl_make(struct facl_entry *e, uint8_t kind, const uint8_t *b)
{
	memset(e, 0, sizeof(*e));
	switch (kind % 3) {
	case 0:
		e->sa.in4.sin_family = AF_INET;
		memcpy(&e->sa.in4.sin_addr, b, 4);
		e->key[0] = AF_INET;
		memcpy(e->key + 1, b, 4);
		break;
	case 1:
		e->sa.in6.sin6_family = AF_INET6;
		memcpy(&e->sa.in6.sin6_addr, b, 16);
		if (IN6_IS_ADDR_V4MAPPED(&e->sa.in6.sin6_addr)) {
			e->key[0] = AF_INET;
			memcpy(e->key + 1, b + 12, 4);
		} else {
			e->key[0] = AF_INET6;
			memcpy(e->key + 1, b, 16);
		}
		break;
	default: /* the same client seen on an IPv6 socket */
		e->sa.in6.sin6_family = AF_INET6;
		e->sa.in6.sin6_addr.s6_addr[10] = 0xff;
		e->sa.in6.sin6_addr.s6_addr[11] = 0xff;
		memcpy(&e->sa.in6.sin6_addr.s6_addr[12], b, 4);
		e->key[0] = AF_INET;
		memcpy(e->key + 1, b, 4);
		break;
	}
	/* The port never matters. */
	addr_set_port(&e->sa, (uint16_t)(b[0] << 8 | b[1]));
}

static struct facl_ref *facl_ref(const uint8_t key[17], bool create)
{
	for (size_t i = 0; i < facl_nrefs; i++)
		if (memcmp(facl_refs[i].key, key, 17) == 0)
			return &facl_refs[i];
	if (!create)
		return NULL;
	fuzz_check(facl_nrefs < sizeof(facl_refs) / sizeof(facl_refs[0]),
		   "reference full");
	memcpy(facl_refs[facl_nrefs].key, key, 17);
	facl_refs[facl_nrefs].count = 0;
	return &facl_refs[facl_nrefs++];
}

static size_t facl_ref_addresses(void)
{
	size_t n = 0;

	for (size_t i = 0; i < facl_nrefs; i++)
		n += facl_refs[i].count > 0;
	return n;
}

static void facl_take(const struct facl_entry *e, unsigned limit)
{
	struct facl_ref *r = facl_ref(e->key, true);
	bool want = limit == 0 || r->count < limit;

	fuzz_check(acl_count_take(&e->sa, limit) == want, "take, count %u limit %u",
		   r->count, limit);
	if (want)
		r->count++;
}

static void facl_put(const struct facl_entry *e)
{
	struct facl_ref *r = facl_ref(e->key, false);

	acl_count_put(&e->sa);
	if (r != NULL && r->count > 0)
		r->count--;
}

static void facl_check(const struct facl_entry *e)
{
	struct facl_ref *r = facl_ref(e->key, false);
	unsigned want = r != NULL ? r->count : 0;

	fuzz_check(acl_count_get(&e->sa) == want, "get %u, want %u",
		   acl_count_get(&e->sa), want);
}

/* extra: addresses held besides the pool's (bulk ones). */
static void facl_check_all(const struct facl_entry *pool, size_t n,
			   size_t extra)
{
	for (size_t i = 0; i < n; i++)
		facl_check(&pool[i]);
	fuzz_check(acl_count_addresses() == facl_ref_addresses() + extra,
		   "%zu addresses, want %zu", acl_count_addresses(),
		   facl_ref_addresses() + extra);
}

/* Many addresses at once (the table grows), put back in a stride order
 * (deletions all over the probe runs). Their counts are 0 or 1, so the
 * reference is a flag each; one that equals a pool address is left out. */
static void facl_bulk(struct fuzz_in *in, const struct facl_entry *pool,
		      size_t npool)
{
	static struct facl_entry bulk[FACL_BULK_MAX];
	static bool held[FACL_BULK_MAX];
	size_t n = (size_t)fuzz_u8(in) * 4 % FACL_BULK_MAX;
	uint8_t kind = fuzz_u8(in), seed = fuzz_u8(in);
	size_t stride = (size_t)fuzz_u8(in) * 2 + 1; /* odd: visits all of 1024 */
	size_t base = acl_count_addresses(), out = 0;

	for (size_t i = 0; i < n; i++) {
		uint8_t b[16] = { 0x20, 0x01, 0x0d, 0xb8, seed, 0, 0, 0,
				  0,	0,    0,    0,	  10,	seed, 0, 0 };

		b[14] = b[6] = (uint8_t)(i >> 8);
		b[15] = b[7] = (uint8_t)i;
		memcpy(b, b + 12, 4); /* IPv4 kinds use the first four bytes */
		facl_make(&bulk[i], (uint8_t)(kind + i), b);
		held[i] = facl_ref(bulk[i].key, false) == NULL;
		for (size_t j = 0; j < npool && held[i]; j++)
			held[i] = memcmp(pool[j].key, bulk[i].key, 17) != 0;
		if (!held[i])
			continue;
		fuzz_check(acl_count_take(&bulk[i].sa, 1), "bulk take %zu", i);
		fuzz_check(!acl_count_take(&bulk[i].sa, 1), "bulk limit %zu", i);
		out++;
	}
	fuzz_check(acl_count_addresses() == base + out, "%zu addresses, want %zu",
		   acl_count_addresses(), base + out);
	facl_check_all(pool, npool, out);
	for (size_t k = 0, i = 0; k < FACL_BULK_MAX;
	     k++, i = (i + stride) % FACL_BULK_MAX) {
		if (i >= n || !held[i])
			continue;
		fuzz_check(acl_count_get(&bulk[i].sa) == 1, "bulk get %zu", i);
		acl_count_put(&bulk[i].sa);
		out--;
		fuzz_check(acl_count_get(&bulk[i].sa) == 0, "bulk put %zu", i);
		if (k % 128 == 0)
			facl_check_all(pool, npool, out);
	}
	fuzz_check(acl_count_addresses() == base, "%zu addresses after the bulk",
		   acl_count_addresses());
	facl_check_all(pool, npool, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	struct facl_entry pool[FACL_POOL];
	size_t npool = (size_t)fuzz_u8(&in) % FACL_POOL + 1;
	bool bulked = false;

	facl_nrefs = 0;
	fuzz_check(acl_count_addresses() == 0, "table not empty at start");
	for (size_t i = 0; i < npool; i++) {
		uint8_t kind = fuzz_u8(&in);
		uint8_t b[16] = { 0 };
		size_t got;
		const uint8_t *p = fuzz_take(&in, kind % 3 == 1 ? 16 : 4, &got);

		memcpy(b, p, got);
		facl_make(&pool[i], kind, b);
	}
	while (in.n > 0) {
		uint8_t op = fuzz_u8(&in);
		const struct facl_entry *e = &pool[(op & 0x3f) % npool];

		switch (op >> 6) {
		case 0:
			facl_take(e, fuzz_u8(&in) % 4);
			break;
		case 1:
			facl_put(e);
			break;
		case 2:
			facl_take(e, 0);
			break;
		default:
			if ((op & 1) && !bulked) {
				facl_bulk(&in, pool, npool);
				bulked = true; /* one per input keeps runs fast */
			}
			else
				facl_check_all(pool, npool, 0);
			break;
		}
		facl_check(e);
	}
	facl_check_all(pool, npool, 0);
	/* Back to empty: every count put back to zero. */
	for (size_t i = 0; i < npool; i++)
		while (acl_count_get(&pool[i].sa) > 0)
			facl_put(&pool[i]);
	facl_check_all(pool, npool, 0);
	fuzz_check(acl_count_addresses() == 0, "table not empty at the end");
	return 0;
}
