/*
 * Guest RAM files, the writing side (a target's): pages written in place,
 * holes punched, pages copied from other files for references. A file
 * never grows past a short last page, and never loses a byte that a page's
 * hash counts (cut_at_end).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* pwrite exactly len bytes. */
static int pwrite_full(int fd, const uint8_t *buf, size_t len, uint64_t offset)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pwrite(fd, buf + done, len - done, (off_t)(offset + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)n;
	}
	return 0;
}

/*
 * A write of len bytes at offset, cut at the end of the file: the file never
 * grows past a short last page. The bytes cut off must be zeros, as a read
 * of that page returns them and as its hash was taken: any other byte would
 * be lost while the page's hash still said it was there. -EFBIG if one is
 * not.
 */
static int cut_at_end(const gw_ram *ram, uint64_t offset, uint64_t *len, const uint8_t *bytes)
{
	if (offset + *len <= ram->size)
		return 0;
	for (uint64_t k = ram->size - offset; k < *len; k++)
		if (bytes[k])
			return -EFBIG;
	*len = ram->size - offset;
	return 0;
}

/* Writes run pages from bytes at page first (below ram->pages), cut at the end of the file. */
static int write_run(const gw_ram *ram, uint32_t first, uint32_t run, const uint8_t *bytes)
{
	uint64_t offset = (uint64_t)first << GW_PAGE_SHIFT;
	uint64_t len = (uint64_t)run << GW_PAGE_SHIFT;
	int err = cut_at_end(ram, offset, &len, bytes);

	return err ? err : pwrite_full(ram->fd, bytes, len, offset);
}

GW_EXPORT int gw_ram_write(gw_ram *ram, const uint32_t *pages, uint32_t count, const uint8_t *buf)
{
	uint32_t i = 0;

	if (!ram->writable)
		return -EBADF;
	while (i < count) {
		uint32_t run = 1;
		int err;

		if (pages[i] >= ram->pages)
			return -ERANGE;
		while (i + run < count && pages[i + run] == pages[i] + run && pages[i + run] < ram->pages)
			run++;
		err = write_run(ram, pages[i], run, buf + ((size_t)i << GW_PAGE_SHIFT));
		if (err)
			return err;
		i += run;
	}
	return 0;
}

GW_EXPORT int gw_ram_punch(gw_ram *ram, uint32_t first, uint32_t count)
{
	static const uint8_t zeros[GW_PAGE_SIZE];
	uint64_t offset = (uint64_t)first << GW_PAGE_SHIFT;
	uint64_t len = (uint64_t)count << GW_PAGE_SHIFT;

	if (!ram->writable)
		return -EBADF;
	if ((uint64_t)first + count > ram->pages)
		return -ERANGE;
	if (offset + len > ram->size)
		len = ram->size - offset;
	if (!len)
		return 0; /* fallocate refuses a length of 0 */
	if (fallocate(ram->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)len) == 0)
		return 0;
	if (errno != EOPNOTSUPP)
		return -errno;
	/* A file system without hole punching: write the zeros instead. */
	for (uint64_t done = 0; done < len; done += GW_PAGE_SIZE) {
		uint64_t n = len - done < GW_PAGE_SIZE ? len - done : GW_PAGE_SIZE;
		int err = pwrite_full(ram->fd, zeros, n, offset + done);
		if (err)
			return err;
	}
	return 0;
}

/* Pages a reference copy reads at once, on the caller's stack. */
#define COPY_PAGES 16

GW_EXPORT int gw_ram_copy(gw_ram *const *src, const uint32_t *src_pages, gw_ram *dst, const uint32_t *dst_pages,
			  uint32_t count, uint64_t seed, const uint64_t *expected, uint32_t *bad)
{
	uint8_t buf[COPY_PAGES << GW_PAGE_SHIFT] __attribute__((aligned(64)));
	uint64_t call = gw__call_id();
	struct gw_hash_key key;
	uint32_t i = 0;

	if (!dst->writable)
		return -EBADF;
	gw__hash_key(seed, &key);
	while (i < count) {
		uint32_t run = 1;
		int err;

		/* A run: both sides consecutive, from one source file, as many pages as buf holds. */
		while (i + run < count && run < COPY_PAGES && src[i + run] == src[i] &&
		       src_pages[i + run] == src_pages[i] + run && dst_pages[i + run] == dst_pages[i] + run)
			run++;
		for (uint32_t k = i; k < i + run; k++)
			if (src_pages[k] >= src[k]->pages || dst_pages[k] >= dst->pages)
				return -ERANGE;
		/* A short last page reads as zeros past the end, as it was hashed. */
		err = gw__ram_read_pages(src[i], call, src_pages[i], run, buf);
		if (err)
			return err;
		for (uint32_t k = 0; k < run; k++) {
			if (gw__page_hash(buf + ((size_t)k << GW_PAGE_SHIFT), &key) != expected[i + k]) {
				*bad = i + k;
				return -EBADMSG;
			}
		}
		err = write_run(dst, dst_pages[i], run, buf);
		if (err)
			return err;
		i += run;
	}
	return 0;
}
