/*
 * A scan of guest pages against the gang's content index, in three steps
 * per call (gw_index_scan): find the holes; then, for every page, the read,
 * the zero check and the hash (the same for every page and sharing
 * nothing, so split among helper threads when asked); then classify each
 * page against its last scan and the index (index.c), on the caller's
 * thread, so the index needs no lock.
 *
 * A page's first read is a pread into the caller's buffer, or a read in
 * place (copied into the buffer when it holds data and the scan wants its
 * bytes), whichever the index measures faster (first_read.c). Pages read
 * before are rescanned where they lie, through a mapping kept between
 * rounds (ram_map.c) and filled in ahead (gw_ram_premap):
 * only a page whose hash changed is copied, and it is checked and hashed
 * again as copied, and a scan that wants no bytes copies none. Either way
 * the buffer's bytes are the snapshot that is sent and hashed, whatever
 * the guest writes meanwhile.
 */
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "index_internal.h"

/* Grows the scan scratch arrays to count pages. */
static int reserve_scratch(gw_index *ix, uint32_t count)
{
	uint8_t **arrays[] = {&ix->has_data, &ix->found};
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

static inline uint64_t page_hash(const gw_index *ix, const uint8_t *page)
{
	return gw__page_hash(page, &ix->key) & ix->hash_mask;
}

/* What the page work found on a page, for the classification after it. */
enum page_found {
	FOUND_SKIPPED,   /* not examined */
	FOUND_HOLE,      /* a hole: zero, never read */
	FOUND_ZERO,      /* all zero bytes */
	FOUND_DATA,      /* data, in buf: hashes[i] is its hash */
	FOUND_IN_PLACE,  /* data, only where it lies (GW_SCAN_NO_BYTES): hashes[i] is its hash */
};

/* A scan's page work: the same for every page, each thread on its own pages, so it runs on several. */
struct page_work {
	const gw_index *ix;
	const struct guest_state *gs;
	gw_ram *ram;
	const uint8_t *map;  /* the guest's file mapped, for reads in place (NULL: pread every page) */
	int no_bytes;        /* GW_SCAN_NO_BYTES: a page read in place is never copied */
	int first_in_place;  /* pages never scanned are read in place too (first_read.c) */
	uint32_t first;      /* first page of the call */
	uint32_t count;      /* pages of the call */
	const uint8_t *mask; /* pages to examine (NULL = all) */
	uint8_t *buf;        /* page bytes, by index in the call */
	_Atomic int err;     /* the first read that failed, or 0 */
};

/*
 * Pages a thread reads before it checks and hashes them: 1 MiB, read into
 * its core's cache and hashed there; a thread's whole part of a 16 MiB call
 * would be read from memory twice.
 */
#define PAGE_WORK_BLOCK 256

/* The zero check and the hash of pages [from, to) of the call, read into buf. */
static void check_and_hash(const struct page_work *w, uint32_t from, uint32_t to)
{
	const gw_index *ix = w->ix;

	for (uint32_t i = from; i < to; i++) {
		const uint8_t *page = w->buf + ((size_t)i << GW_PAGE_SHIFT);

		if (w->mask && !w->mask[i])
			ix->found[i] = FOUND_SKIPPED;
		else if (!ix->has_data[i])
			ix->found[i] = FOUND_HOLE;
		else if (gw__page_is_zero(page))
			ix->found[i] = FOUND_ZERO;
		else {
			ix->hashes[i] = page_hash(ix, page);
			ix->found[i] = FOUND_DATA;
		}
	}
}

/* Pages [from, to) of a page work, for a read in place under a guard. */
struct block {
	const struct page_work *work;
	uint32_t from, to;
	const unsigned char *resident; /* mincore's answer for each page of the block */
	int err;                       /* a pread that failed, or 0 */
};

/*
 * The zero check and the hash of pages [from, to) of the call where they lie
 * (w->map): a page whose hash is the one its last scan found is not copied
 * (the scan classifies it unchanged from its hash alone), nor is any page
 * when the caller wants no bytes; any other is copied into buf and checked
 * and hashed as copied. A page not in memory (a hole that the hole search
 * did not single out, or one swapped out) is read with pread instead:
 * through the mapping a hole would be allocated.
 */
static void read_in_place(void *arg)
{
	struct block *b = arg;
	const struct page_work *w = b->work;
	const gw_index *ix = w->ix;
	uint8_t absent[PAGE_WORK_BLOCK]; /* pages to examine that hold data but are not in memory */

	for (uint32_t i = b->from; i < b->to; i++)
		absent[i - b->from] = (!w->mask || w->mask[i]) && ix->has_data[i] && !(b->resident[i - b->from] & 1);
	/* Read first, as any scan reads (holes read as zeros, unallocated), the block as a call of its own. */
	b->err = gw__ram_read_marked(w->ram, w->first + b->from, 0, b->to - b->from, absent,
				     w->buf + ((size_t)b->from << GW_PAGE_SHIFT));
	if (b->err)
		return;
	for (uint32_t i = b->from; i < b->to; i++) {
		uint32_t p = w->first + i;
		const uint8_t *page = w->map + ((size_t)p << GW_PAGE_SHIFT);
		uint8_t *copy = w->buf + ((size_t)i << GW_PAGE_SHIFT);
		uint64_t hash;

		if (w->mask && !w->mask[i]) {
			ix->found[i] = FOUND_SKIPPED;
			continue;
		}
		if (!ix->has_data[i]) {
			ix->found[i] = FOUND_HOLE;
			continue;
		}
		if (!(b->resident[i - b->from] & 1))
			page = copy; /* read above */
		if (gw__page_is_zero(page)) {
			ix->found[i] = FOUND_ZERO;
			continue;
		}
		hash = page_hash(ix, page);
		if (page != copy && w->no_bytes) {
			ix->hashes[i] = hash;
			ix->found[i] = FOUND_IN_PLACE;
			continue;
		}
		if (page != copy && (hash != w->gs->hash[p] || w->gs->content[p] >= GW_CONTENT_ZERO)) {
			/* Changed: the copy is what is sent, and the guest may be writing the page still. */
			memcpy(copy, page, GW_PAGE_SIZE);
			if (gw__page_is_zero(copy)) {
				ix->found[i] = FOUND_ZERO;
				continue;
			}
			hash = page_hash(ix, copy);
		}
		ix->hashes[i] = hash;
		ix->found[i] = FOUND_DATA;
	}
}

static void do_page_work(void *arg, uint32_t part, uint32_t parts)
{
	struct page_work *w = arg;
	const gw_index *ix = w->ix;
	uint32_t from = (uint32_t)((uint64_t)w->count * part / parts);
	uint32_t to = (uint32_t)((uint64_t)w->count * (part + 1) / parts);

	for (uint32_t block = from; block < to; block += PAGE_WORK_BLOCK) {
		uint32_t block_end = block + PAGE_WORK_BLOCK < to ? block + PAGE_WORK_BLOCK : to;
		unsigned char resident[PAGE_WORK_BLOCK];
		struct block in_place = {w, block, block_end, resident, 0};
		/*
		 * Read in place: a block of a rescan whose first page was scanned before (the rest of
		 * it, in practice, too), or any block when first reads go in place.
		 */
		int here = w->map && (w->first_in_place || w->gs->content[w->first + block] != GW_CONTENT_NONE) &&
			   mincore((void *)(w->map + ((size_t)(w->first + block) << GW_PAGE_SHIFT)),
				   (size_t)(block_end - block) << GW_PAGE_SHIFT, resident) == 0;
		int err = here ? gw__ram_guarded(w->ram, read_in_place, &in_place)
			       : gw__ram_read_marked(w->ram, w->first, block, block_end, ix->has_data, w->buf);

		if (!err)
			err = in_place.err;

		if (err) {
			int none = 0;

			atomic_compare_exchange_strong(&w->err, &none, err);
			return;
		}
		if (!here)
			check_and_hash(w, block, block_end);
	}
}

/* Below this many pages a call does its page work alone: waking helpers would cost more. */
#define MIN_PAGES_PER_THREAD 64

/* Step 3 of a scan, on the caller's thread. */
struct classification {
	gw_index *ix;
	uint32_t guest, first, count;
	uint64_t call;
	const uint8_t *map; /* where FOUND_IN_PLACE pages lie */
	const uint8_t *buf; /* where the others were read */
	uint8_t *kinds;
	uint32_t *ids;
	uint64_t *stats;
	int result; /* pages examined, or -errno */
};

/* Classifies every examined page against its last scan and the gang (under a guard with pages in place). */
static void classify_pages(void *arg)
{
	struct classification *c = arg;
	gw_index *ix = c->ix;
	struct guest_state *gs = &ix->guests[c->guest];
	int examined = 0;

	for (uint32_t i = 0; i < c->count; i++) {
		uint32_t p = c->first + i, id;
		uint64_t hash = ix->hashes[i];
		int kind;

		switch (ix->found[i]) {
		case FOUND_SKIPPED:
			if (c->kinds)
				c->kinds[i] = GW_KIND_SKIPPED;
			continue;
		case FOUND_HOLE:
			c->stats[GW_STAT_PAGES_HOLE]++;
			kind = gw__index_classify_zero(ix, c->guest, p, &hash, &id, c->stats);
			break;
		case FOUND_ZERO:
			kind = gw__index_classify_zero(ix, c->guest, p, &hash, &id, c->stats);
			break;
		case FOUND_IN_PLACE:
			kind = gw__index_classify_data(ix, c->call, c->guest, p, c->map + ((size_t)p << GW_PAGE_SHIFT),
						       hash, &id, c->stats);
			break;
		default: /* FOUND_DATA */
			kind = gw__index_classify_data(ix, c->call, c->guest, p, c->buf + ((size_t)i << GW_PAGE_SHIFT),
						       hash, &id, c->stats);
		}
		examined++;
		if (kind < 0) {
			c->result = kind;
			return;
		}
		gs->hash[p] = hash;
		gs->content[p] = id;
		if (c->kinds)
			c->kinds[i] = (uint8_t)kind;
		if (c->ids)
			c->ids[i] = id;
	}
	c->result = examined;
}

GW_EXPORT int gw_index_scan(gw_index *ix, uint32_t guest, uint32_t first, uint32_t count, const uint8_t *mask,
			    uint32_t flags, uint8_t *buf, uint8_t *kinds, uint32_t *ids, uint64_t *stats)
{
	struct guest_state *gs;
	struct page_work work;
	struct classification step3;
	uint64_t call = gw__call_id();
	uint32_t threads;
	int pages_read, in_place, first_reads, err;
	uint64_t started = 0;

	if (guest >= ix->guest_count || count > GW_MAX_CALL_PAGES ||
	    (flags & ~(GW_SCAN_CHANGED_BYTES | GW_SCAN_NO_BYTES)))
		return -EINVAL;
	gs = &ix->guests[guest];
	if ((uint64_t)first + count > gs->pages)
		return -ERANGE;
	err = reserve_scratch(ix, count);
	if (err)
		return err;

	/* Step 1 -- the holes, never read. */
	pages_read = gw__ram_find_data(gs->ram, call, first, count, mask, ix->has_data);
	if (pages_read < 0)
		return pages_read;

	/* Step 2 -- reads, zero checks and hashes, on several threads if asked. */
	work.ix = ix;
	work.gs = gs;
	work.ram = gs->ram;
	threads = count / MIN_PAGES_PER_THREAD;
	if (threads > ix->threads)
		threads = ix->threads;
	/*
	 * In place when unchanged pages need no bytes (or none do) and pages were scanned before;
	 * pages never scanned, when that is the faster way (first_read.c): all of them changed, so
	 * every page holding data is copied when bytes are wanted, as a read would have.
	 */
	work.no_bytes = !!(flags & GW_SCAN_NO_BYTES);
	first_reads = count && gs->content[first] == GW_CONTENT_NONE;
	work.first_in_place = first_reads && gw__first_read_in_place(ix, work.no_bytes);
	in_place = count && (work.first_in_place || ((flags & (GW_SCAN_CHANGED_BYTES | GW_SCAN_NO_BYTES)) &&
						     gs->content[first] != GW_CONTENT_NONE));
	if (first_reads)
		started = gw__now_ns();
	work.map = in_place ? gw__ram_map(gs->ram) : NULL;
	work.first = first;
	work.count = count;
	work.mask = mask;
	work.buf = buf;
	atomic_init(&work.err, 0);
	gw__parallel(do_page_work, &work, threads);
	err = atomic_load(&work.err);
	if (err)
		return err;
	stats[GW_STAT_PAGES_READ] += (uint64_t)pages_read;

	/* Step 3 -- classify every examined page against its last scan and the gang. */
	step3 = (struct classification){ix, guest, first, count, call, work.map, buf, kinds, ids, stats, 0};
	if (work.map && work.no_bytes)
		err = gw__ram_guarded(gs->ram, classify_pages, &step3); /* it compares pages where they lie */
	else
		classify_pages(&step3);
	if (first_reads && !err && step3.result >= 0)
		gw__first_read_record(ix, work.no_bytes, work.first_in_place, (uint32_t)pages_read,
				      gw__now_ns() - started);
	return err ? err : step3.result;
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
	/* A shrunk file is an error even when no sample falls in it. */
	err = gw__ram_check_whole(gs->ram, call);
	if (err)
		return err;
	for (uint64_t p = offset; p < gs->pages; p += stride) {
		uint64_t hash;

		/* A short last page reads as its scan read it: zeros past the end. */
		err = gw__ram_read_pages(gs->ram, call, p, 1, page);
		if (err)
			return err;
		hash = gw__page_is_zero(page) ? ix->zero_hash : page_hash(ix, page);
		if (hash != gs->hash[p])
			changed++;
	}
	return changed;
}
