/*
 * gangway: bulk page work for live gang migration, called from Deno FFI.
 *
 * Every call works on a batch of pages: an FFI crossing costs about 22 ns
 * and a system call about 1.1 us on these machines, so the TypeScript side
 * hands over hundreds or thousands of pages at a time and decides what to
 * do with the results.
 *
 * Conventions: functions return 0 (or a count) on success and -errno on
 * failure; page numbers and counts are uint32_t (a 16 TiB guest at most),
 * because Deno passes a JS number to a u32 parameter on its fast path.
 *
 * Every call that reads a RAM file first checks (one fstat per file per
 * call) that the file is not shorter than its size at open: a shrunk file
 * answers -ESTALE instead of reading its lost pages as zeros. Files are
 * read with pread, never through a mapping.
 */
#ifndef GANGWAY_H
#define GANGWAY_H

#include <stdint.h>

#define GW_PAGE_SHIFT 12
#define GW_PAGE_SIZE (1u << GW_PAGE_SHIFT)
/* Most pages one read or scan call takes: its count of pages comes back as an int (-EINVAL beyond). */
#define GW_MAX_CALL_PAGES 0x7fffffffu

/* Bumped whenever a signature or a constant below changes. */
#define GW_ABI_VERSION 35

uint32_t gw_abi_version(void);

/* ------------------------------------------------------------------------
 * Guest RAM files: a guest's memory as a file (memory-backend-file).
 * Holes are zero pages and are never read through a mapping, so scanning
 * a source guest does not allocate memory it never touched.
 * ---------------------------------------------------------------------- */

typedef struct gw_ram gw_ram;

enum gw_open_flags {
	GW_OPEN_WRITE = 1 << 0,  /* open read-write (a migration target) */
	GW_OPEN_CREATE = 1 << 1, /* create the file if it is missing */
	GW_OPEN_NEW = 1 << 2,    /* create the file; -EEXIST if anything is at the path, even a dangling link */
	GW_OPEN_NOFOLLOW = 1 << 3, /* -ELOOP when the path names a symbolic link */
};

/* Opens a RAM file; *out receives the handle. */
int gw_ram_open(const char *path, uint32_t flags, gw_ram **out);
void gw_ram_close(gw_ram *ram);
/* Size in bytes as seen at open (or after gw_ram_resize). */
uint64_t gw_ram_size(const gw_ram *ram);
/* Sets the size of a writable file; new space reads as zero (a hole). */
int gw_ram_resize(gw_ram *ram, uint64_t size);

/*
 * Reads pages [first, first + count) into buf (count * GW_PAGE_SIZE bytes).
 * has_data[i] is set to 1 for a page that was read and 0 for a page that
 * lies in a hole; a hole page is zero-filled in buf. A short last page is
 * padded with zeros. Returns the number of pages read from data regions
 * (count is at most GW_MAX_CALL_PAGES, so that it fits the int).
 */
int gw_ram_read(gw_ram *ram, uint32_t first, uint32_t count, uint8_t *buf, uint8_t *has_data);

/*
 * Writes count pages from buf to the page numbers in pages[] (ascending
 * runs are merged into one pwritev each). A short last page is written up
 * to the end of the file, which never grows; the bytes past it must be
 * zeros (-EFBIG if not: they would be lost). Returns 0 or -errno (-ENOSPC
 * on a full disk: nothing is ever written through a mapping, so a full
 * disk is an error code and not a SIGBUS).
 */
int gw_ram_write(gw_ram *ram, const uint32_t *pages, uint32_t count, const uint8_t *buf);

/* Makes pages [first, first + count) zero by punching a hole (stays sparse). */
int gw_ram_punch(gw_ram *ram, uint32_t first, uint32_t count);

