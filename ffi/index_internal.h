/*
 * Private to the content index (index.c: the table and the contents;
 * index_scan.c: the scan that classifies pages against it).
 */
#ifndef GANGWAY_INDEX_INTERNAL_H
#define GANGWAY_INDEX_INTERNAL_H

#include "internal.h"

struct guest_state {
	gw_ram *ram;       /* the guest's RAM file (not owned) */
	uint32_t pages;    /* pages of the guest */
	uint64_t *hash;    /* each page's hash at its last scan */
	uint32_t *content; /* each page's content id at its last scan (or GW_CONTENT_*) */
};

/* How a scan reads pages for the first time (first_read.c). */
struct first_read_choice {
	uint32_t fixed;    /* GW_FIRST_READS_*: measured, or one way */
	uint32_t calls;    /* calls since the last trial began */
	uint64_t pages[2]; /* pages read in this trial: by pread [0], in place [1] */
	uint64_t ns[2];    /* and the calls' time */
	int in_place;      /* the faster way, as the last trial found */
};

struct gw_index {
	struct gw_hash_key key;     /* what the seed of every page hash expands to (gw__page_hash) */
	uint64_t hash_mask;         /* keeps the top hash_bits bits of a hash */
	uint64_t zero_hash;         /* hash of a zero page, masked */
	uint64_t *slots;            /* tag << 32 | (id + 1); 0 = empty */
	uint64_t capacity;          /* number of slots (< 2^32) */
	uint32_t contents;          /* ids issued: 0 .. contents - 1 */
	uint64_t **locations;       /* chunks of (guest << 32 | page) by id */
	uint32_t location_chunks;   /* chunks allocated */
	uint32_t location_chunk_cap; /* room in the chunk directory */
	struct guest_state *guests; /* by guest number */
	uint32_t guest_count;       /* guests added */
	uint8_t *has_data;          /* scratch for a scan: which pages were read (not holes) */
	uint8_t *found;             /* scratch: what the page work found (enum page_found) */
	uint64_t *hashes;           /* scratch: the hash the page work computed */
	uint32_t scratch_cap;       /* pages in each scratch array */
	uint32_t threads;           /* threads for the page work of a scan (1 = the caller's only) */
	uint32_t *kept_id;          /* by id % kept_slots: the content whose bytes the slot keeps, or none */
	uint8_t *kept_bytes;        /* the kept copies of confirmed contents, a page per slot (index.c) */
	uint32_t kept_slots;        /* their slots; 0 before the first confirm, UINT32_MAX if none could be made */
	struct first_read_choice first_reads[2]; /* pread or in place: [0] scans that want bytes, [1] not */
};

/* Whether a scan's next call reads pages never scanned in place (first_read.c); no_bytes: GW_SCAN_NO_BYTES. */
int gw__first_read_in_place(const gw_index *ix, int no_bytes);
/* Records how long such a call took for the pages it read. */
void gw__first_read_record(gw_index *ix, int no_bytes, int in_place, uint32_t pages, uint64_t ns);
/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t gw__now_ns(void);

/*
 * The index side of a scan (index.c), for a page p of guest that the scan
 * found all zero: it is zero now, and it was or was not before. Sets *id
 * and *hash, counts it in stats and returns its GW_KIND_*.
 */
int gw__index_classify_zero(gw_index *ix, uint32_t guest, uint32_t p, uint64_t *hash, uint32_t *id,
			    uint64_t *stats);

/*
 * The same for a page that holds these non-zero bytes (with this hash):
 * unchanged since its last scan, or a content found in the gang or added.
 * Returns its GW_KIND_* or -errno.
 */
int gw__index_classify_data(gw_index *ix, uint64_t call, uint32_t guest, uint32_t p, const uint8_t *page,
			    uint64_t hash, uint32_t *id, uint64_t *stats);

#endif
