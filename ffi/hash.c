/* Page hashing, zero-page detection and RAM digests. */
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_generateSecret_fromSeed, XXH3_SECRET_DEFAULT_SIZE */
#include <xxhash.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xxh_x86dispatch.h>
/*
 * libxxhash's plain entry points are built for the baseline CPU (SSE2 on
 * x86-64); its dispatching ones pick AVX2 or AVX-512 where the CPU has them:
 * hashing in cache 2-2.5x as fast, the scan's one thread 0.79-0.85x -> 0.89-0.97x
 * `xxhsum -H3` (docs/design.md).
 */
#define PAGE_HASH XXH3_64bits_withSecret_dispatch
#else
#define PAGE_HASH XXH3_64bits_withSecret
#endif

#include "internal.h"

_Static_assert(GW_HASH_SECRET_BYTES == XXH3_SECRET_DEFAULT_SIZE, "the secret a seed makes");

/*
 * A seed is expanded into a secret at every XXH3_64bits_withSeed call on
 * input this long; the secret made once from the seed gives the same hash
 * through XXH3_64bits_withSecret for any input over 240 bytes, such as a page
 * (xxhash.h, XXH3_generateSecret_fromSeed).
 */
_Static_assert(GW_PAGE_SIZE > 240, "a page is hashed as a long input");

void gw__hash_key(uint64_t seed, struct gw_hash_key *key)
{
	XXH3_generateSecret_fromSeed(key->secret, seed);
}

uint64_t gw__page_hash(const uint8_t *page, const struct gw_hash_key *key)
{
	return PAGE_HASH(page, GW_PAGE_SIZE, key->secret, sizeof(key->secret));
}

/* Words OR-ed together between two early-exit tests: 256 bytes, 4 cache lines. */
#define ZERO_CHECK_STRIDE 32

int gw__page_is_zero(const uint8_t *page)
{
	const any_u64 *words = (const any_u64 *)page;

	/* Most non-zero pages differ from zero in their first or last word. */
	if (words[0] | words[GW_PAGE_SIZE / sizeof(uint64_t) - 1])
		return 0;
	for (size_t i = 0; i < GW_PAGE_SIZE / sizeof(uint64_t); i += ZERO_CHECK_STRIDE) {
		uint64_t acc = 0;
		for (size_t j = 0; j < ZERO_CHECK_STRIDE; j++)
			acc |= words[i + j];
		if (acc)
			return 0;
	}
	return 1;
}

GW_EXPORT void gw_hash_pages(const uint8_t *buf, uint32_t count, uint64_t seed, uint64_t *hashes,
			     uint8_t *is_zero)
{
	struct gw_hash_key key;

	gw__hash_key(seed, &key);
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *page = buf + ((size_t)i << GW_PAGE_SHIFT);

		hashes[i] = gw__page_hash(page, &key);
		if (is_zero)
			is_zero[i] = (uint8_t)gw__page_is_zero(page);
	}
}

GW_EXPORT uint64_t gw_zero_page_hash(uint64_t seed)
{
	static const uint8_t zeros[GW_PAGE_SIZE];
	struct gw_hash_key key;

	gw__hash_key(seed, &key);
	return gw__page_hash(zeros, &key);
}

static void digest_out(XXH128_hash_t h, uint8_t *out)
{
	XXH128_canonical_t canonical;

	XXH128_canonicalFromHash(&canonical, h);
	memcpy(out, canonical.digest, sizeof(canonical.digest));
}

GW_EXPORT void gw_digest(const uint64_t *hashes, uint32_t count, uint64_t seed, uint8_t *out)
{
	digest_out(XXH3_128bits_withSeed(hashes, (size_t)count * sizeof(uint64_t), seed), out);
}

/* Hashes looked up a batch at a time, streamed: the digest of the whole array, without it. */
#define DIGEST_BATCH 512

GW_EXPORT int32_t gw_contents_digest(const uint32_t *ids, uint32_t count, const uint64_t *hashes,
				     uint32_t contents, uint32_t zero_id, uint64_t zero_hash,
				     uint64_t seed, uint8_t *out)
{
	/* Made by the library, not on the stack: its layout is the library's, which may not be the header's. */
	XXH3_state_t *state = XXH3_createState();
	uint64_t batch[DIGEST_BATCH];
	int32_t result = 0;

	if (!state)
		return -2;
	XXH3_128bits_reset_withSeed(state, seed);
	/* By n, never past count: a step of DIGEST_BATCH could wrap near UINT32_MAX. */
	for (uint32_t done = 0, n; done < count; done += n) {
		n = count - done < DIGEST_BATCH ? count - done : DIGEST_BATCH;

		for (uint32_t i = 0; i < n; i++) {
			uint32_t id = ids[done + i];

			if (id == zero_id) {
				batch[i] = zero_hash;
			} else if (id < contents) {
				batch[i] = hashes[id];
			} else {
				result = -1;
				goto out;
			}
		}
		XXH3_128bits_update(state, batch, (size_t)n * sizeof(uint64_t));
	}
	digest_out(XXH3_128bits_digest(state), out);
out:
	XXH3_freeState(state);
	return result;
}
