/* Private to the C library: shared between its files, never exported. */
#ifndef GANGWAY_INTERNAL_H
#define GANGWAY_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "gangway.h"

#define GW_EXPORT __attribute__((visibility("default")))

struct gw_ram {
	int fd;              /* the open file */
	int writable;        /* opened with GW_OPEN_WRITE */
	uint64_t size;       /* bytes, as of open or the last resize */
	uint32_t pages;      /* ceil(size / GW_PAGE_SIZE) */
	uint64_t data_start; /* the last data region found (SEEK_DATA/SEEK_HOLE) */
	uint64_t data_end;   /* its end; start == end: none known */
	uint64_t whole_in;   /* the call (gw__call_id) in which fstat last found the file whole */
	uint8_t *map;        /* the file mapped read-only for reads in place (ram_map.c), or NULL */
	_Atomic int map_faulted; /* a guarded read of map faulted: zero pages stand in it */
	pthread_mutex_t premapping; /* held by gw_ram_premap (another thread's, maybe): close and resize wait */
};

/* Pages of a file of size bytes, counting a short last page as a page. */
static inline uint64_t gw_pages_of(uint64_t size)
{
	return (size + GW_PAGE_SIZE - 1) >> GW_PAGE_SHIFT;
}

/* 1 if page p of ram is a whole page of the file (not past its end, not a short last page). */
static inline int gw__ram_whole_page(const struct gw_ram *ram, uint32_t p)
{
	return ((uint64_t)p + 1) << GW_PAGE_SHIFT <= ram->size;
}

/* A u64 that may sit at any address and alias any buffer. */
typedef uint64_t __attribute__((may_alias, aligned(1))) any_u64;

/* 1 if the page holds only zero bytes. */
int gw__page_is_zero(const uint8_t *page);

/* Bytes of the XXH3 secret a seed makes (XXH3_SECRET_DEFAULT_SIZE; hash.c checks it). */
#define GW_HASH_SECRET_BYTES 192

/* What a page hash's seed expands to, made once for many pages (gw__hash_key). */
struct gw_hash_key {
	uint8_t secret[GW_HASH_SECRET_BYTES] __attribute__((aligned(64)));
};

/* The key of seed: its pages' hashes are XXH3-64 with that seed. */
void gw__hash_key(uint64_t seed, struct gw_hash_key *key);

/* XXH3-64 of a page with the key's seed: the same as XXH3_64bits_withSeed (hash.c says how). */
uint64_t gw__page_hash(const uint8_t *page, const struct gw_hash_key *key);

/* pread exactly len bytes, or up to end of file; the rest is zero-filled. 0 or -errno. */
int gw__pread_full(int fd, uint8_t *buf, size_t len, uint64_t offset);

/*
 * Marks in has_data the pages of [first, first + count) that mask selects
 * (NULL = all) and that hold data: holes are found with SEEK_DATA/SEEK_HOLE
 * (past a few data regions a call marks straight on: such holes read as
 * zeros). Reads no page. count is at most GW_MAX_CALL_PAGES. Returns the
 * pages marked or -errno (-ESTALE: the file shrank, see gw__ram_check_whole).
 */
int gw__ram_find_data(gw_ram *ram, uint64_t call, uint32_t first, uint32_t count, const uint8_t *mask,
		      uint8_t *has_data);

/*
 * Reads the pages marked in has_data[from, to) of a call that starts at page
 * first into buf (page i at i * GW_PAGE_SIZE), a pread per run of marked
 * pages. Only after gw__ram_find_data of the same call, with its has_data:
 * that checked the file's size (a shrunk file is -ESTALE there, never
 * zeros here). Threads may read disjoint ranges of one call at once. 0 or
 * -errno.
 */
int gw__ram_read_marked(const gw_ram *ram, uint32_t first, uint32_t from, uint32_t to, const uint8_t *has_data,
			uint8_t *buf);

/*
 * A number for each call into the library that reads guest RAM, so that a
 * file's size is checked once per call (fstat costs about 1.1 us), however
 * many of its pages the call touches.
 */
uint64_t gw__call_id(void);

/*
 * -ESTALE if the file is now shorter than ram->size: its lost pages must
 * not read as zeros. Checked once per call (a file that shrinks while a
 * call runs reads zeros past its new end; gangway never shrinks a file it
 * reads, and between calls every shrink becomes this error).
 */
int gw__ram_check_whole(gw_ram *ram, uint64_t call);

/*
 * Reads count pages from page first into buf with pread, after
 * gw__ram_check_whole: a shrunk file is -ESTALE, never zeros; a short last
 * page reads as zeros past the end of the file. 0 or -errno.
 */
int gw__ram_read_pages(gw_ram *ram, uint64_t call, uint64_t first, uint32_t count, uint8_t *buf);

/*
 * The file mapped read-only (whole pages up to ram->size), made on the
 * first call and kept until gw_ram_close, a resize or a guarded read that
 * faulted (the next call maps the file anew); NULL if it cannot be mapped
 * (read with pread then). Read it only inside gw__ram_guarded, and never
 * where the file has a hole: a read there allocates the page.
 */
const uint8_t *gw__ram_map(gw_ram *ram);

/* Unmaps what gw__ram_map mapped, if anything. */
void gw__ram_unmap(gw_ram *ram);

typedef void gw__guarded_fn(void *arg);

/*
 * Runs fn(arg) on this thread, reading through ram's mapping (gw__ram_map):
 * 0, or -ESTALE if a read of the mapping faulted because the file shrank
 * (SIGBUS), on this thread or on another, before fn ended. Such a read
 * goes on with zeros and fn runs to its end; the mapping is kept until the
 * next gw__ram_map, which maps the file anew, so that other threads may go
 * on reading it under guards of their own meanwhile.
 */
int gw__ram_guarded(gw_ram *ram, gw__guarded_fn *fn, void *arg);

/*
 * Compares page p of ram, where it lies in the file's mapping, with the
 * given page's bytes: 1 if equal, 0 if not, -ESTALE if the file shrank.
 * -EAGAIN when the file is not mapped, a premap fills its mapping now, or
 * this thread reads under a guard already: read the page with pread then.
 * Never maps the file: only a mapping a premap filled is cheaper to read
 * than a pread on these VMs.
 */
int gw__ram_compare_mapped(gw_ram *ram, uint32_t p, const uint8_t *page);

/*
 * Copies whole page p of ram into out from the file's mapping, on the
 * same terms as gw__ram_compare_mapped: 0, -ESTALE if the file shrank,
 * -EAGAIN when pread must do (a short last page included).
 */
int gw__ram_read_mapped(gw_ram *ram, uint32_t p, uint8_t *out);

/* Most threads a scan uses, the caller's included. */
#define GW_MAX_THREADS 8

/*
 * Memory of at least *bytes (rounded up to whole 2 MiB pages, *bytes set
 * to that), advised onto 2 MiB pages before anything touches it (memory.c);
 * free() it. NULL without memory.
 */
void *gw__alloc_huge(size_t *bytes);

/* Part `part` of `parts` of a job: the pages [count * part / parts, count * (part + 1) / parts). */
typedef void gw__work_fn(void *arg, uint32_t part, uint32_t parts);

/* Runs fn on `parts` threads (the caller's and helpers) and returns when every part is done. */
void gw__parallel(gw__work_fn *fn, void *arg, uint32_t parts);

#endif
