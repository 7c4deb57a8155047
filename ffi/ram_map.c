/*
 * Guest RAM read where it lies, through a mapping of its file: a rescan
 * hashes each page in place and copies out only the pages whose hash
 * changed, where a pread copies every page before hashing it (the lab's
 * final round of a 256 MiB guest: 44 ms instead of 68,
 * docs/lab-results/runs/ab-19; a paused guest's final round is such a
 * rescan, and its downtime), and a rescan that wants no page's bytes
 * (rescanGuest, or a preparation scan after another) copies none.
 *
 * A migration's first read still uses pread (ram.c): it needs every page's
 * bytes, and on these VMs the page faults that map a guest's pages for the
 * first time cost more than pread's copy. Holes are never read through the
 * mapping (that would allocate them): the scan reads pages mincore does
 * not find in memory with pread.
 *
 * A read through a mapping past the end of a file that shrank raises
 * SIGBUS. Every read through a mapping here runs under gw__ram_guarded,
 * whose SIGBUS handler puts a zero page in place of the missing one and
 * lets the read go on; the read then returns -ESTALE (the same answer as a
 * shrink seen by fstat), and the next gw__ram_map maps the file anew,
 * instead of the process ending, which would leave the gang's guests
 * paused. A SIGBUS anywhere else goes to the handler that was there
 * before, or ends the process as it would have.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

/* The file whose mapping this thread reads under a guard, or NULL. Initial-exec: read in a signal handler. */
static __thread gw_ram *volatile guarded __attribute__((tls_model("initial-exec")));

static struct sigaction previous_sigbus;
static pthread_once_t handler_once = PTHREAD_ONCE_INIT;
static int handler_err;

/*
 * A guarded read that faulted in its mapping goes on reading zeros: the faulting page is replaced
 * in place by a zero page, after the mapping is marked faulted, so that every read of it that
 * ends from then on (on this thread or another) is told. No jump out of the handler: a siglongjmp
 * out of it on Deno's main thread was followed by crashes in its JIT code.
 */
