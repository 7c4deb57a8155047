/*
 * C-level checks of the library's entry points, built with ASan and UBSan
 * (`deno run ... ffi/build.ts --sanitized`) and run by
 * tests/sanitizers_test.ts. The buffers here come from malloc, so that
 * ASan sees any read or write past them (the TypeScript tests hand the
 * library V8 memory, which ASan does not watch).
 *
 * Each check prints "ok NAME"; the first failure prints "FAIL ..." and
 * exits 1. Usage: ffi_check [SEED]; the fuzz loops are seeded and short.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "../internal.h" /* gw__ram_map and gw__ram_guarded, as the driver is built with the sources */

#define PAGE GW_PAGE_SIZE
#define FUZZ_ROUNDS 100

#define CHECK(cond, ...)                                                                                      \
	do {                                                                                                  \
		if (!(cond))                                                                                  \
			fail(__LINE__, #cond, __VA_ARGS__);                                                   \
	} while (0)

static void fail(int line, const char *cond, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "FAIL line %d: %s: ", line, cond);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* xorshift64*: the same seed gives the same run. */
static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return n ? (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32) % n : 0;
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	CHECK(p, "out of memory");
	return p;
}

/* A page of content `c` from a small alphabet (0 = zero page), so that gangs have duplicates. */
static void fill_page(uint8_t *page, uint32_t c)
{
	memset(page, 0, PAGE);
	for (uint32_t i = 0; c && i < PAGE; i += 64)
		page[i] = (uint8_t)(c * 31 + i / 64);
}

static char *shm_path(const char *label)
{
	static int counter;
	char *path = xmalloc(128);

	snprintf(path, 128, "/dev/shm/gangway-ffi-check-%d-%d-%s", (int)getpid(), counter++, label);
	return path;
}

/* Creates a RAM file of `pages` pages, each content[i] (0: left a hole, or punched). */
static gw_ram *make_ram(const char *path, uint32_t pages, const uint32_t *content)
{
	uint8_t *buf = xmalloc((size_t)pages * PAGE);
	uint32_t *numbers = xmalloc(pages * sizeof(*numbers));
	uint32_t n = 0;
	gw_ram *ram;

	CHECK(gw_ram_open(path, GW_OPEN_WRITE | GW_OPEN_CREATE, &ram) == 0, "open %s", path);
	CHECK(gw_ram_resize(ram, 0) == 0 && gw_ram_resize(ram, (uint64_t)pages * PAGE) == 0, "resize");
	for (uint32_t p = 0; p < pages; p++) {
		if (!content[p])
			continue;
		fill_page(buf + (size_t)n * PAGE, content[p]);
		numbers[n++] = p;
	}
	CHECK(gw_ram_write(ram, numbers, n, buf) == 0, "write");
	free(buf);
	free(numbers);
	return ram;
}

static void check_ram_files(void)
{
	uint32_t pages = 64 + rnd(64), *content = xmalloc(pages * sizeof(*content));
	uint8_t *buf = xmalloc((size_t)pages * PAGE), *has = xmalloc(pages), *want = xmalloc(PAGE);
	char *path = shm_path("ram");
	uint32_t first, count;
	gw_ram *ram;

	for (uint32_t p = 0; p < pages; p++)
		content[p] = rnd(3) ? 0 : 1 + rnd(5);
	ram = make_ram(path, pages, content);
	first = rnd(pages);
	count = rnd(pages - first + 1);
	CHECK(gw_ram_punch(ram, first, count) == 0, "punch %u+%u of %u", first, count, pages);
	CHECK(gw_ram_punch(ram, pages, 0) == 0, "punch nothing");
	for (uint32_t p = first; p < first + count; p++)
		content[p] = 0;
	CHECK(gw_ram_read(ram, 0, pages, buf, has) >= 0, "read");
	for (uint32_t p = 0; p < pages; p++) {
		fill_page(want, content[p]);
		CHECK(memcmp(buf + (size_t)p * PAGE, want, PAGE) == 0, "page %u reads back wrong", p);
	}
	CHECK(gw_ram_read(ram, pages, 1, buf, has) == -ERANGE, "a read past the end");
	CHECK(gw_ram_read(ram, 0, GW_MAX_CALL_PAGES + 1u, buf, has) == -EINVAL, "a count beyond an int");
	gw_ram_close(ram);
	unlink(path);
	free(path), free(content), free(buf), free(has), free(want);
}

/*
 * Scans a random gang in random chunks, some guests premapped after their
 * scans (confirms against them then compare in their mappings); pages given
 * one id must have held the same bytes when they were scanned. With narrowed hashes a changed
 * page can pass for unchanged (by design: only lookups compare bytes), so
 * those gangs get one round.
 */
