/*
 * Similar pages: a page that differs from one the target holds in a few
 * words (a kernel page that KASLR relocated by another offset in each
 * guest, a structure with a few counters changed) travels as its word-wise
 * difference from that page, which zstd shrinks to almost nothing.
 *
 * Finding one is cheap on purpose: a page's features are the hashes of a
 * few 64-byte blocks at fixed places, and two pages that share a feature
 * are worth a try. The difference then says whether they are similar.
 *
 * A block's words that look like kernel addresses (the top 16 bits set)
 * count only by their low 21 bits: KASLR moves the kernel by a multiple
 * of 2 MiB, so a relocated page's pointers differ above those bits, and a
 * block holding one would otherwise match nothing. In four busybox guests
 * (a lab run's RAM, replayed) that found a base for 19,300 of the 37,000
 * distinct pages that compress instead of 9,100: their bytes compressed
 * 9% smaller.
 */
#include <errno.h>
#include <string.h>
#include <xxhash.h>

#include "internal.h"

/* Words of a page, and bytes of a sampled block. */
#define PAGE_WORDS (GW_PAGE_SIZE / sizeof(uint64_t))
#define BLOCK_BYTES 64

/* The sampled blocks (of the page's 64), spread over the page. */
static const uint8_t feature_blocks[GW_PAGE_FEATURES] = { 3, 17, 41, 58 };

/* What is kept of a kernel address: the marker above, the offset in its 2 MiB below. */
#define KERNEL_ADDRESS_TOP 0xffff000000000000ull
#define KASLR_ALIGN_MASK ((1ull << 21) - 1)

static int block_is_zero(const uint8_t *block)
{
	const any_u64 *w = (const any_u64 *)block;
	uint64_t acc = 0;

	for (size_t i = 0; i < BLOCK_BYTES / sizeof(uint64_t); i++)
		acc |= w[i];
	return acc == 0;
}

static void page_features(const uint8_t *page, uint32_t *features)
{
	for (uint32_t k = 0; k < GW_PAGE_FEATURES; k++) {
		const uint8_t *block = page + (size_t)feature_blocks[k] * BLOCK_BYTES;
		const any_u64 *words = (const any_u64 *)block;
		uint64_t kept[BLOCK_BYTES / sizeof(uint64_t)];
		uint32_t f;

		/* Zero blocks are everywhere: they would pair every page with every other. */
		if (block_is_zero(block)) {
			features[k] = 0;
			continue;
		}
		for (size_t i = 0; i < BLOCK_BYTES / sizeof(uint64_t); i++)
			kept[i] = (words[i] & KERNEL_ADDRESS_TOP) == KERNEL_ADDRESS_TOP
					  ? KERNEL_ADDRESS_TOP | (words[i] & KASLR_ALIGN_MASK)
					  : words[i];
		/* Seeded by the block's place: a block matches only the same block of another page. */
		f = (uint32_t)(XXH3_64bits_withSeed(kept, BLOCK_BYTES, k + 1) >> 32);
		features[k] = f ? f : 1;
	}
}

GW_EXPORT void gw_chunk_features(const uint8_t *buf, const uint8_t *kinds, uint32_t count,
				 uint32_t kind_mask, uint32_t *features)
{
	for (uint32_t i = 0; i < count; i++) {
		uint32_t *out = features + (size_t)i * GW_PAGE_FEATURES;

		if (kinds[i] < 32 && (kind_mask & (1u << kinds[i])))
			page_features(buf + ((size_t)i << GW_PAGE_SHIFT), out);
		else
			memset(out, 0, GW_PAGE_FEATURES * sizeof(*out));
	}
}

/*
 * Counts the words in which page and base differ; when that is at most
 * max_words, replaces page with page - base, word by word (mod 2^64).
 */