static void on_sigbus(int sig, siginfo_t *info, void *context)
{
	gw_ram *ram = guarded;
	uintptr_t at = (uintptr_t)info->si_addr, map = (uintptr_t)(ram ? ram->map : NULL);

	if (map && at >= map && at - map < gw_pages_of(ram->size) << GW_PAGE_SHIFT) {
		atomic_store(&ram->map_faulted, 1);
		if (mmap((void *)(at & ~(uintptr_t)(GW_PAGE_SIZE - 1)), GW_PAGE_SIZE, PROT_READ,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED)
			return;
	}
	if (previous_sigbus.sa_flags & SA_SIGINFO) {
		previous_sigbus.sa_sigaction(sig, info, context);
	} else if (previous_sigbus.sa_handler == SIG_DFL || previous_sigbus.sa_handler == SIG_IGN) {
		/* Not a read of ours: the fault repeats on return and ends the process, as without us. */
		signal(SIGBUS, SIG_DFL);
	} else {
		previous_sigbus.sa_handler(sig);
	}
}

static void install_handler(void)
{
	struct sigaction action = {.sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO};

	sigemptyset(&action.sa_mask);
	if (sigaction(SIGBUS, &action, &previous_sigbus) < 0)
		handler_err = -errno;
}

int gw__ram_guarded(gw_ram *ram, gw__guarded_fn *fn, void *arg)
{
	/* A second guard on this thread would be lost: there is none, but say so if that changes. */
	if (guarded)
		return -EDEADLK;
	guarded = ram;
	fn(arg);
	guarded = NULL;
	/* Faulted here or on another thread: zero pages stand in the mapping (gw__ram_map drops it). */
	return atomic_load(&ram->map_faulted) ? -ESTALE : 0;
}

const uint8_t *gw__ram_map(gw_ram *ram)
{
	void *map;

	if (ram->map && !atomic_load(&ram->map_faulted))
		return ram->map;
	gw__ram_unmap(ram);
	pthread_once(&handler_once, install_handler);
	if (handler_err || ram->size == 0)
		return NULL;
	map = mmap(NULL, gw_pages_of(ram->size) << GW_PAGE_SHIFT, PROT_READ, MAP_SHARED, ram->fd, 0);
	if (map == MAP_FAILED)
		return NULL; /* no mapping (no address space, a file that cannot be mapped): pread will do */
	ram->map = map;
	return map;
}

/* A mapped page, compared with a page's bytes or copied out. */
struct mapped_page {
	const uint8_t *mapped;
	uint8_t *out;	      /* where to copy it (NULL: compare with page) */
	const uint8_t *page;
	int equal;
};

static void use_mapped_page(void *arg)
{
	struct mapped_page *m = arg;

	if (m->out)
		memcpy(m->out, m->mapped, GW_PAGE_SIZE);
	else
		m->equal = memcmp(m->mapped, m->page, GW_PAGE_SIZE) == 0;
}

/* Does m's work on page p where the mapping a premap filled holds it: 0, -errno, -EAGAIN: pread. */
static int with_mapped_page(gw_ram *ram, uint32_t p, struct mapped_page *m)
{
	int result = -EAGAIN;

	/* Held by a premap that fills the mapping now (or may map the file anew): pread will do. */
	if (pthread_mutex_trylock(&ram->premapping))
		return -EAGAIN;
	if (ram->map && !atomic_load(&ram->map_faulted) && gw__ram_whole_page(ram, p)) {
		int err;

		m->mapped = ram->map + ((size_t)p << GW_PAGE_SHIFT);
		err = gw__ram_guarded(ram, use_mapped_page, m);
		/* -EDEADLK: this thread reads another file's mapping under a guard already. */
		result = err == -EDEADLK ? -EAGAIN : err;
	}
	pthread_mutex_unlock(&ram->premapping);
	return result;
}

int gw__ram_compare_mapped(gw_ram *ram, uint32_t p, const uint8_t *page)
{
	struct mapped_page m = {NULL, NULL, page, 0};
	int err = with_mapped_page(ram, p, &m);

	return err ? err : m.equal;
}

int gw__ram_read_mapped(gw_ram *ram, uint32_t p, uint8_t *out)
{
	struct mapped_page m = {NULL, out, NULL, 0};

	return with_mapped_page(ram, p, &m);
}

/* Pages premap asks mincore about at a time. */
#define PREMAP_BLOCK 1024

/* Pages [first, first + count) of a mapping, to be touched one byte a page. */
struct touch {
	const volatile uint8_t *map;
	uint64_t first, count;
};

static void touch_pages(void *arg)
{
	const struct touch *t = arg;
	uint8_t sum = 0;

	for (uint64_t p = t->first; p < t->first + t->count; p++)
		sum ^= t->map[p << GW_PAGE_SHIFT];
	(void)sum;
}

/* gw_ram_premap's work, with the file's premapping lock held. */
static int premap_locked(gw_ram *ram, uint32_t first, uint32_t count)
{
	unsigned char resident[PREMAP_BLOCK];
	uint64_t end = (uint64_t)first + count;
	const uint8_t *map;

	if (end > gw_pages_of(ram->size))
		return -ERANGE;
	if (!count)
		return 0;
	map = gw__ram_map(ram);
	if (!map)
		return -ENOMEM;
	for (uint64_t block = first; block < end; block += PREMAP_BLOCK) {
		uint64_t n = end - block < PREMAP_BLOCK ? end - block : PREMAP_BLOCK;

		if (mincore((void *)(map + (block << GW_PAGE_SHIFT)), n << GW_PAGE_SHIFT, resident) < 0)
			return -errno;
		for (uint64_t i = 0, run_end; i < n; i = run_end) {
			struct touch run;

			if (!(resident[i] & 1)) {
				run_end = i + 1;
				continue;
			}
			for (run_end = i; run_end < n && (resident[run_end] & 1); run_end++)
				;
			/*
			 * A page freed since mincore would be allocated again (as zeros): a rare page,
			 * the race a scan in place has too. A file that shrank is EFAULT here and
			 * -ESTALE from the reads (under a guard), never the process's SIGBUS; EINVAL: a
			 * kernel before 5.14, whose reads fault the pages in.
			 */
			if (madvise((void *)(map + ((block + i) << GW_PAGE_SHIFT)), (run_end - i) << GW_PAGE_SHIFT,
				    MADV_POPULATE_READ) < 0 &&
			    errno != EFAULT && errno != EINVAL)
				return -errno;
			run = (struct touch){map, block + i, run_end - i};
			if (gw__ram_guarded(ram, touch_pages, &run) < 0)
				return 0; /* the file shrank: the next scan says so */
		}
	}
	return 0;
}

/*
 * Fills in the mapping now for the pages in memory, then reads a byte of each: MADV_POPULATE_READ
 * fills this kernel's page table, but under a hypervisor that shadows the page tables (a PVM
 * guest, such as one of the VMs this was measured on) each page's first read still traps to it (a
 * 256 MiB guest: populate 6 ms, then the first reads 67-96 ms, the next 1.2 ms:
 * docs/lab-results/runs/ab-26). Without the reads a paused guest's final round paid those traps.
 * Those reads are slow enough to be made on a thread of their own (the sender's Deno call is
 * non-blocking): closing or resizing the file waits for them under the premapping lock.
 */
GW_EXPORT int gw_ram_premap(gw_ram *ram, uint32_t first, uint32_t count)
{
	int result;

	pthread_mutex_lock(&ram->premapping);
	result = premap_locked(ram, first, count);
	pthread_mutex_unlock(&ram->premapping);
	return result;
}

void gw__ram_unmap(gw_ram *ram)
{
	if (!ram->map)
		return;
	munmap(ram->map, gw_pages_of(ram->size) << GW_PAGE_SHIFT);
	ram->map = NULL;
	atomic_store(&ram->map_faulted, 0);
}
