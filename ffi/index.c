/*
 * The gang content index: every distinct page content of a gang, once.
 *
 * Memory per distinct content (the budget is 24 bytes):
 *   - a table slot of 8 bytes: the top 32 bits of the content's hash (the
 *     tag) and its id + 1 (0 marks an empty slot). Linear probing; the
 *     table grows by 1.5x at 80% load, so it stays between 53% and 80%
 *     full: 10 to 15 bytes per content;
 *   - a location of 8 bytes: the (guest, page) that holds the content,
 *     stored in chunks of 4096 so that growing never copies or doubles.
 * At most 23 bytes, whatever the number of contents.
 *
 * A tag match is only a candidate. It is confirmed by the full 64-bit hash
 * (the holder page's recorded hash) and then by a byte compare against the
 * content's bytes, so a collision is never taken for a duplicate. Those
 * bytes are compared where the holder page lies when its file's mapping
 * was filled (a guest an earlier round read: gw_ram_premap), or read from
 * the holder page, or kept from an earlier confirm of the same content: a
 * content that n guests share is confirmed n - 1 times, and on these VMs
 * the system call that reads one page cost as much as the rest of the scan
 * (half its time went to these reads; four Debian guests' first round made
 * 156,000 of them, 52,000 once holders were compared in their mappings,
 * which took a tenth off the sender's CPU time). A copy is
 * kept under its content's id (ids are never reused) from the holder's
 * bytes at the first confirm, which equal the confirmed page's. The
 * target holds what was sent for the holder, the bytes of its last scan:
 * the two differ only if the holder changed since to other bytes of the
 * same 64-bit seeded hash, the event a re-scan's "unchanged" (same hash)
 * already trusts never to happen, and the compare with the holder's bytes
 * before kept copies trusted too. Keeping each content's bytes as it is
 * added would close even that, and cost the benchmark gang's scan a
 * quarter more (unique contents evict the shared ones). The copies take
 * a fixed 4 to 64 MiB (one page per 16 of the gang), outside the budget
 * above.
 *
 * Per guest the index also keeps each page's hash and content id at its
 * last scan (12 bytes a page): a re-scan compares against them to find
 * exactly the pages that changed, and a holder page that changed gives up
 * its content's location (the location of that content is marked invalid
 * and moves to the next unchanged page found holding it).
 *
 * This file is the table and the contents; the scan that reads pages and
 * classifies them against it is index_scan.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "index_internal.h"

#define INITIAL_CAPACITY 1024
#define MAX_LOAD_PERCENT 80
#define GROWTH_NUM 3 /* capacity grows by GROWTH_NUM / GROWTH_DEN */
#define GROWTH_DEN 2
#define LOC_CHUNK_SHIFT 12
#define LOC_CHUNK (1u << LOC_CHUNK_SHIFT)
#define LOC_INVALID UINT64_MAX
#define MAX_CONTENTS (GW_CONTENT_ZERO - 1) /* ids stay below the reserved values */
/*
 * The kept copies of confirmed contents: one slot per 16 pages of the
 * gang, from 1,024 to 16,384 slots (4 to 64 MiB), made at the first
 * confirm. Slots that grew with the contents the gang shares (fewer pages
 * for the kernel to zero) were no faster in the one-pass benchmark.
 */
#define KEPT_PAGES_PER_SLOT 16
#define KEPT_MIN_SLOTS 1024
#define KEPT_MAX_SLOTS 16384
#define KEPT_NONE UINT32_MAX

static inline uint64_t pack_location(uint32_t guest, uint32_t page)
{
	return (uint64_t)guest << 32 | page;
}

static inline uint64_t *location_of(const gw_index *ix, uint32_t id)
{
	return &ix->locations[id >> LOC_CHUNK_SHIFT][id & (LOC_CHUNK - 1)];
}

/* Maps a 32-bit tag onto [0, capacity) without a division (Lemire's reduction). */
static inline uint64_t home_slot(const gw_index *ix, uint32_t tag)
{
	return ((uint64_t)tag * ix->capacity) >> 32;
}

