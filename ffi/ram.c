/*
 * Guest RAM files: open, size, read around holes (the writes are in
 * ram_write.c).
 *
 * Pages are read here with pread: pread of a hole returns zeros without
 * allocating, while a read through a mapping would allocate every
 * untouched page of the guest, and on these VMs a mapping's page faults
 * cost more than pread's copy the first time (rescans read through a
 * mapping: ram_map.c). A shrunk file must not read as
 * zeros either, so every call that reads one checks with fstat that it did
 * not shrink (gw__ram_check_whole) and answers -ESTALE if it did.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


#include "internal.h"

/* Data regions looked up per read before reading straight through the rest. */
#define MAX_REGIONS_PER_READ 4

GW_EXPORT uint32_t gw_abi_version(void)
{
	return GW_ABI_VERSION;
}

GW_EXPORT int gw_ram_open(const char *path, uint32_t flags, gw_ram **out)
{
	/* O_NONBLOCK: opening a FIFO must fail below, not wait for a writer (no effect on regular files). */
	int oflags = O_CLOEXEC | O_NONBLOCK | ((flags & GW_OPEN_WRITE) ? O_RDWR : O_RDONLY);
	struct stat st;
	gw_ram *ram;
	int fd, err;

	/* A receiver creates files in its directory: never through a symlink planted there. */
	if (flags & GW_OPEN_CREATE)
		oflags |= O_CREAT | O_NOFOLLOW;
	if (flags & GW_OPEN_NOFOLLOW)
		oflags |= O_NOFOLLOW;
	/* O_EXCL: tells a file this call made from one that was there, with nothing left to undo. */
	if (flags & GW_OPEN_NEW)
		oflags |= O_CREAT | O_EXCL;
	fd = open(path, oflags, 0600);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		err = -errno;
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		err = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
		goto fail;
	}
	ram = calloc(1, sizeof(*ram));
	if (!ram) {
		err = -ENOMEM;
		goto fail;
	}
	ram->fd = fd;
	pthread_mutex_init(&ram->premapping, NULL);
	ram->writable = !!(flags & GW_OPEN_WRITE);
	ram->size = (uint64_t)st.st_size;
	ram->pages = (uint32_t)gw_pages_of(ram->size);
	if (gw_pages_of(ram->size) > UINT32_MAX - 2) {
		pthread_mutex_destroy(&ram->premapping);
		free(ram);
		err = -EFBIG;
		goto fail;
	}
	*out = ram;
	return 0;
fail:
	close(fd);
	return err;
}

GW_EXPORT void gw_ram_close(gw_ram *ram)
{
	if (!ram)
		return;
	/* A premap on another thread reads the mapping: it ends first. */
	pthread_mutex_lock(&ram->premapping);
	gw__ram_unmap(ram);
	pthread_mutex_unlock(&ram->premapping);
	pthread_mutex_destroy(&ram->premapping);
	close(ram->fd);
	free(ram);
}

GW_EXPORT uint64_t gw_ram_size(const gw_ram *ram)
{
	return ram->size;
}

GW_EXPORT int gw_ram_resize(gw_ram *ram, uint64_t size)
{
	if (!ram->writable)
		return -EBADF;
	if (gw_pages_of(size) > UINT32_MAX - 2)
		return -EFBIG;
	pthread_mutex_lock(&ram->premapping); /* a premap on another thread reads the mapping */
	gw__ram_unmap(ram);                   /* sized for the old size */
	if (ftruncate(ram->fd, (off_t)size) < 0) {
		int err = -errno;

		pthread_mutex_unlock(&ram->premapping);
		return err;
	}
	ram->data_start = ram->data_end = 0;
	ram->size = size;
	ram->pages = (uint32_t)gw_pages_of(size);
	pthread_mutex_unlock(&ram->premapping);
	return 0;
}

uint64_t gw__call_id(void)
{
	static _Atomic uint64_t calls;

	return atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed) + 1;
}

