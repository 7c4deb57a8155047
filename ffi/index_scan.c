/*
 * A scan of guest pages against the gang's content index, in three steps
 * per call (gw_index_scan): find which pages are in memory and read the
 * others around holes; then, for every page, the zero check, the copy when
 * its bytes are wanted and the hash (the same for every page and sharing
 * nothing, so split among helper threads when asked); then classify each
 * page against its last scan and the index (index.c), on the caller's
 * thread, so the index needs no lock.
 */
#include <errno.h>
#include <limits.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "index_internal.h"

/* Grows the scan scratch arrays to count pages. */
static int reserve_scratch(gw_index *ix, uint32_t count)
{
	uint8_t **arrays[] = {&ix->has_data, &ix->resident, &ix->read_mask, &ix->found};
	uint64_t *hashes;

	if (count <= ix->scratch_cap)
		return 0;
	for (size_t a = 0; a < sizeof(arrays) / sizeof(arrays[0]); a++) {
		uint8_t *grown = realloc(*arrays[a], count);
		if (!grown)
			return -ENOMEM;
		*arrays[a] = grown;
	}
	hashes = realloc(ix->hashes, count * sizeof(*hashes));
	if (!hashes)
		return -ENOMEM;
	ix->hashes = hashes;
	ix->scratch_cap = count;
	return 0;
}

GW_EXPORT void gw_index_set_threads(gw_index *ix, uint32_t threads)
{
	ix->threads = threads < 1 ? 1 : threads > GW_MAX_THREADS ? GW_MAX_THREADS : threads;
}

/*
 * Marks which pages of [first, first + count) are in memory. Those are read
 * through the mapping (*map), with no copy and no system call per page;
 * reading a page that is in memory never allocates one. Without a mapping
 * (or if mincore fails) *map is NULL and every page is read with pread.
 * Returns 0 or -ESTALE (the file shrank).
 */
static int resident_pages(gw_index *ix, gw_ram *ram, uint64_t call, uint32_t first, uint32_t count,
			  const uint8_t **map)
{
	int err = gw__ram_map(ram, call, map);

	if (err)
		return err;
	if (*map && mincore((void *)(*map + ((size_t)first << GW_PAGE_SHIFT)), (size_t)count << GW_PAGE_SHIFT,
			    ix->resident) < 0)
		*map = NULL;
	for (uint32_t i = 0; *map && i < count; i++)
		ix->resident[i] &= 1; /* the other bits are reserved */
	return 0;
}

static inline uint64_t page_hash(const gw_index *ix, const uint8_t *page)
{
	return XXH3_64bits_withSeed(page, GW_PAGE_SIZE, ix->seed) & ix->hash_mask;
}

/* What the page work found on a page, for the classification after it. */
enum page_found {
	FOUND_SKIPPED,   /* not examined */
	FOUND_HOLE,      /* a hole: zero, never read */
	FOUND_ZERO,      /* all zero bytes */
	FOUND_IN_BUF,    /* data in buf (read with pread, or copied): hashes[i] is its hash */
	FOUND_IN_PLACE,  /* data in memory, hashed in place: hashes[i]; buf not filled */
};

/* A scan's page work: the same for every page, nothing shared, so it runs on several threads. */
struct page_work {
	const gw_index *ix;
	const uint8_t *map;  /* the guest's mapping (NULL: every page was read with pread) */
	uint32_t first;      /* first page of the call */
	uint32_t count;      /* pages of the call */
	uint32_t flags;      /* GW_SCAN_* */
	const uint8_t *mask; /* pages to examine (NULL = all) */
	uint8_t *buf;        /* page bytes, by index in the call */
};

static void do_page_work(void *arg, uint32_t part, uint32_t parts)
{
	const struct page_work *w = arg;
	const gw_index *ix = w->ix;
	uint32_t from = (uint32_t)((uint64_t)w->count * part / parts);
	uint32_t to = (uint32_t)((uint64_t)w->count * (part + 1) / parts);

	for (uint32_t i = from; i < to; i++) {
		uint8_t *page = w->buf + ((size_t)i << GW_PAGE_SHIFT);
		const uint8_t *data = page;
		uint8_t found = FOUND_IN_BUF;

		if (w->mask && !w->mask[i]) {
			ix->found[i] = FOUND_SKIPPED;
			continue;
		}
		if (ix->read_mask[i]) {
			if (!ix->has_data[i]) {
				ix->found[i] = FOUND_HOLE;
				continue;
			}
		} else if (w->flags & GW_SCAN_ALL_BYTES) {
			/* A snapshot: the bytes sent and their hash are one version of a live page. */
			memcpy(page, w->map + ((size_t)(w->first + i) << GW_PAGE_SHIFT), GW_PAGE_SIZE);
		} else {
			data = w->map + ((size_t)(w->first + i) << GW_PAGE_SHIFT);
			found = FOUND_IN_PLACE;
		}
		if (gw__page_is_zero(data)) {
			ix->found[i] = FOUND_ZERO;
			continue;
		}
		ix->hashes[i] = page_hash(ix, data);
		ix->found[i] = found;
	}
}

/* Below this many pages a call does its page work alone: waking helpers would cost more. */
#define MIN_PAGES_PER_THREAD 64