static void check_index(void)
{
	enum { GUESTS = 3 };
	uint32_t pages[GUESTS], *content[GUESTS], *seen[GUESTS], bits = rnd(2) ? 64 : 1 + rnd(8);
	int rounds = bits == 64 ? 3 : 1;
	gw_ram *ram[GUESTS];
	char *path[GUESTS];
	uint64_t stats[GW_STAT_COUNT] = {0};
	gw_index *ix;

	CHECK(gw_index_new(rnd(1000), bits, &ix) == 0, "index");
	gw_index_set_threads(ix, 1 + rnd(3));
	for (int g = 0; g < GUESTS; g++) {
		pages[g] = 1 + rnd(300);
		content[g] = xmalloc(pages[g] * sizeof(uint32_t));
		seen[g] = xmalloc(pages[g] * sizeof(uint32_t));
		for (uint32_t p = 0; p < pages[g]; p++)
			content[g][p] = rnd(4) ? 1 + rnd(12) : 0;
		path[g] = shm_path("guest");
		ram[g] = make_ram(path[g], pages[g], content[g]);
		CHECK(gw_index_add_guest(ix, ram[g]) == g, "add guest %d", g);
	}
	for (int round = 0; round < rounds; round++) {
		for (int g = 0; g < GUESTS; g++) {
			uint32_t n = pages[g];
			uint8_t *buf = xmalloc((size_t)n * PAGE), *kinds = xmalloc(n), *mask = xmalloc(n);
			uint32_t *ids = xmalloc(n * sizeof(*ids));
			const uint32_t *held = gw_index_page_contents(ix, (uint32_t)g);

			for (uint32_t p = 0; p < n; p++)
				mask[p] = (uint8_t)(rnd(4) != 0);
			for (uint32_t first = 0; first < n;) {
				uint32_t count = 1 + rnd(n - first);
				/* Every way of reading pages: copied, changed ones copied, or none (hashed in place). */
				const uint32_t ways[] = {0, GW_SCAN_CHANGED_BYTES, GW_SCAN_NO_BYTES};
				uint32_t flags = ways[rnd(3)];
				int examined = gw_index_scan(ix, (uint32_t)g, first, count, rnd(2) ? mask + first : NULL,
							     flags, buf, kinds + first, ids + first, stats);
				CHECK(examined >= 0 && (uint32_t)examined <= count, "scan: %d", examined);
				first += count;
			}
			/* Filled as a live round fills it: later confirms compare pages where they lie in it. */
			if (rnd(2))
				CHECK(gw_ram_premap(ram[g], 0, n) == 0, "premap guest %d", g);
			for (uint32_t p = 0; p < n; p++)
				if (kinds[p] != GW_KIND_SKIPPED)
					seen[g][p] = content[g][p];
			for (uint32_t p = 0; p < n; p++) {
				uint32_t id = held[p];

				if (id == GW_CONTENT_NONE)
					continue;
				CHECK((id == GW_CONTENT_ZERO) == (seen[g][p] == 0), "zero page %u of %d", p, g);
				for (int h = 0; h < GUESTS && id < GW_CONTENT_ZERO; h++) {
					const uint32_t *other = gw_index_page_contents(ix, (uint32_t)h);
					for (uint32_t q = 0; q < pages[h]; q++)
						CHECK(other[q] != id || seen[h][q] == seen[g][p],
						      "pages of different bytes share content %u", id);
				}
			}
			free(buf), free(kinds), free(mask), free(ids);
		}
		/* Change some pages between rounds, as a running guest would. */
		for (int g = 0; g < GUESTS; g++) {
			gw_ram *w;
			CHECK(gw_ram_open(path[g], GW_OPEN_WRITE, &w) == 0, "reopen");
			for (uint32_t k = 0; k < 8; k++) {
				uint32_t p = rnd(pages[g]);
				uint8_t page[PAGE];
				content[g][p] = rnd(3) ? 1 + rnd(12) : 0;
				fill_page(page, content[g][p]);
				CHECK(gw_ram_write(w, &p, 1, page) == 0, "change page");
			}
			gw_ram_close(w);
		}
	}
	gw_index_free(ix);
	for (int g = 0; g < GUESTS; g++) {
		gw_ram_close(ram[g]);
		unlink(path[g]);
		free(path[g]), free(content[g]), free(seen[g]);
	}
}

/*
 * A short last page is written up to the end of the file, which never
 * grows; bytes past the end that are not zeros would be lost, so a write
 * or a copy that carries them is refused.
 */