int gw__ram_check_whole(gw_ram *ram, uint64_t call)
{
	struct stat st;

	if (ram->whole_in == call)
		return 0;
	if (fstat(ram->fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size < ram->size)
		return -ESTALE;
	ram->whole_in = call;
	return 0;
}

int gw__pread_full(int fd, uint8_t *buf, size_t len, uint64_t offset)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, buf + done, len - done, (off_t)(offset + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	memset(buf + done, 0, len - done);
	return 0;
}

int gw__ram_read_pages(gw_ram *ram, uint64_t call, uint64_t first, uint32_t count, uint8_t *buf)
{
	int err = gw__ram_check_whole(ram, call);

	if (err)
		return err;
	return gw__pread_full(ram->fd, buf, (size_t)count << GW_PAGE_SHIFT, first << GW_PAGE_SHIFT);
}

/* Marks the pages of [first_page, end_page) that mask selects; returns how many. */
static int mark_span(uint64_t first, uint64_t first_page, uint64_t end_page, const uint8_t *mask, uint8_t *has_data)
{
	int marked = 0;

	for (uint64_t page = first_page; page < end_page; page++) {
		if (mask && !mask[page - first])
			continue;
		has_data[page - first] = 1;
		marked++;
	}
	return marked;
}

/*
 * The data region [*start, *end) holding or following pos, or 0 when there is
 * no data in [pos, limit). A data region found earlier is reused: SEEK_HOLE
 * on tmpfs walks every page up to the hole, so asking it again for each
 * chunk of a large region would cost the rest of the region every time.
 * Only data is remembered, never holes: a page that became data is always
 * found by a fresh SEEK_DATA, and one that became a hole simply reads as zeros.
 */
static int data_region(gw_ram *ram, uint64_t pos, uint64_t limit, uint64_t *start, uint64_t *end)
{
	off_t data, hole;

	if (pos >= ram->data_start && pos < ram->data_end) {
		*start = pos;
		*end = ram->data_end;
		return 1;
	}
	data = lseek(ram->fd, (off_t)pos, SEEK_DATA);
	if (data < 0)
		return errno == ENXIO ? 0 : -errno;
	if ((uint64_t)data >= limit)
		return 0; /* no data before limit: no need to walk the region after it */
	hole = lseek(ram->fd, data, SEEK_HOLE);
	if (hole < 0)
		return -errno;
	ram->data_start = *start = (uint64_t)data;
	ram->data_end = *end = (uint64_t)hole;
	return 1;
}

int gw__ram_find_data(gw_ram *ram, uint64_t call, uint32_t first, uint32_t count, const uint8_t *mask,
		      uint8_t *has_data)
{
	uint64_t end_page = (uint64_t)first + count;
	uint64_t end = end_page << GW_PAGE_SHIFT;
	uint64_t pos = (uint64_t)first << GW_PAGE_SHIFT;
	int marked = 0, regions = 0, err;

	if (end_page > ram->pages)
		return -ERANGE;
	/* pread would not fault, but a shrunk file's lost pages must not read as zeros. */
	err = gw__ram_check_whole(ram, call);
	if (err)
		return err;
	memset(has_data, 0, count);
	if (end > ram->size)
		end = ram->size;

	while (pos < end) {
		uint64_t data_start = 0, data_end = 0;
		int found = data_region(ram, pos, end, &data_start, &data_end);

		if (found < 0)
			return found;
		if (!found || data_start >= end)
			break;
		/*
		 * A region costs up to two lseeks here and a pread when it is read
		 * (3.3 us in all), a hole read through about 0.25 us a page: past a
		 * few regions in one call, the rest is marked and read straight on
		 * (holes read as zeros and are never allocated).
		 */
		if (data_end > end || ++regions == MAX_REGIONS_PER_READ)
			data_end = end;
		marked += mark_span(first, data_start >> GW_PAGE_SHIFT, gw_pages_of(data_end), mask, has_data);
		pos = gw_pages_of(data_end) << GW_PAGE_SHIFT;
	}
	return marked;
}

int gw__ram_read_marked(const gw_ram *ram, uint32_t first, uint32_t from, uint32_t to, const uint8_t *has_data,
			uint8_t *buf)
{
	for (uint32_t i = from, end; i < to; i = end) {
		int err;

		if (!has_data[i]) {
			end = i + 1;
			continue;
		}
		for (end = i + 1; end < to && has_data[end]; end++)
			;
		err = gw__pread_full(ram->fd, buf + ((size_t)i << GW_PAGE_SHIFT), (size_t)(end - i) << GW_PAGE_SHIFT,
				     ((uint64_t)first + i) << GW_PAGE_SHIFT);
		if (err)
			return err;
	}
	return 0;
}

GW_EXPORT int gw_ram_read(gw_ram *ram, uint32_t first, uint32_t count, uint8_t *buf, uint8_t *has_data)
{
	int pages_read, err;

	if (count > GW_MAX_CALL_PAGES)
		return -EINVAL;
	pages_read = gw__ram_find_data(ram, gw__call_id(), first, count, NULL, has_data);
	if (pages_read < 0)
		return pages_read;
	err = gw__ram_read_marked(ram, first, 0, count, has_data, buf);
	if (err)
		return err;
	for (uint32_t i = 0; i < count; i++)
		if (!has_data[i])
			memset(buf + ((size_t)i << GW_PAGE_SHIFT), 0, GW_PAGE_SIZE);
	return pages_read;
}

GW_EXPORT int gw_ram_advise(gw_ram *ram, uint32_t advice)
{
	int posix_advice;

	switch (advice) {
	case GW_ADVICE_SEQUENTIAL:
		posix_advice = POSIX_FADV_SEQUENTIAL;
		break;
	case GW_ADVICE_DONTNEED:
		posix_advice = POSIX_FADV_DONTNEED;
		break;
	default:
		return -EINVAL;
	}
	return -posix_fadvise(ram->fd, 0, 0, posix_advice);
}

GW_EXPORT int gw_ram_stat(const gw_ram *ram, struct gw_ram_stat *out)
{
	struct stat st;

	if (fstat(ram->fd, &st) < 0)
		return -errno;
	out->dev = (uint64_t)st.st_dev;
	out->ino = (uint64_t)st.st_ino;
	out->size = (uint64_t)st.st_size;
	out->blocks = (uint64_t)st.st_blocks;
	out->mode = (uint64_t)st.st_mode;
	out->own = st.st_uid == geteuid();
	return 0;
}