GW_EXPORT int gw_index_new(uint64_t seed, uint32_t hash_bits, gw_index **out)
{
	gw_index *ix;

	if (hash_bits < 1 || hash_bits > 64)
		return -EINVAL;
	ix = calloc(1, sizeof(*ix));
	if (!ix)
		return -ENOMEM;
	gw__hash_key(seed, &ix->key);
	ix->hash_mask = ~0ull << (64 - hash_bits);
	ix->zero_hash = gw_zero_page_hash(seed) & ix->hash_mask;
	ix->capacity = INITIAL_CAPACITY;
	ix->threads = 1;
	ix->slots = calloc(ix->capacity, sizeof(*ix->slots));
	if (!ix->slots) {
		free(ix);
		return -ENOMEM;
	}
	*out = ix;
	return 0;
}

GW_EXPORT void gw_index_free(gw_index *ix)
{
	if (!ix)
		return;
	for (uint32_t g = 0; g < ix->guest_count; g++) {
		free(ix->guests[g].hash);
		free(ix->guests[g].content);
	}
	for (uint32_t c = 0; c < ix->location_chunks; c++)
		free(ix->locations[c]);
	free(ix->locations);
	free(ix->guests);
	free(ix->slots);
	free(ix->has_data);
	free(ix->found);
	free(ix->hashes);
	free(ix->kept_id);
	free(ix->kept_bytes);
	free(ix);
}

GW_EXPORT int gw_index_add_guest(gw_index *ix, gw_ram *ram)
{
	struct guest_state *guests, *gs;

	if (ix->guest_count == INT32_MAX)
		return -E2BIG;
	guests = realloc(ix->guests, (ix->guest_count + 1) * sizeof(*guests));
	if (!guests)
		return -ENOMEM;
	ix->guests = guests;
	gs = &guests[ix->guest_count];
	gs->ram = ram;
	gs->pages = ram->pages;
	gs->hash = calloc(gs->pages ? gs->pages : 1, sizeof(*gs->hash));
	gs->content = malloc((gs->pages ? gs->pages : 1) * sizeof(*gs->content));
	if (!gs->hash || !gs->content) {
		free(gs->hash);
		free(gs->content);
		return -ENOMEM;
	}
	for (uint32_t p = 0; p < gs->pages; p++)
		gs->content[p] = GW_CONTENT_NONE;
	return (int)ix->guest_count++;
}

