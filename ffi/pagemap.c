/*
 * Which pages a process wrote: soft-dirty bits from /proc/PID/pagemap and
 * the PAGEMAP_SCAN ioctl. Both probes run once and are cached; a kernel
 * built without CONFIG_MEM_SOFT_DIRTY accepts clear_refs but never sets the
 * bit, so only a probe can tell, and callers get -EOPNOTSUPP, never zeros
 * that would read as "nothing was written". The probes leave the caller's
 * page bits alone (the soft-dirty one runs in a child process).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

/* /proc/PID/pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst). */
#define PM_ENTRY_PRESENT (1ull << 63)
#define PM_ENTRY_SWAPPED (1ull << 62)
#define PM_ENTRY_SOFT_DIRTY (1ull << 55)
#define PM_ENTRY_BATCH 4096 /* entries per pread: 32 KiB, 16 MiB of address space */

/* The PAGEMAP_SCAN ioctl (Linux 6.7), defined here for older headers. */
#ifndef PAGEMAP_SCAN
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_SOFT_DIRTY (1 << 7)
struct page_region {
	uint64_t start;      /* first address of the region */
	uint64_t end;        /* one past its last address */
	uint64_t categories; /* PAGE_IS_* of every page in it */
};
struct pm_scan_arg {
	uint64_t size;                /* sizeof(struct pm_scan_arg) */
	uint64_t flags;               /* PM_SCAN_* operations (none here) */
	uint64_t start;               /* first address to walk */
	uint64_t end;                 /* one past the last address */
	uint64_t walk_end;            /* out: where the walk stopped */
	uint64_t vec;                 /* struct page_region array */
	uint64_t vec_len;             /* its length */
	uint64_t max_pages;           /* 0 = no limit */
	uint64_t category_inverted;   /* categories to negate before matching */
	uint64_t category_mask;       /* all of these must match */
	uint64_t category_anyof_mask; /* at least one of these must match */
	uint64_t return_mask;         /* categories to report */
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif
#define SCAN_REGION_BATCH 512

static int open_proc(int32_t pid, const char *file, int flags)
{
	char path[64];

	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/%s", pid, file);
	else
		snprintf(path, sizeof(path), "/proc/self/%s", file);
	return open(path, flags | O_CLOEXEC);
}

GW_EXPORT int gw_soft_dirty_clear(int32_t pid)
{
	int fd = open_proc(pid, "clear_refs", O_WRONLY), err = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, "4", 1) != 1)
		err = -errno;
	close(fd);
	return err;
}

/* Reads the pagemap entry of one address of this process. */
static int self_entry(int pagemap, const void *addr, uint64_t *entry)
{
	off_t offset = (off_t)((uintptr_t)addr >> GW_PAGE_SHIFT) * (off_t)sizeof(*entry);

	if (pread(pagemap, entry, sizeof(*entry), offset) != sizeof(*entry))
		return errno ? -errno : -EIO;
	return 0;
}

/*
 * In the probe's child: writes a private page, clears soft-dirty, checks the
 * bit is clear, writes again: does the bit come back? 1, 0 or -errno. Only
 * system calls here (no locks, no allocation), as a child forked from a
 * threaded process must.
 */
