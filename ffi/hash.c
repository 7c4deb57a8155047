/* Page hashing, zero-page detection and RAM digests. */
#include <string.h>
#include <xxhash.h>

#include "internal.h"

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
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *page = buf + ((size_t)i << GW_PAGE_SHIFT);

		hashes[i] = XXH3_64bits_withSeed(page, GW_PAGE_SIZE, seed);
		if (is_zero)
			is_zero[i] = (uint8_t)gw__page_is_zero(page);
	}
}

GW_EXPORT uint64_t gw_zero_page_hash(uint64_t seed)
{
	static const uint8_t zeros[GW_PAGE_SIZE];

	return XXH3_64bits_withSeed(zeros, GW_PAGE_SIZE, seed);
}

GW_EXPORT void gw_digest(const uint64_t *hashes, uint32_t count, uint64_t seed, uint8_t *out)
{
	XXH128_hash_t h = XXH3_128bits_withSeed(hashes, (size_t)count * sizeof(uint64_t), seed);
	XXH128_canonical_t canonical;

	XXH128_canonicalFromHash(&canonical, h);
	memcpy(out, canonical.digest, sizeof(canonical.digest));
}