/*
 * Copies count pages within a target: page i from (src[i], src_pages[i]) to
 * (dst, dst_pages[i]), read with pread (every source page holds data; a
 * mapping's page faults cost more than the copy on these VMs) and checked
 * against expected[i] (XXH3-64 with seed) before it is written. Runs
 * consecutive on both sides go in one pread and one pwrite. Pages are
 * handled in order: a page written here may be a later page's source only
 * in a later call. A short last page of dst is written as gw_ram_write
 * writes it (-EFBIG if the bytes past the end are not zeros). Returns 0,
 * -errno, or -EBADMSG with *bad = the index of a page whose hash differs.
 */
int gw_ram_copy(gw_ram *const *src, const uint32_t *src_pages, gw_ram *dst, const uint32_t *dst_pages,
		uint32_t count, uint64_t seed, const uint64_t *expected, uint32_t *bad);

enum gw_advice {
	GW_ADVICE_SEQUENTIAL = 1, /* about to read the whole file in order */
	GW_ADVICE_DONTNEED = 2,   /* drop cached pages of a disk-backed file */
};
int gw_ram_advise(gw_ram *ram, uint32_t advice);

/*
 * Maps the file for the scans that read pages where they lie (gw_index_scan)
 * and has the kernel fill the mapping's page tables now for pages [first,
 * first + count) that are in memory (never holes: that would allocate
 * them), then reads a byte of each (under a hypervisor that shadows page
 * tables the first read of a page traps even so), so that the next such
 * scan pays no page faults: a paused guest's final round is one. It may
 * run on another thread than the file's other calls: gw_ram_close and
 * gw_ram_resize wait for it, and no scan of the file may run meanwhile
 * (it reads the mapping a premap may replace). 0 or -errno (-ERANGE: past
 * the file's pages; -ENOMEM: the file cannot be mapped, and scans then
 * read it with pread).
 */
int gw_ram_premap(gw_ram *ram, uint32_t first, uint32_t count);

/* What fstat says of the open file (gw_ram_stat's out). */
struct gw_ram_stat {
	uint64_t dev;    /* device: with ino, tells two paths of one file apart */
	uint64_t ino;    /* inode number */
	uint64_t size;   /* bytes now */
	uint64_t blocks; /* allocated 512-byte blocks: tests prove scans allocate nothing */
	uint64_t mode;   /* st_mode: the type and the permission bits */
	uint64_t own;    /* 1 if this process's effective user owns it: files others can plant are not trusted */
};
int gw_ram_stat(const gw_ram *ram, struct gw_ram_stat *out);

/*
 * Locks a directory (flock, exclusive, non-blocking) after checking that it
 * exists and is writable. Returns the lock's fd (>= 0) or -errno
 * (-EWOULDBLOCK: another process holds it; -ENOTDIR, -ENOENT, -EACCES).
 */
int gw_dir_lock(const char *path);
int gw_dir_unlock(int fd);
/* Makes path and any missing directory above it (mode, before the umask); 0 or -errno. */
int gw_dir_make(const char *path, uint32_t mode);
/*
 * What path is: its real path (realpath, into real, at most cap bytes with
 * the NUL), and stat's owner and mode of it (info[0] = uid, info[1] =
 * st_mode). Returns the real path's length or -errno.
 */
int gw_dir_info(const char *path, uint8_t *real, uint32_t cap, uint32_t *info);

/*
 * Sets TCP_NODELAY on this process's listening TCP sockets bound to port
 * (sockets accepted from them take it). Returns how many, or -errno.
 */
int gw_listener_nodelay(uint16_t port);

/*
 * The descriptor of this process's connected TCP socket whose ends have
 * these ports; -ENOENT if none, -EEXIST if several.
 */
int gw_socket_find(uint16_t local_port, uint16_t peer_port);
/*
 * What the kernel measured of that socket, if it still has those ports
 * (else -ESTALE): out[0] its delivery rate in bytes per second, out[1] 1 if
 * that sample was application-limited, out[2] the bytes written to it that
 * the peer has not acknowledged yet.
 */