static int probe_in_child(void)
{
	volatile uint8_t *page = mmap(NULL, GW_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	int clear_refs = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
	uint64_t entry;
	int err;

	if (page == MAP_FAILED || pagemap < 0 || clear_refs < 0)
		return -errno;
	page[0] = 1;
	if (write(clear_refs, "4", 1) != 1)
		return -errno;
	err = self_entry(pagemap, (const void *)page, &entry);
	if (err)
		return err;
	if (!(entry & PM_ENTRY_PRESENT) || (entry & PM_ENTRY_SOFT_DIRTY))
		return 0; /* clearing did not clear: not usable */
	page[0] = 2;
	err = self_entry(pagemap, (const void *)page, &entry);
	return err ? err : !!(entry & PM_ENTRY_SOFT_DIRTY);
}

/* Exit statuses of the probe's child: 0 and 1 are its answer, PROBE_ERRNO + e an errno e. */
#define PROBE_ERRNO 2

/*
 * Clearing soft-dirty bits clears them for a whole process: probed in this
 * process, it would erase what a caller tracks in its own memory. So the
 * probe runs in a forked child, whose bits are its own, and answers with
 * its exit status.
 */
static int probe_soft_dirty(void)
{
	pid_t child = fork();
	int status, answer;

	if (child < 0)
		return -errno;
	if (child == 0) {
		answer = probe_in_child();
		_exit(answer >= 0 ? answer : PROBE_ERRNO - answer);
	}
	while (waitpid(child, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	if (!WIFEXITED(status))
		return -EIO;
	answer = WEXITSTATUS(status);
	return answer < PROBE_ERRNO ? answer : -(answer - PROBE_ERRNO);
}

GW_EXPORT int gw_soft_dirty_supported(void)
{
	static int cached = -1;

	if (cached < 0)
		cached = probe_soft_dirty();
	return cached;
}

/* -EOPNOTSUPP when want asks for soft-dirty bits this kernel cannot give. */
static int check_want(uint32_t want)
{
	int supported;

	if (!(want & GW_PM_SOFT_DIRTY))
		return 0;
	supported = gw_soft_dirty_supported();
	if (supported < 0)
		return supported;
	return supported ? 0 : -EOPNOTSUPP;
}

/* Reads flags for [addr, addr + pages pages) from /proc/PID/pagemap entries. */
static int read_entries(int fd, uint64_t addr, uint32_t pages, uint8_t *flags, uint32_t want)
{
	uint64_t entries[PM_ENTRY_BATCH];

	for (uint32_t done = 0; done < pages;) {
		uint32_t n = pages - done < PM_ENTRY_BATCH ? pages - done : PM_ENTRY_BATCH;
		off_t offset = (off_t)(((addr >> GW_PAGE_SHIFT) + done) * sizeof(uint64_t));
		ssize_t got = pread(fd, entries, n * sizeof(uint64_t), offset);

		if (got < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (got < (ssize_t)sizeof(uint64_t))
			return -EIO;
		n = (uint32_t)(got / sizeof(uint64_t));
		for (uint32_t i = 0; i < n; i++) {
			uint64_t e = entries[i];
			flags[done + i] = (uint8_t)(((e & PM_ENTRY_PRESENT) ? GW_PM_PRESENT : 0) |
						    ((e & PM_ENTRY_SWAPPED) ? GW_PM_SWAPPED : 0) |
						    ((e & PM_ENTRY_SOFT_DIRTY) ? GW_PM_SOFT_DIRTY : 0)) &
					  (uint8_t)want;
		}
		done += n;
	}
	return 0;
}

/* A way of reading page flags from an open /proc/PID/pagemap. */
typedef int (*pagemap_reader)(int fd, uint64_t addr, uint32_t pages, uint8_t *flags, uint32_t want);

/* Checks the request, opens the process's pagemap and reads it with `reader`. */
static int with_pagemap(int32_t pid, uint64_t addr, uint32_t pages, uint8_t *flags, uint32_t want,
			pagemap_reader reader)
{
	int fd, err = check_want(want);

	if (err)
		return err;
	if (addr & (GW_PAGE_SIZE - 1))
		return -EINVAL;
	fd = open_proc(pid, "pagemap", O_RDONLY);
	if (fd < 0)
		return -errno;
	err = reader(fd, addr, pages, flags, want);
	close(fd);
	return err;
}

GW_EXPORT int gw_pagemap_read(int32_t pid, uint64_t addr, uint32_t pages, uint8_t *flags, uint32_t want)
{
	return with_pagemap(pid, addr, pages, flags, want, read_entries);
}

static int scan_categories(uint32_t want)
{
	return ((want & GW_PM_PRESENT) ? PAGE_IS_PRESENT : 0) | ((want & GW_PM_SWAPPED) ? PAGE_IS_SWAPPED : 0) |
	       ((want & GW_PM_SOFT_DIRTY) ? PAGE_IS_SOFT_DIRTY : 0);
}

static uint8_t flags_of(uint64_t categories)
{
	return (uint8_t)(((categories & PAGE_IS_PRESENT) ? GW_PM_PRESENT : 0) |
			 ((categories & PAGE_IS_SWAPPED) ? GW_PM_SWAPPED : 0) |
			 ((categories & PAGE_IS_SOFT_DIRTY) ? GW_PM_SOFT_DIRTY : 0));
}

/* Walks pages [base, base + pages pages) with PAGEMAP_SCAN on an open pagemap fd. */
static int scan_range(int fd, uint64_t base, uint32_t pages, uint8_t *flags, uint32_t want)
{
	struct page_region regions[SCAN_REGION_BATCH];
	uint64_t end = base + ((uint64_t)pages << GW_PAGE_SHIFT);
	uint64_t cursor = base;
	struct pm_scan_arg arg;

	memset(flags, 0, pages);
	while (cursor < end) {
		uint64_t next;
		int n;

		memset(&arg, 0, sizeof(arg));
		arg.size = sizeof(arg);
		arg.start = cursor;
		arg.end = end;
		arg.vec = (uintptr_t)regions;
		arg.vec_len = SCAN_REGION_BATCH;
		arg.category_anyof_mask = (uint64_t)scan_categories(want);
		arg.return_mask = arg.category_anyof_mask;
		n = ioctl(fd, PAGEMAP_SCAN, &arg);
		if (n < 0)
			return -errno;
		next = arg.walk_end;
		for (int r = 0; r < n; r++) {
			if (regions[r].start < cursor || regions[r].end > end || regions[r].end < regions[r].start)
				return -EIO;
			memset(flags + ((regions[r].start - base) >> GW_PAGE_SHIFT), flags_of(regions[r].categories),
			       (regions[r].end - regions[r].start) >> GW_PAGE_SHIFT);
			if (regions[r].end > next)
				next = regions[r].end;
		}
		/* A full output buffer can stop the walk early: go on from the later end. */
		if (next <= cursor)
			return -EIO;
		cursor = next;
	}
	return 0;
}

GW_EXPORT int gw_pagemap_scan(int32_t pid, uint64_t addr, uint32_t pages, uint8_t *flags, uint32_t want)
{
	return with_pagemap(pid, addr, pages, flags, want, scan_range);
}

static int probe_pagemap_scan(void)
{
	uint8_t *page = mmap(NULL, GW_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t flags = 0;
	int err;

	if (page == MAP_FAILED)
		return -errno;
	page[0] = 1;
	err = gw_pagemap_scan(0, (uintptr_t)page, 1, &flags, GW_PM_PRESENT);
	munmap(page, GW_PAGE_SIZE);
	if (err == -ENOTTY || err == -EINVAL || err == -EOPNOTSUPP)
		return 0;
	if (err)
		return err;
	return flags == GW_PM_PRESENT;
}

GW_EXPORT int gw_pagemap_scan_supported(void)
{
	static int cached = -1;

	if (cached < 0)
		cached = probe_pagemap_scan();
	return cached;
}