static void check_short_last_page(void)
{
	uint32_t content[] = {1, 0}, page = 1, src_page = 0, bad = 99;
	char *path = shm_path("short");
	gw_ram *ram = make_ram(path, 2, content), *srcs[] = {ram};
	uint8_t full[PAGE], tail[PAGE], buf[2 * PAGE], has[2];
	uint64_t hash;
	struct stat st;

	CHECK(gw_ram_resize(ram, PAGE + 100) == 0, "resize");
	fill_page(full, 1);
	memcpy(tail, full, 100);
	memset(tail + 100, 0, PAGE - 100);
	CHECK(gw_ram_write(ram, &page, 1, full) == -EFBIG, "nonzero bytes past the end written");
	CHECK(gw_ram_write(ram, &page, 1, tail) == 0, "zeros past the end");
	CHECK(gw_ram_read(ram, 1, 1, buf, has) >= 0 && memcmp(buf, tail, PAGE) == 0, "short page read back");
	hash = XXH3_64bits_withSeed(full, PAGE, 5);
	CHECK(gw_ram_copy(srcs, &src_page, ram, &page, 1, 5, &hash, &bad) == -EFBIG, "nonzero bytes copied past the end");
	CHECK(stat(path, &st) == 0 && st.st_size == PAGE + 100, "the file grew to %lld", (long long)st.st_size);
	gw_ram_close(ram);
	unlink(path);
	free(path);
}

/* gw_ram_copy copies checked pages and refuses a wrong hash and a shrunk source. */
static void check_copy(void)
{
	uint32_t a_content[] = {1, 2, 3, 4}, t_content[] = {0, 0, 0, 0};
	uint32_t src_pages[] = {0, 1, 3}, dst_pages[] = {1, 2, 0}, bad = 99;
	char *a_path = shm_path("src"), *t_path = shm_path("dst");
	gw_ram *a = make_ram(a_path, 4, a_content), *t = make_ram(t_path, 4, t_content);
	gw_ram *srcs[] = {a, a, a};
	uint8_t *buf = xmalloc(4 * PAGE), has[4], want[PAGE];
	uint64_t hashes[3];

	for (int i = 0; i < 3; i++) {
		fill_page(want, a_content[src_pages[i]]);
		hashes[i] = XXH3_64bits_withSeed(want, PAGE, 5);
	}
	CHECK(gw_ram_copy(srcs, src_pages, t, dst_pages, 3, 5, hashes, &bad) == 0, "copy");
	CHECK(gw_ram_read(t, 0, 4, buf, has) >= 0, "read back");
	for (int i = 0; i < 3; i++) {
		fill_page(want, a_content[src_pages[i]]);
		CHECK(memcmp(buf + (size_t)dst_pages[i] * PAGE, want, PAGE) == 0, "copy %d", i);
	}
	hashes[1] ^= 1;
	CHECK(gw_ram_copy(srcs, src_pages, t, dst_pages, 3, 5, hashes, &bad) == -EBADMSG && bad == 1, "bad hash");
	hashes[1] ^= 1;
	/* The SIGBUS of issue 11: a source that shrank is an error code. */
	CHECK(truncate(a_path, PAGE) == 0, "truncate");
	CHECK(gw_ram_copy(srcs, src_pages, t, dst_pages, 3, 5, hashes, &bad) == -ESTALE, "shrunk source");
	CHECK(gw_ram_read(a, 0, 1, buf, has) == -ESTALE, "shrunk file read");
	gw_ram_close(a), gw_ram_close(t);
	unlink(a_path), unlink(t_path);
	free(a_path), free(t_path), free(buf);
}

/* Random and mutated zstd frames decompress exactly or fail; nothing is written past dst. */
static void check_compress(void)
{
	uint32_t len = 1 + rnd(64 * 1024), bound = gw_compress_bound(len);
	uint8_t *src = xmalloc(len), *packed = xmalloc(bound), *out = xmalloc(len);
	uint64_t ns = UINT64_MAX;
	int n;

	for (uint32_t i = 0; i < len; i++)
		src[i] = rnd(4) ? (uint8_t)(i / 100) : (uint8_t)rnd(256);
	n = gw_compress(src, len, packed, bound, 1, &ns);
	CHECK(n > 0 && (uint32_t)n <= bound, "compress: %d", n);
	CHECK(ns < 10000000000u, "the time it took: %llu ns", (unsigned long long)ns);
	CHECK(gw_decompress(packed, (uint32_t)n, out, len) == 0 && memcmp(out, src, len) == 0, "round trip");
	CHECK(len < 2 || gw_decompress(packed, (uint32_t)n, out, len - 1) == -EBADMSG, "a smaller output");
	for (int m = 0; m < 200; m++) {
		uint8_t *mutated = xmalloc((size_t)n);
		memcpy(mutated, packed, (size_t)n);
		for (uint32_t k = 1 + rnd(4); k--;)
			mutated[rnd((uint32_t)n)] ^= (uint8_t)(1 + rnd(255));
		int r = gw_decompress(mutated, 1 + rnd((uint32_t)n), out, len);
		CHECK(r == 0 || r == -EBADMSG, "mutated frame: %d", r);
		free(mutated);
	}
	CHECK(gw_compress(src, len, packed, 4, 1, NULL) == -EOVERFLOW, "a small output");
	CHECK(gw_compress_bound(UINT32_MAX) == 0, "a bound beyond 32 bits");
	free(src), free(packed), free(out);
}