int gw_socket_measure(int32_t fd, uint16_t local_port, uint16_t peer_port, uint64_t *out);
/*
 * Gives that socket, if it still has those ports (else -ESTALE), a send
 * buffer of `bytes` (doubled by the kernel), unless it holds that much
 * already; past net.core.wmem_max only with CAP_NET_ADMIN, and without it
 * the kernel's own sizing stays. Returns the buffer's size afterwards.
 */
int gw_socket_send_buffer(int32_t fd, uint16_t local_port, uint16_t peer_port, int32_t bytes);

/*
 * Sets the nice value and, for threads of the fair class, the time slice
 * in microseconds (0: the kernel's default; from 100 on Linux 6.12, and
 * ignored before) of every thread of process `pid` (0: this one; see
 * priority.c), again until a pass finds no thread it has not set; returns
 * how many were set, or -errno (-EACCES or -EPERM: raising needs
 * CAP_SYS_NICE; -ENOENT: no such process) after trying them all.
 */
int gw_set_thread_priorities(int32_t pid, int32_t nice, uint32_t slice_us);

/*
 * Asks for 2 MiB pages behind the whole 2 MiB pages inside [buf, buf + len)
 * (see memory.c), before the memory is first touched; 0 or -errno. Only
 * advice: the memory reads and writes the same either way.
 */
int gw_memory_advise_huge(void *buf, uint64_t len);

/* This host's physical memory in bytes (sysinfo), or 0 if it cannot tell. */
uint64_t gw_total_memory(void);

/* ------------------------------------------------------------------------
 * Hashing. Pages are hashed with XXH3-64, keyed by a seed.
 *
 * Why 64 bits and not 128: a hash match is only a candidate, always
 * confirmed by a byte compare, so a wider hash would buy nothing for
 * correctness while doubling the per-page hash memory and the table slots.
 * 64 bits keep accidental candidates (and missed changes in re-scans) at
 * about 2^-64 per page. The seed is random per migration so that a guest
 * cannot precompute contents that collide with another guest's pages.
 * ---------------------------------------------------------------------- */

/* hashes[i] = XXH3-64(page i, seed); is_zero[i] = 1 for an all-zero page (may be NULL). */
void gw_hash_pages(const uint8_t *buf, uint32_t count, uint64_t seed, uint64_t *hashes, uint8_t *is_zero);
/* The hash every zero page has under seed. */
uint64_t gw_zero_page_hash(uint64_t seed);
/* Digest of a guest's RAM: XXH3-128 over its per-page hashes (16 bytes into out). */
void gw_digest(const uint64_t *hashes, uint32_t count, uint64_t seed, uint8_t *out);
/*
 * The same digest over count pages given by content: page i's hash is
 * hashes[ids[i]], or zero_hash where ids[i] is zero_id. 0; -1 (out
 * untouched) when an id is neither zero_id nor below contents; -2 when
 * out of memory.
 */
int32_t gw_contents_digest(const uint32_t *ids, uint32_t count, const uint64_t *hashes,
			   uint32_t contents, uint32_t zero_id, uint64_t zero_hash, uint64_t seed,
			   uint8_t *out);

/* ------------------------------------------------------------------------
 * Compression of page data on the wire (zstd).
 * ---------------------------------------------------------------------- */

/* Largest compressed size of len bytes; 0 when that exceeds UINT32_MAX. */
uint32_t gw_compress_bound(uint32_t len);
/*
 * Compresses src into dst (cap bytes, of which at most INT32_MAX are used)
 * at a zstd level; returns the size or -errno (-EOVERFLOW: does not fit).
 * Each thread has its own zstd contexts: callers on several threads are safe.
 * With ns, stores the nanoseconds the compression took (a caller on another
 * thread learns of the end later than it happened).
 */
int gw_compress(const uint8_t *src, uint32_t len, uint8_t *dst, uint32_t cap, int32_t level,
		uint64_t *ns);