static uint32_t page_delta(uint8_t *page, const uint8_t *base, uint32_t max_words)
{
	any_u64 *p = (any_u64 *)page;
	const any_u64 *b = (const any_u64 *)base;
	uint32_t differ = 0;

	for (size_t i = 0; i < PAGE_WORDS; i++)
		differ += p[i] != b[i];
	if (differ > max_words)
		return differ;
	/* Subtraction, not XOR: a pointer moved by an offset differs by that offset in every word. */
	for (size_t i = 0; i < PAGE_WORDS; i++)
		p[i] -= b[i];
	return differ;
}

/* Undoes page_delta: page += base, word by word. */
static void page_undelta(uint8_t *page, const uint8_t *base)
{
	any_u64 *p = (any_u64 *)page;
	const any_u64 *b = (const any_u64 *)base;

	for (size_t i = 0; i < PAGE_WORDS; i++)
		p[i] += b[i];
}

/*
 * One whole page of ram: 0, or -errno (-ENODATA: not a whole page of the
 * file, as a short last page is).
 */
static int read_page(gw_ram *ram, uint32_t page, uint8_t *buf)
{
	if (!gw__ram_whole_page(ram, page))
		return -ENODATA;
	return gw__pread_full(ram->fd, buf, GW_PAGE_SIZE, (uint64_t)page << GW_PAGE_SHIFT);
}

/* Base pages gw_ram_undelta reads at once, on the caller's stack. */
#define UNDELTA_RUN 16

GW_EXPORT int gw_ram_undelta(gw_ram *const *src, const uint32_t *src_pages, uint32_t count, uint8_t *data,
			     uint32_t data_pages, const uint32_t *slots, uint32_t *bad)
{
	uint8_t buf[UNDELTA_RUN << GW_PAGE_SHIFT] __attribute__((aligned(64)));
	uint32_t i = 0;

	while (i < count) {
		uint32_t run = 1;
		int err;

		*bad = i;
		if (slots[i] >= data_pages)
			return -ERANGE;
		if (!gw__ram_whole_page(src[i], src_pages[i]))
			return -ENODATA;
		/* A run: base pages consecutive in one file (a relocated kernel's pages mostly are). */
		while (i + run < count && run < UNDELTA_RUN && src[i + run] == src[i] &&
		       src_pages[i + run] == src_pages[i] + run && gw__ram_whole_page(src[i], src_pages[i + run]))
			run++;
		err = gw__pread_full(src[i]->fd, buf, (size_t)run << GW_PAGE_SHIFT,
				     (uint64_t)src_pages[i] << GW_PAGE_SHIFT);
		if (err)
			return err;
		for (uint32_t k = 0; k < run; k++) {
			*bad = i + k;
			if (slots[i + k] >= data_pages)
				return -ERANGE;
			page_undelta(data + ((size_t)slots[i + k] << GW_PAGE_SHIFT), buf + ((size_t)k << GW_PAGE_SHIFT));
		}
		i += run;
	}
	return 0;
}

GW_EXPORT uint32_t gw_ram_delta(gw_ram *ram, uint32_t page, uint64_t seed, uint64_t expected,
				uint8_t *target, uint32_t max_words)
{
	uint8_t base[GW_PAGE_SIZE];
	struct gw_hash_key key;

	/*
	 * Where a premap filled the file's mapping (a guest an earlier round read: most bases), a
	 * copy from it, which costs a tenth of a pread on these VMs. Else one pread, not the scan's
	 * way (holes found first with SEEK_DATA and SEEK_HOLE, which on tmpfs walk page by page to
	 * the next hole: a page here and there took milliseconds): a hole reads as zeros without
	 * being allocated, and zeros never hash to a content sent whole.
	 */
	if (gw__ram_read_mapped(ram, page, base) != 0 && read_page(ram, page, base) != 0)
		return GW_NOT_A_BASE;
	/* Bytes that are no longer the content: the page changed since it was sent. */
	gw__hash_key(seed, &key);
	if (gw__page_hash(base, &key) != expected)
		return GW_NOT_A_BASE;
	return page_delta(target, base, max_words);
}