/*
 * A scan on three threads finds what a scan on one finds, in a call long
 * enough that each thread reads several 1 MiB blocks; a file that shrank
 * is -ESTALE on either.
 */
static void check_threaded_scan(void)
{
	enum { PAGES = 1500 };
	uint32_t *content = xmalloc(PAGES * sizeof(*content));
	uint8_t *buf = xmalloc((size_t)PAGES * PAGE), *kinds[3], *mask = xmalloc(PAGES);
	uint32_t *ids = xmalloc(PAGES * sizeof(*ids));
	uint64_t stats[GW_STAT_COUNT] = {0};
	char *path = shm_path("threads");
	gw_index *ix[3];
	gw_ram *ram;

	for (uint32_t p = 0; p < PAGES; p++) {
		content[p] = rnd(3) ? 1 + rnd(40) : 0;
		mask[p] = (uint8_t)(rnd(8) != 0);
	}
	ram = make_ram(path, PAGES, content);
	gw_scan_threads_start(3);
	/* Copied on one thread; in place on three (changed pages copied); in place on three, none copied. */
	const uint32_t flags[3] = {0, GW_SCAN_CHANGED_BYTES, GW_SCAN_NO_BYTES};
	for (int t = 0; t < 3; t++) {
		kinds[t] = xmalloc(PAGES);
		CHECK(gw_index_new(7, 64, &ix[t]) == 0, "index");
		gw_index_set_threads(ix[t], t ? 3 : 1);
		CHECK(gw_index_add_guest(ix[t], ram) == 0, "add guest");
		CHECK(gw_index_scan(ix[t], 0, 0, PAGES, NULL, flags[t] & GW_SCAN_NO_BYTES, buf, kinds[t], ids, stats) >= 0,
		      "scan");
		CHECK(gw_index_scan(ix[t], 0, 0, PAGES, mask, flags[t], buf, kinds[t], ids, stats) >= 0, "rescan");
	}
	for (int t = 1; t < 3; t++) {
		CHECK(memcmp(gw_index_page_hashes(ix[0], 0), gw_index_page_hashes(ix[t], 0), PAGES * sizeof(uint64_t)) == 0,
		      "hashes of one thread and of three differ, flags %u", flags[t]);
		CHECK(memcmp(kinds[0], kinds[t], PAGES) == 0, "kinds of one thread and of three differ, flags %u", flags[t]);
	}
	CHECK(truncate(path, (PAGES - 1) * (off_t)PAGE) == 0, "truncate");
	for (int t = 0; t < 3; t++) {
		CHECK(gw_index_scan(ix[t], 0, 0, PAGES - 1, NULL, GW_SCAN_CHANGED_BYTES, buf, kinds[t], ids, stats) ==
			      -ESTALE,
		      "shrunk, %d", t);
		gw_index_free(ix[t]);
		free(kinds[t]);
	}
	gw_ram_close(ram);
	unlink(path);
	free(path), free(content), free(buf), free(mask), free(ids);
}

static const uint8_t *guarded_page;
static volatile uint8_t guarded_byte;

static void read_guarded_page(void *arg)
{
	(void)arg;
	guarded_byte = guarded_page[0];
}

static gw_ram *guarded_ram;

/* A guarded read on a thread of its own: its answer. */
static void *read_guarded_on_thread(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)gw__ram_guarded(guarded_ram, read_guarded_page, NULL);
}

/*
 * A read through a mapping past the end of a file that shrank: -ESTALE, not the end of the process,
 * on one thread or on two at once (a fault on one leaves the mapping to the other).
 */
static void check_guarded_read(void)
{
	uint32_t content[4] = {1, 2, 3, 4};
	char *path = shm_path("guarded");
	gw_ram *ram = make_ram(path, 4, content);
	const uint8_t *map = gw__ram_map(ram);

	CHECK(map != NULL, "map");
	guarded_page = map + 3 * (size_t)PAGE;
	CHECK(gw__ram_guarded(ram, read_guarded_page, NULL) == 0 && guarded_byte != 0, "read in place");
	CHECK(truncate(path, 2 * (off_t)PAGE) == 0, "truncate");
	CHECK(gw__ram_guarded(ram, read_guarded_page, NULL) == -ESTALE && guarded_byte == 0, "read past the new end");
	guarded_ram = ram;
	for (int run = 0; run < 20; run++) {
		pthread_t threads[2];
		void *answer[2];

		guarded_page = gw__ram_map(ram) + 3 * (size_t)PAGE; /* mapped anew after each fault */
		for (int t = 0; t < 2; t++)
			CHECK(pthread_create(&threads[t], NULL, read_guarded_on_thread, NULL) == 0, "thread");
		for (int t = 0; t < 2; t++) {
			CHECK(pthread_join(threads[t], &answer[t]) == 0, "join");
			CHECK((intptr_t)answer[t] == -ESTALE, "two threads past the new end: %d", (int)(intptr_t)answer[t]);
		}
	}
	map = gw__ram_map(ram); /* the faulted mapping was dropped */
	CHECK(map != NULL, "map again");
	guarded_page = map + PAGE;
	CHECK(gw__ram_guarded(ram, read_guarded_page, NULL) == 0 && guarded_byte != 0,
	      "read before the new end, after a fault");
	gw_ram_close(ram);
	unlink(path);
	free(path);
}