/*
 * A compression job: gw_compress on a thread of its own (made at its first
 * start, inheriting the starter's CPU weight), while the caller goes on.
 * start queues one run (-EBUSY if one is started and not finished); the buffers must stay
 * valid until finish, which waits for the run and returns what gw_compress
 * returned (-EINVAL when nothing was started), with its nanoseconds in *ns.
 * free waits for a queued run, then ends the thread.
 */
typedef struct gw_compress_job gw_compress_job;
int gw_compress_job_new(gw_compress_job **out);
int gw_compress_job_start(gw_compress_job *job, const uint8_t *src, uint32_t len, uint8_t *dst, uint32_t cap,
			  int32_t level);
int gw_compress_job_finish(gw_compress_job *job, uint64_t *ns);
void gw_compress_job_free(gw_compress_job *job);
/* Decompresses src into dst, which must come out exactly `expected` bytes; 0 or -EBADMSG. */
int gw_decompress(const uint8_t *src, uint32_t len, uint8_t *dst, uint32_t expected);

/* ------------------------------------------------------------------------
 * Similar pages: sent as their word-wise difference from a page the target
 * holds (see similar.c).
 * ---------------------------------------------------------------------- */

/* Features of a page. */
#define GW_PAGE_FEATURES 4
/*
 * The features of each page i of buf whose kinds[i] (an enum gw_page_kind
 * of a scan) has its bit (1 << kind) in kind_mask, the kinds whose bytes
 * the scan kept: features[i * GW_PAGE_FEATURES + k] = a 32-bit hash of the
 * page's k-th sampled 64-byte block, or 0 when that block is all zero (and
 * for every other page). Pages that share a non-zero feature may be similar.
 */
void gw_chunk_features(const uint8_t *buf, const uint8_t *kinds, uint32_t count, uint32_t kind_mask,
		       uint32_t *features);
/* What gw_ram_delta answers for a page that is not the base it should be. */
#define GW_NOT_A_BASE 0xffffffffu
/*
 * Counts the 64-bit words in which target differs from page `page` of ram
 * (the base), once that page is read and found to hash to `expected` under
 * seed; when at most max_words differ, replaces target with target - base,
 * word by word (mod 2^64). Returns the count either way: one call for what
 * a sender does with each candidate. GW_NOT_A_BASE when the page is not a
 * whole page of the file, cannot be read, or holds other bytes now (a hole
 * reads as zeros, which never hash to a content sent whole).
 */
uint32_t gw_ram_delta(gw_ram *ram, uint32_t page, uint64_t seed, uint64_t expected,
		      uint8_t *target, uint32_t max_words);
/*
 * Undoes gw_ram_delta for count differences in data (data_pages pages):
 * page slots[i] of data += page src_pages[i] of src[i], word by word. The
 * bases are read with pread, a run of consecutive pages of one file at a
 * time (a receiver's bases, anywhere in its files). 0, or -errno with
 * *bad the difference it is about (-ENODATA: its base is not a whole page
 * of the file; -ERANGE: its slot is past data).
 */
int gw_ram_undelta(gw_ram *const *src, const uint32_t *src_pages, uint32_t count, uint8_t *data,
		   uint32_t data_pages, const uint32_t *slots, uint32_t *bad);

/* ------------------------------------------------------------------------
 * The gang content index: one table for all guests of a gang, mapping
 * each distinct page content to a content id (dense, from 0). A hash match
 * is confirmed by a byte compare against the page that holds that content.
 * ---------------------------------------------------------------------- */

typedef struct gw_index gw_index;

/* What a scan says about one page (the kinds[] output of gw_index_scan). */
enum gw_page_kind {
	GW_KIND_ZERO = 0,      /* every byte is zero (holes included) */
	GW_KIND_NEW = 1,       /* content seen for the first time: ids[i] is its new id */
	GW_KIND_DUPLICATE = 2, /* content already indexed: ids[i] is its id */
	GW_KIND_UNCHANGED = 3, /* same hash as at this page's previous scan */
	GW_KIND_SKIPPED = 4,   /* not examined (mask bit clear) */
};