GW_EXPORT int gw_index_scan(gw_index *ix, uint32_t guest, uint32_t first, uint32_t count, uint32_t flags,
			    const uint8_t *mask, uint8_t *buf, uint8_t *kinds, uint32_t *ids, uint64_t *stats)
{
	struct guest_state *gs;
	struct page_work work;
	const uint8_t *map;
	uint64_t call = gw__call_id();
	uint32_t threads;
	int pages_read, examined = 0, err;

	if (guest >= ix->guest_count || count > GW_MAX_CALL_PAGES)
		return -EINVAL;
	gs = &ix->guests[guest];
	if ((uint64_t)first + count > gs->pages)
		return -ERANGE;
	err = reserve_scratch(ix, count);
	if (err)
		return err;

	/* Step 1 -- pages in memory are read in place; the others with pread, skipping holes. */
	err = resident_pages(ix, gs->ram, call, first, count, &map);
	if (err)
		return err;
	for (uint32_t i = 0; i < count; i++)
		ix->read_mask[i] = (!mask || mask[i]) && !(map && ix->resident[i]);
	pages_read = gw__ram_read_data(gs->ram, call, first, count, ix->read_mask, buf, ix->has_data);
	if (pages_read < 0)
		return pages_read;
	stats[GW_STAT_PAGES_READ] += (uint64_t)pages_read;

	/* Step 2 -- zero checks, copies and hashes, on several threads if asked. */
	work = (struct page_work){ix, map, first, count, flags, mask, buf};
	threads = count / MIN_PAGES_PER_THREAD;
	gw__parallel(do_page_work, &work, threads < ix->threads ? threads : ix->threads);

	/* Step 3 -- classify every examined page against its last scan and the gang. */
	for (uint32_t i = 0; i < count; i++) {
		uint8_t *page = buf + ((size_t)i << GW_PAGE_SHIFT);
		uint32_t p = first + i, id;
		uint64_t hash = ix->hashes[i];
		int kind;

		switch (ix->found[i]) {
		case FOUND_SKIPPED:
			if (kinds)
				kinds[i] = GW_KIND_SKIPPED;
			continue;
		case FOUND_HOLE:
			stats[GW_STAT_PAGES_HOLE]++;
			kind = gw__index_classify_zero(ix, guest, p, &hash, &id, stats);
			break;
		case FOUND_ZERO:
			if (!ix->read_mask[i])
				stats[GW_STAT_PAGES_READ]++;
			kind = gw__index_classify_zero(ix, guest, p, &hash, &id, stats);
			break;
		case FOUND_IN_BUF:
			if (!ix->read_mask[i])
				stats[GW_STAT_PAGES_READ]++;
			kind = gw__index_classify_data(ix, call, guest, p, page, hash, &id, stats);
			break;
		default: { /* FOUND_IN_PLACE */
			const uint8_t *live = map + ((size_t)p << GW_PAGE_SHIFT);

			stats[GW_STAT_PAGES_READ]++;
			if ((hash == gs->hash[p] && gs->content[p] < GW_CONTENT_ZERO) || (flags & GW_SCAN_NO_BYTES)) {
				/* Unchanged, or nobody sends these bytes: classify the live page, no copy. */
				kind = gw__index_classify_data(ix, call, guest, p, live, hash, &id, stats);
			} else {
				/* Changed: a snapshot for the caller to send, hashed again as copied. */
				memcpy(page, live, GW_PAGE_SIZE);
				if (gw__page_is_zero(page))
					kind = gw__index_classify_zero(ix, guest, p, &hash, &id, stats);
				else
					kind = gw__index_classify_data(ix, call, guest, p, page, hash = page_hash(ix, page), &id, stats);
			}
		}
		}
		examined++;
		if (kind < 0)
			return kind;
		gs->hash[p] = hash;
		gs->content[p] = id;
		if (kinds)
			kinds[i] = (uint8_t)kind;
		if (ids)
			ids[i] = id;
	}
	return examined;
}

GW_EXPORT int gw_index_count_changed(gw_index *ix, uint32_t guest, uint32_t stride, uint32_t offset)
{
	uint8_t page[GW_PAGE_SIZE] __attribute__((aligned(64)));
	struct guest_state *gs;
	uint64_t call = gw__call_id();
	int changed = 0, err;

	if (guest >= ix->guest_count || !stride)
		return -EINVAL;
	gs = &ix->guests[guest];
	if (gs->pages / stride >= INT_MAX)
		return -EOVERFLOW; /* the count would not fit the int */
	/* A shrunk file's lost pages must not read as zeros. */
	err = gw__ram_check_whole(gs->ram, call);
	if (err)
		return err;
	for (uint64_t p = offset; p < gs->pages; p += stride) {
		uint64_t hash;

		/* A short last page reads as its scan read it: zeros past the end. */
		err = gw__pread_full(gs->ram->fd, page, GW_PAGE_SIZE, p << GW_PAGE_SHIFT);
		if (err)
			return err;
		hash = gw__page_is_zero(page) ? ix->zero_hash : page_hash(ix, page);
		if (hash != gs->hash[p])
			changed++;
	}
	return changed;
}