/* Two threads compress and decompress at once: each must get its own bytes back. */
static void *compress_loop(void *arg)
{
	uint32_t seed = (uint32_t)(uintptr_t)arg, len = 256 * 1024, bound = gw_compress_bound(len);
	uint8_t *src = xmalloc(len), *packed = xmalloc(bound), *out = xmalloc(len);
	uintptr_t failures = 0;

	for (int iteration = 0; iteration < 120; iteration++) {
		for (uint32_t i = 0; i < len; i++)
			src[i] = (uint8_t)((i / (seed + 3)) ^ (uint32_t)iteration);
		int n = gw_compress(src, len, packed, bound, 1 + iteration % 3, NULL);
		if (n <= 0 || gw_decompress(packed, (uint32_t)n, out, len) != 0 || memcmp(src, out, len) != 0)
			failures++;
	}
	free(src), free(packed), free(out);
	return (void *)failures;
}

static void check_compress_threads(void)
{
	pthread_t threads[2];
	void *failures;

	for (uintptr_t t = 0; t < 2; t++)
		CHECK(pthread_create(&threads[t], NULL, compress_loop, (void *)t) == 0, "thread");
	for (int t = 0; t < 2; t++) {
		CHECK(pthread_join(threads[t], &failures) == 0, "join");
		CHECK(failures == NULL, "thread %d: %lu round trips failed", t, (unsigned long)(uintptr_t)failures);
	}
}

/* Files the library opened whose name ends in clear_refs (ld --wrap=open, see ffi/build.ts). */
static int clear_refs_opened;
int __real_open(const char *path, int flags, ...);
int __wrap_open(const char *path, int flags, ...)
{
	va_list ap;
	int mode = 0;

	va_start(ap, flags);
	if (flags & (O_CREAT | O_TMPFILE))
		mode = va_arg(ap, int);
	va_end(ap);
	if (strstr(path, "clear_refs"))
		clear_refs_opened++;
	return __real_open(path, flags, mode);
}

/*
 * madvise as the library calls it (ld --wrap=madvise, see ffi/build.ts): MADV_POPULATE_READ
 * answered EINVAL without filling anything, as a kernel before 5.14 does, or run after the file
 * is shrunk, as if it shrank between premap's mincore and its reads. Other advice goes through.
 */
static enum { MADVISE_AS_IS, MADVISE_NO_POPULATE, MADVISE_SHRINK_FIRST } madvise_mode;
static const char *madvise_shrink_path;
static off_t madvise_shrink_to;
static int populate_calls;
int __real_madvise(void *addr, size_t len, int advice);
int __wrap_madvise(void *addr, size_t len, int advice)
{
	if (advice == MADV_POPULATE_READ) {
		populate_calls++;
		if (madvise_mode == MADVISE_NO_POPULATE) {
			errno = EINVAL;
			return -1;
		}
		if (madvise_mode == MADVISE_SHRINK_FIRST) {
			madvise_mode = MADVISE_AS_IS;
			CHECK(truncate(madvise_shrink_path, madvise_shrink_to) == 0, "truncate in madvise");
		}
	}
	return __real_madvise(addr, len, advice);
}

static void check_pagemap(void)
{
	uint8_t *region = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t flags[4], scanned[4];
	int supported;

	CHECK(region != MAP_FAILED, "mmap");
	memset(region, 1, 4 * PAGE);
	/* Where the kernel has soft-dirty bits, page 2 is dirty now; the probe must not clear it. */
	CHECK(gw_soft_dirty_clear(0) == 0, "clear");
	region[2 * PAGE] = 2;
	clear_refs_opened = 0;
	supported = gw_soft_dirty_supported();
	CHECK(supported == 0 || supported == 1, "probe: %d", supported);
	CHECK(clear_refs_opened == 0, "the probe opened clear_refs of this process");
	CHECK(gw_pagemap_read(0, (uintptr_t)region, 4, flags, GW_PM_PRESENT) == 0, "pagemap");
	for (int p = 0; p < 4; p++)
		CHECK(flags[p] == GW_PM_PRESENT, "page %d not present", p);
	if (gw_pagemap_scan_supported() == 1) {
		CHECK(gw_pagemap_scan(0, (uintptr_t)region, 4, scanned, GW_PM_PRESENT) == 0, "scan");
		CHECK(memcmp(flags, scanned, 4) == 0, "ioctl and pagemap disagree");
	}
	if (supported) {
		CHECK(gw_pagemap_read(0, (uintptr_t)region, 4, flags, GW_PM_SOFT_DIRTY) == 0, "soft-dirty");
		CHECK(!flags[0] && flags[2] == GW_PM_SOFT_DIRTY, "the probe changed this process's bits");
	} else {
		CHECK(gw_pagemap_read(0, (uintptr_t)region, 4, flags, GW_PM_SOFT_DIRTY) == -EOPNOTSUPP, "unsupported");
	}
	munmap(region, 4 * PAGE);
}