/* Content ids reserved for pages that hold no indexed content. */
#define GW_CONTENT_NONE 0xffffffffu /* page never scanned */
#define GW_CONTENT_ZERO 0xfffffffeu /* page was zero at its last scan */

/* Running totals a scan adds to (stats[] of gw_index_scan). */
enum gw_stat {
	GW_STAT_ZERO = 0,        /* pages found zero (including unchanged zero pages) */
	GW_STAT_NEW = 1,         /* pages that brought a new content */
	GW_STAT_DUP_WITHIN = 2,  /* duplicates whose content is held in the same guest */
	GW_STAT_DUP_ACROSS = 3,  /* duplicates whose content is held by another guest */
	GW_STAT_UNCHANGED = 4,   /* non-zero pages unchanged since their last scan */
	GW_STAT_PAGES_READ = 5,  /* pages read from data regions */
	GW_STAT_PAGES_HOLE = 6,  /* pages skipped as holes, never read */
	GW_STAT_COUNT = 8,
};

/*
 * Creates an empty index. hash_bits narrows page hashes to their top
 * hash_bits bits (1..64, 64 in real use): tests use a narrow hash to force
 * collisions and prove that the byte compare keeps different pages apart.
 */
int gw_index_new(uint64_t seed, uint32_t hash_bits, gw_index **out);
void gw_index_free(gw_index *index);

/*
 * Adds a guest; the index keeps per-page state for it (hash and content id,
 * 12 bytes a page) and reads its RAM for byte compares. The ram handle must
 * outlive the index. Returns the guest number (0, 1, ...).
 */
int gw_index_add_guest(gw_index *index, gw_ram *ram);

/*
 * Scans pages [first, first + count) of a guest: reads them (holes are
 * zero pages, never read), hashes them and classifies each against the
 * gang's contents. A page whose hash equals its previous scan's is
 * GW_KIND_UNCHANGED; otherwise its content is looked up (and inserted).
 *
 * mask (NULL = every page) selects the pages to examine, one byte a page.
 * buf (count * GW_PAGE_SIZE bytes) receives the bytes of every examined page
 * that is not a hole (a snapshot whose hash is the page's new hash); bytes
 * of other pages are unspecified. With GW_SCAN_CHANGED_BYTES in flags it
 * receives only those of pages whose hash changed (GW_KIND_NEW and
 * GW_KIND_DUPLICATE): pages scanned before are then hashed where they lie,
 * through a mapping of the file, and only changed ones are copied. With
 * GW_SCAN_NO_BYTES it receives none (its bytes are scratch), for a scan
 * that only indexes: pages scanned before are hashed where they lie and
 * none is copied (a page's first read is a pread either way).
 * kinds (count bytes) and ids (count u32) may be NULL; stats (GW_STAT_COUNT
 * u64) is added to. Returns the number of pages examined, or -errno (count
 * is at most GW_MAX_CALL_PAGES, so that it fits the int; -ESTALE if the
 * file shrank).
 */
int gw_index_scan(gw_index *index, uint32_t guest, uint32_t first, uint32_t count, const uint8_t *mask,
		  uint32_t flags, uint8_t *buf, uint8_t *kinds, uint32_t *ids, uint64_t *stats);

/* flags of gw_index_scan: buf needs only the bytes of pages whose hash changed, or none. */
#define GW_SCAN_CHANGED_BYTES 1u
#define GW_SCAN_NO_BYTES 2u

/*
 * Of every stride-th page of a guest, from page offset, how many no longer
 * hold what their last scan found (their hash differs; a page that became
 * zero or stopped being zero counts). Reads the pages with pread and
 * changes nothing: an estimate of what a scan now would find changed,
 * at 1/stride of its cost. Returns the count, or -errno (-ESTALE: the file
 * shrank; -EINVAL: stride is 0; -EOVERFLOW: so many samples the count might not fit).
 */