/* Rebuilds the table with more slots; positions come from the stored tags. */
static int grow_table(gw_index *ix)
{
	uint64_t capacity = ix->capacity * GROWTH_NUM / GROWTH_DEN;
	uint64_t *slots;

	if (capacity > UINT32_MAX)
		return -E2BIG;
	slots = calloc(capacity, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	for (uint64_t i = 0; i < ix->capacity; i++) {
		uint64_t slot = ix->slots[i], j;

		if (!slot)
			continue;
		j = ((slot >> 32) * capacity) >> 32;
		while (slots[j])
			j = j + 1 == capacity ? 0 : j + 1;
		slots[j] = slot;
	}
	free(ix->slots);
	ix->slots = slots;
	ix->capacity = capacity;
	return 0;
}

/* Reserves a location entry for the next id. */
static int reserve_location(gw_index *ix)
{
	uint32_t chunk = ix->contents >> LOC_CHUNK_SHIFT;

	if (chunk < ix->location_chunks)
		return 0;
	if (ix->location_chunks == ix->location_chunk_cap) {
		uint32_t cap = ix->location_chunk_cap ? ix->location_chunk_cap * 2 : 16;
		uint64_t **dir = realloc(ix->locations, cap * sizeof(*dir));

		if (!dir)
			return -ENOMEM;
		ix->locations = dir;
		ix->location_chunk_cap = cap;
	}
	ix->locations[chunk] = malloc(LOC_CHUNK * sizeof(uint64_t));
	if (!ix->locations[chunk])
		return -ENOMEM;
	ix->location_chunks++;
	return 0;
}

/* Makes room for the kept copies; without it (no memory) every confirm reads the holder. */
static void make_kept(gw_index *ix)
{
	uint64_t pages = 0;
	uint32_t slots;
	size_t bytes;

	for (uint32_t g = 0; g < ix->guest_count; g++)
		pages += ix->guests[g].pages;
	slots = pages / KEPT_PAGES_PER_SLOT < KEPT_MIN_SLOTS   ? KEPT_MIN_SLOTS
		: pages / KEPT_PAGES_PER_SLOT > KEPT_MAX_SLOTS ? KEPT_MAX_SLOTS
								    : (uint32_t)(pages / KEPT_PAGES_PER_SLOT);
	bytes = (size_t)slots << GW_PAGE_SHIFT;
	ix->kept_id = malloc(slots * sizeof(*ix->kept_id));
	/* On 2 MiB pages: a fault per 4 KiB page would cost more than the reads it saves (see memory.c). */
	ix->kept_bytes = gw__alloc_huge(&bytes);
	if (!ix->kept_id || !ix->kept_bytes) {
		free(ix->kept_id);
		free(ix->kept_bytes);
		ix->kept_id = NULL;
		ix->kept_bytes = NULL;
		ix->kept_slots = UINT32_MAX; /* tried: the reads go on without it */
		return;
	}
	for (uint32_t i = 0; i < slots; i++)
		ix->kept_id[i] = KEPT_NONE;
	ix->kept_slots = slots;
}

/* Does content id hold exactly these bytes (with this hash)? 1, 0, or -errno (-ESTALE). */
static int holds_content(gw_index *ix, uint64_t call, uint32_t id, uint64_t hash, const uint8_t *page)
{
	uint8_t held[GW_PAGE_SIZE] __attribute__((aligned(64)));
	uint64_t location = *location_of(ix, id);
	const struct guest_state *holder;
	uint8_t *kept;
	uint32_t p, slot;
	int err;

	if (location == LOC_INVALID)
		return 0;
	holder = &ix->guests[location >> 32];
	p = (uint32_t)location;
	if (holder->hash[p] != hash) /* the full hash, before reading the holder's bytes */
		return 0;
	if (!ix->kept_slots)
		make_kept(ix);
	slot = ix->kept_id ? id % ix->kept_slots : 0;
	kept = ix->kept_id ? ix->kept_bytes + ((size_t)slot << GW_PAGE_SHIFT) : NULL;
	/* A hit reads no file, so it cannot notice the holder's file shrank: its own guest's scan will. */
	if (kept && ix->kept_id[slot] == id)
		return memcmp(kept, page, GW_PAGE_SIZE) == 0;
	/* A holder read before (a guest the first round read, whose premap filled its mapping). */
	err = gw__ram_compare_mapped(holder->ram, p, page);
	if (err != -EAGAIN)
		return err;
	err = gw__ram_read_pages(holder->ram, call, p, 1, held); /* the holder may be any guest's file */
	if (err)
		return err;
	if (memcmp(held, page, GW_PAGE_SIZE))
		return 0;
	if (kept) {
		memcpy(kept, held, GW_PAGE_SIZE);
		ix->kept_id[slot] = id;
	}
	return 1;
}

/*
 * Finds the content of page (guest, p) or inserts it as a new content.
 * Returns GW_KIND_NEW or GW_KIND_DUPLICATE with *id set, or -errno.
 */
static int find_or_insert(gw_index *ix, uint64_t call, uint32_t guest, uint32_t p, uint64_t hash,
			  const uint8_t *page, uint32_t *id)
{
	uint32_t tag = (uint32_t)(hash >> 32);
	uint64_t i = home_slot(ix, tag);
	int err;

	for (;;) {
		uint64_t slot = ix->slots[i];

		if (!slot)
			break;
		if ((uint32_t)(slot >> 32) == tag) {
			int held = holds_content(ix, call, (uint32_t)slot - 1, hash, page);

			if (held < 0)
				return held;
			if (held) {
				*id = (uint32_t)slot - 1;
				return GW_KIND_DUPLICATE;
			}
		}
		i = i + 1 == ix->capacity ? 0 : i + 1;
	}

	/* Not found: a new content, at the end of this probe sequence. */
	if (ix->contents >= MAX_CONTENTS)
		return -E2BIG;
	if ((uint64_t)(ix->contents + 1) * 100 > ix->capacity * MAX_LOAD_PERCENT) {
		err = grow_table(ix);
		if (err)
			return err;
		i = home_slot(ix, tag);
		while (ix->slots[i])
			i = i + 1 == ix->capacity ? 0 : i + 1;
	}
	err = reserve_location(ix);
	if (err)
		return err;
	*id = ix->contents++;
	*location_of(ix, *id) = pack_location(guest, p);
	ix->slots[i] = (uint64_t)tag << 32 | ((uint64_t)*id + 1);
	return GW_KIND_NEW;
}

/* Page p no longer holds content id: if it was the content's holder, the content has none. */
static void release_content(gw_index *ix, uint32_t guest, uint32_t p, uint32_t id)
{
	uint64_t *location;

	if (id >= GW_CONTENT_ZERO)
		return;
	location = location_of(ix, id);
	if (*location == pack_location(guest, p))
		*location = LOC_INVALID;
}

/* The page is all zeros: it is zero now, and it was or was not before. */
int gw__index_classify_zero(gw_index *ix, uint32_t guest, uint32_t p, uint64_t *hash, uint32_t *id,
			     uint64_t *stats)
{
	struct guest_state *gs = &ix->guests[guest];
	uint32_t old = gs->content[p];

	release_content(ix, guest, p, old);
	*id = GW_CONTENT_ZERO;
	*hash = ix->zero_hash;
	stats[GW_STAT_ZERO]++;
	return old == GW_CONTENT_ZERO ? GW_KIND_UNCHANGED : GW_KIND_ZERO;
}

/* The page holds these non-zero bytes: unchanged, or a content found or added. */
int gw__index_classify_data(gw_index *ix, uint64_t call, uint32_t guest, uint32_t p, const uint8_t *page,
			     uint64_t hash, uint32_t *id, uint64_t *stats)
{
	struct guest_state *gs = &ix->guests[guest];
	uint32_t old = gs->content[p];
	int kind;

	if (old < GW_CONTENT_ZERO && gs->hash[p] == hash) {
		uint64_t *location = location_of(ix, old);

		/* A content whose holder changed moves to this unchanged copy. */
		if (*location == LOC_INVALID)
			*location = pack_location(guest, p);
		*id = old;
		stats[GW_STAT_UNCHANGED]++;
		return GW_KIND_UNCHANGED;
	}
	release_content(ix, guest, p, old);
	kind = find_or_insert(ix, call, guest, p, hash, page, id);
	if (kind == GW_KIND_NEW)
		stats[GW_STAT_NEW]++;
	else if (kind == GW_KIND_DUPLICATE)
		stats[(*location_of(ix, *id) >> 32) == guest ? GW_STAT_DUP_WITHIN : GW_STAT_DUP_ACROSS]++;
	return kind;
}

GW_EXPORT const uint64_t *gw_index_page_hashes(const gw_index *ix, uint32_t guest)
{
	return guest < ix->guest_count ? ix->guests[guest].hash : NULL;
}

GW_EXPORT const uint32_t *gw_index_page_contents(const gw_index *ix, uint32_t guest)
{
	return guest < ix->guest_count ? ix->guests[guest].content : NULL;
}

GW_EXPORT uint32_t gw_index_guest_pages(const gw_index *ix, uint32_t guest)
{
	return guest < ix->guest_count ? ix->guests[guest].pages : 0;
}

GW_EXPORT uint32_t gw_index_contents(const gw_index *ix)
{
	return ix->contents;
}

GW_EXPORT uint64_t gw_index_memory(const gw_index *ix)
{
	return ix->capacity * sizeof(*ix->slots) + (uint64_t)ix->location_chunks * LOC_CHUNK * sizeof(uint64_t) +
	       (uint64_t)ix->location_chunk_cap * sizeof(*ix->locations);
}