/* Whether each of count pages of ram's mapping is in this process's page table. */
static void mapped_pages(gw_ram *ram, uint32_t count, uint8_t *flags)
{
	const uint8_t *map = gw__ram_map(ram);

	CHECK(map != NULL, "map");
	CHECK(gw_pagemap_read(0, (uintptr_t)map, count, flags, GW_PM_PRESENT) == 0, "pagemap");
}

/*
 * gw_ram_premap maps every page in memory and no hole, even where the kernel's fill does nothing
 * (its reads do it); a file that shrinks under its reads is -ESTALE at the next read, never the
 * process's SIGBUS; an empty file and a short last page are no trouble.
 */
static void check_premap(void)
{
	enum { PAGES = 2 * 1024 + 3 }; /* more than one of premap's mincore blocks */
	uint32_t *content = xmalloc(PAGES * sizeof(*content));
	uint8_t *flags = xmalloc(PAGES), buf[PAGE], has[1];
	char *path = shm_path("premap");
	struct stat before, after;
	gw_ram *ram;

	/* A kernel without MADV_POPULATE_READ: the reads alone map the pages. */
	for (uint32_t p = 0; p < PAGES; p++)
		content[p] = (p / 64) % 2 ? 0 : 1 + p % 12; /* runs of data and holes */
	ram = make_ram(path, PAGES, content);
	CHECK(stat(path, &before) == 0, "stat");
	madvise_mode = MADVISE_NO_POPULATE;
	populate_calls = 0;
	CHECK(gw_ram_premap(ram, 0, PAGES) == 0, "premap without MADV_POPULATE_READ");
	madvise_mode = MADVISE_AS_IS;
	CHECK(populate_calls > 0, "premap never asked for MADV_POPULATE_READ");
	mapped_pages(ram, PAGES, flags);
	for (uint32_t p = 0; p < PAGES; p++)
		CHECK(!!flags[p] == !!content[p], "page %u (%s) %s mapped", p, content[p] ? "data" : "a hole",
		      flags[p] ? "is" : "is not");
	CHECK(stat(path, &after) == 0 && after.st_blocks == before.st_blocks, "premap allocated holes");
	gw_ram_close(ram);
	unlink(path);

	/* A range: its pages are mapped, and none far from it (the kernel maps a fault's neighbours). */
	for (uint32_t p = 0; p < PAGES; p++)
		content[p] = 1 + p % 12;
	ram = make_ram(path, PAGES, content);
	CHECK(gw_ram_premap(ram, 1000, 900) == 0, "premap of a range");
	CHECK(gw_ram_premap(ram, PAGES - 1, 2) == -ERANGE, "premap past the end");
	mapped_pages(ram, PAGES, flags);
	for (uint32_t p = 0; p < PAGES; p++)
		if (p >= 1000 && p < 1900)
			CHECK(flags[p], "page %u of the range is not mapped", p);
		else if (p + 64 < 1000 || p >= 1900 + 64)
			CHECK(!flags[p], "page %u, far from the range, is mapped", p);
	gw_ram_close(ram);
	unlink(path);

	/* Shrunk after mincore found its pages in memory, before the reads: survived, and said. */
	for (uint32_t p = 0; p < 64; p++)
		content[p] = 1 + p % 12;
	ram = make_ram(path, 64, content);
	madvise_mode = MADVISE_SHRINK_FIRST;
	madvise_shrink_path = path;
	madvise_shrink_to = 16 * (off_t)PAGE;
	CHECK(gw_ram_premap(ram, 0, 64) == 0, "premap of a file that shrank under it");
	CHECK(madvise_mode == MADVISE_AS_IS, "the file was not shrunk under premap");
	CHECK(atomic_load(&ram->map_faulted), "no read past the new end faulted");
	CHECK(gw_ram_read(ram, 0, 1, buf, has) == -ESTALE, "the next read does not say the file shrank");
	CHECK(stat(path, &after) == 0 && after.st_size == 16 * PAGE && after.st_blocks <= 16 * (PAGE / 512),
	      "premap grew the shrunk file: %lld bytes, %lld blocks", (long long)after.st_size,
	      (long long)after.st_blocks);
	gw_ram_close(ram);
	unlink(path);

	/* Empty, then a short last page, with and without the kernel's fill. */
	ram = make_ram(path, 0, content);
	CHECK(gw_ram_premap(ram, 0, 0) == 0, "premap of an empty file");
	CHECK(gw_ram_premap(ram, 0, 1) == -ERANGE, "premap past the end of an empty file");
	gw_ram_close(ram);
	for (int fill = 0; fill < 2; fill++) {
		for (uint32_t p = 0; p < 4; p++)
			content[p] = 1 + p;
		ram = make_ram(path, 4, content);
		CHECK(gw_ram_resize(ram, 3 * PAGE + 100) == 0, "resize");
		madvise_mode = fill ? MADVISE_AS_IS : MADVISE_NO_POPULATE;
		CHECK(gw_ram_premap(ram, 0, 4) == 0, "premap of a short last page");
		madvise_mode = MADVISE_AS_IS;
		mapped_pages(ram, 4, flags);
		for (uint32_t p = 0; p < 4; p++)
			CHECK(flags[p], "page %u of a file of 3 pages and 100 bytes is not mapped", p);
		gw_ram_close(ram);
	}
	unlink(path);
	free(path), free(content), free(flags);
}