int gw_index_count_changed(gw_index *index, uint32_t guest, uint32_t stride, uint32_t offset);

/*
 * Threads for the page work of later scans (reads, zero checks, hashes):
 * 1 (the default) keeps it on the caller's thread; more split each call's
 * pages among helper threads (at most GW_MAX_THREADS, 8). Lookups and
 * inserts into the index stay on the caller's thread.
 */
void gw_index_set_threads(gw_index *index, uint32_t threads);

/*
 * How later scans read a page the index has not scanned before:
 * GW_FIRST_READS_MEASURED (the default: the faster of the other two,
 * measured as the scans go), GW_FIRST_READS_COPY (pread into the buffer)
 * or GW_FIRST_READS_IN_PLACE (checked and hashed through a mapping of the
 * file, and copied into the buffer when it holds data and the scan wants
 * its bytes). Any other value means measured.
 */
#define GW_FIRST_READS_MEASURED 0
#define GW_FIRST_READS_COPY 1
#define GW_FIRST_READS_IN_PLACE 2
void gw_index_set_first_reads(gw_index *index, uint32_t way);

/*
 * Makes the helper threads of threads-thread scans now (they are shared
 * by every index of the process and otherwise made by the first scan that
 * needs them), so that a scan that must be quick does not wait for them.
 */
void gw_scan_threads_start(uint32_t threads);

/* Per-page state of a guest, owned by the index (stable until gw_index_free). */
const uint64_t *gw_index_page_hashes(const gw_index *index, uint32_t guest);
const uint32_t *gw_index_page_contents(const gw_index *index, uint32_t guest);
uint32_t gw_index_guest_pages(const gw_index *index, uint32_t guest);

/* Number of distinct contents indexed so far (the next new id). */
uint32_t gw_index_contents(const gw_index *index);
/* Bytes the content table uses (slots and locations, not per-page state). */
uint64_t gw_index_memory(const gw_index *index);

/* ------------------------------------------------------------------------
 * Pagemap: which pages a process has written since a point in time.
 * Soft-dirty tracking is a kernel option (CONFIG_MEM_SOFT_DIRTY); where it
 * is missing, the calls below answer -EOPNOTSUPP instead of wrong bits.
 * ---------------------------------------------------------------------- */

/* Per-page flags written by gw_pagemap_read and gw_pagemap_scan. */
enum gw_pagemap_flag {
	GW_PM_PRESENT = 1 << 0,    /* page is in RAM */
	GW_PM_SWAPPED = 1 << 1,    /* page is in swap */
	GW_PM_SOFT_DIRTY = 1 << 2, /* written since the last gw_soft_dirty_clear */
};

/* 1 if soft-dirty tracking works on this kernel, 0 if not, -errno if unknown. Cached. */
int gw_soft_dirty_supported(void);
/* Clears the soft-dirty bits of every page of process pid (0 = self). */
int gw_soft_dirty_clear(int32_t pid);
/*
 * Reads flags for pages [addr, addr + pages * 4096) of process pid (0 =
 * self) from /proc/PID/pagemap. want is a mask of gw_pagemap_flag; asking
 * for GW_PM_SOFT_DIRTY where it is unsupported returns -EOPNOTSUPP.
 */
int gw_pagemap_read(int32_t pid, uint64_t addr, uint32_t pages, uint8_t *flags, uint32_t want);
/* 1 if the PAGEMAP_SCAN ioctl (Linux 6.7+) works here, 0 if not. Cached. */
int gw_pagemap_scan_supported(void);
/* As gw_pagemap_read, through the PAGEMAP_SCAN ioctl: -ENOTTY where the kernel lacks it. */
int gw_pagemap_scan(int32_t pid, uint64_t addr, uint32_t pages, uint8_t *flags, uint32_t want);

#endif
