/*
 * Memory for page work, the callers' (gw_memory_advise_huge) and the
 * library's own (gw__alloc_huge: the index's kept copies), backed by 2 MiB
 * pages where the kernel allows. On these VMs the first touch of a fresh 4 KiB
 * page costs some 13 us (the hypervisor maps it), so a 16 MiB scan buffer
 * used for the first time cost 50 ms, a third of a 1 GiB scan; a 2 MiB
 * page is mapped in one fault.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>

#include "internal.h"

#define HUGE_PAGE ((uintptr_t)2 << 20)

GW_EXPORT int gw_memory_advise_huge(void *buf, uint64_t len)
{
	uintptr_t start = ((uintptr_t)buf + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
	uintptr_t end = ((uintptr_t)buf + len) & ~(HUGE_PAGE - 1);

	/* Only whole 2 MiB pages inside the buffer: its neighbours are none of our business. */
	if (end <= start)
		return 0;
	return madvise((void *)start, end - start, MADV_HUGEPAGE) < 0 ? -errno : 0;
}

void *gw__alloc_huge(size_t *bytes)
{
	/* aligned_alloc wants a whole number of alignments (ASan aborts otherwise). */
	size_t rounded = (*bytes + HUGE_PAGE - 1) & ~(size_t)(HUGE_PAGE - 1);
	void *room = aligned_alloc(HUGE_PAGE, rounded);

	if (room) {
		gw_memory_advise_huge(room, rounded);
		*bytes = rounded;
	}
	return room;
}

GW_EXPORT uint64_t gw_total_memory(void)
{
	struct sysinfo info;

	return sysinfo(&info) == 0 ? (uint64_t)info.totalram * info.mem_unit : 0;
}