/*
 * gw_ram_delta reads its base where a premap filled the mapping as it does with pread: the same
 * differences and refusals (a page that changed, a hole, a short last page), and a file that
 * shrank after its premap is no base and no SIGBUS.
 */
static void check_delta_bases(void)
{
	enum { PAGES = 40 };
	uint32_t content[PAGES];
	uint8_t page[PAGE], target[2][PAGE], *first_pass = xmalloc((size_t)PAGES * PAGE);
	uint64_t hash, seed = 77;
	char *path = shm_path("delta-bases");
	gw_ram *ram;

	for (uint32_t p = 0; p < PAGES; p++)
		content[p] = p % 5 == 4 ? 0 : 1 + p % 7;
	ram = make_ram(path, PAGES, content);
	for (int premapped = 0; premapped < 2; premapped++) {
		if (premapped)
			CHECK(gw_ram_premap(ram, 0, PAGES) == 0, "premap");
		for (uint32_t p = 0; p < PAGES; p++) {
			uint32_t got;

			fill_page(page, content[p] ? content[p] : 1);
			gw_hash_pages(page, 1, seed, &hash, NULL);
			fill_page(target[premapped], 1 + (p + 1) % 7); /* another content: some words differ */
			got = gw_ram_delta(ram, p, seed, hash + (p % 3 == 0), target[premapped], PAGE / 8);
			if (!premapped)
				memcpy(first_pass + (size_t)p * PAGE, target[0], PAGE);
			if (!content[p] || p % 3 == 0)
				CHECK(got == GW_NOT_A_BASE, "page %u (%s) taken as a base", p,
				      content[p] ? "changed" : "a hole");
			else
				CHECK(got != GW_NOT_A_BASE, "page %u refused as a base (premapped: %d)", p, premapped);
			if (premapped)
				CHECK(memcmp(first_pass + (size_t)p * PAGE, target[1], PAGE) == 0,
				      "page %u: the difference depends on the premap", p);
		}
	}
	/* Shrunk under its mapping: the page past the end is no base, and the process lives. */
	fill_page(page, content[PAGES - 2]);
	gw_hash_pages(page, 1, seed, &hash, NULL);
	CHECK(truncate(path, 8 * (off_t)PAGE) == 0, "truncate");
	CHECK(gw_ram_delta(ram, PAGES - 2, seed, hash, target[0], PAGE / 8) == GW_NOT_A_BASE,
	      "a page past the new end taken as a base");
	gw_ram_close(ram);
	/* A short last page is never a base, premapped or not. */
	ram = make_ram(path, 4, content);
	CHECK(gw_ram_resize(ram, 3 * PAGE + 100) == 0, "resize");
	CHECK(gw_ram_premap(ram, 0, 4) == 0, "premap of a short last page");
	fill_page(page, content[3]);
	gw_hash_pages(page, 1, seed, &hash, NULL);
	CHECK(gw_ram_delta(ram, 3, seed, hash, target[0], PAGE / 8) == GW_NOT_A_BASE, "a short last page as a base");
	gw_ram_close(ram);
	unlink(path);
	free(path), free(first_pass);
}

/* Huge-page advice changes nothing a caller sees, whatever the buffer's size and alignment. */
static void check_memory_advice(void)
{
	size_t len = (5u << 20) + 123;
	uint8_t *buf = xmalloc(len);
	int err;

	/* EINVAL: a kernel without transparent huge pages; the library ignores the answer. */
	err = gw_memory_advise_huge(buf, len);
	CHECK(err == 0 || err == -EINVAL, "advice on %zu bytes: %d", len, err);
	CHECK(gw_memory_advise_huge(buf + 1, 100) == 0, "advice on less than a huge page");
	memset(buf, 0x5a, len);
	for (size_t i = 0; i < len; i += 4093)
		CHECK(buf[i] == 0x5a, "byte %zu after the advice", i);
	free(buf);
}

/* A digest over pages given by content is the digest of the hashes looked up, batch edges included. */
static void check_contents_digest(void)
{
	enum { PAGES = 1300, CONTENTS = 5, ZERO_ID = 0xfffffffe };
	uint32_t *ids = xmalloc(PAGES * sizeof(uint32_t));
	uint64_t *looked_up = xmalloc(PAGES * sizeof(uint64_t));
	uint64_t table[CONTENTS], zero_hash = 0x5a5a5a5a12345678ull;
	const uint32_t counts[] = { 0, 1, 512, 513, PAGES };
	uint8_t want[16], got[16];

	for (uint32_t c = 0; c < CONTENTS; c++)
		table[c] = (uint64_t)rnd(UINT32_MAX) << 32 | rnd(UINT32_MAX);
	for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
		uint32_t counted = counts[k];

		for (uint32_t i = 0; i < counted; i++) {
			ids[i] = rnd(7) == 0 ? ZERO_ID : rnd(CONTENTS);
			looked_up[i] = ids[i] == ZERO_ID ? zero_hash : table[ids[i]];
		}
		gw_digest(looked_up, counted, 9, want);
		CHECK(gw_contents_digest(ids, counted, table, CONTENTS, ZERO_ID, zero_hash, 9, got) == 0 &&
			      memcmp(want, got, 16) == 0,
		      "digest of %u pages by content", counted);
	}
	ids[PAGES - 1] = CONTENTS;
	memcpy(got, want, 16);
	CHECK(gw_contents_digest(ids, PAGES, table, CONTENTS, ZERO_ID, zero_hash, 9, got) == -1 &&
		      memcmp(got, want, 16) == 0,
	      "a content id past the table: refused, nothing written");
	free(ids), free(looked_up);
}

static void check_hashes_and_dirs(void)
{
	uint8_t *pages = xmalloc(3 * PAGE), zero[3];
	uint64_t hashes[3];
	char *dir = shm_path("dir");
	int fd;

	fill_page(pages, 0), fill_page(pages + PAGE, 7), fill_page(pages + 2 * PAGE, 0);
	gw_hash_pages(pages, 3, 9, hashes, zero);
	CHECK(zero[0] && !zero[1] && zero[2] && hashes[0] == gw_zero_page_hash(9), "zero pages");
	/* A page's hash through its seed's key is XXH3-64 with that seed, whatever the seed and bytes. */
	for (int i = 0; i < FUZZ_ROUNDS; i++) {
		uint64_t seed = i == 0 ? 0 : (uint64_t)rnd(UINT32_MAX) << 32 | rnd(UINT32_MAX);
		struct gw_hash_key key;

		for (uint32_t b = 0; b < PAGE; b++)
			pages[PAGE + b] = (uint8_t)rnd(256);
		gw__hash_key(seed, &key);
		CHECK(gw__page_hash(pages + PAGE, &key) == XXH3_64bits_withSeed(pages + PAGE, PAGE, seed),
		      "page hash with seed %llu", (unsigned long long)seed);
	}
	check_contents_digest();
	CHECK(mkdir(dir, 0700) == 0, "mkdir");
	fd = gw_dir_lock(dir);
	CHECK(fd >= 0 && gw_dir_lock(dir) == -EWOULDBLOCK, "lock");
	CHECK(gw_dir_unlock(fd) == 0 && rmdir(dir) == 0, "unlock");
	free(pages), free(dir);
}

int main(int argc, char **argv)
{
	rng_state = argc > 1 ? strtoull(argv[1], NULL, 10) : 20261201;
	if (!rng_state)
		rng_state = 1;
	CHECK(gw_abi_version() == GW_ABI_VERSION, "ABI");
	check_pagemap(); /* first: the soft-dirty probe must not have run yet */
	puts("ok pagemap");
	for (int i = 0; i < FUZZ_ROUNDS; i++)
		check_ram_files();
	puts("ok ram files");
	for (int i = 0; i < FUZZ_ROUNDS; i++)
		check_index();
	puts("ok index");
	check_copy();
	puts("ok copy");
	check_short_last_page();
	puts("ok short last page");
	check_threaded_scan();
	puts("ok threaded scan");
	check_guarded_read();
	puts("ok guarded read");
	check_premap();
	puts("ok premap");
	check_delta_bases();
	puts("ok delta bases");
	for (int i = 0; i < FUZZ_ROUNDS; i++)
		check_compress();
	puts("ok compress");
	check_compress_threads();
	puts("ok compress threads");
	check_memory_advice();
	puts("ok memory advice");
	check_hashes_and_dirs();
	puts("ok hashes and dirs");
	return 0;
}
