/*
 * How a scan reads a page for the first time: with pread into the caller's
 * buffer, or where it lies, through a mapping of the file (a page that holds
 * data is then copied into the buffer only when the scan wants its bytes:
 * the copy is the snapshot that is sent and hashed; a zero page never is).
 * Which is faster depends on the machine. Here the mapping scanned 1 GiB of
 * guest-like RAM some 15% faster when no bytes were wanted (pread's copy
 * was 40% of the scan's samples), and round 1 of the lab's gang at 10
 * Gbit/s scanned in 0.14-0.17 s instead of 0.19-0.39 (it skips the copy of
 * zero pages); on a VM whose hypervisor trapped the first touch of each
 * mapped page (shadow page tables) a read through the mapping cost 1 us a
 * page, pread a fifth of that, and the preparation scan ran at a third of
 * its speed. So the index measures both on its own first calls, taking
 * turns so that both meet the same mix of holes and data, keeps the faster
 * for a while, and measures again (the host's load may change). Scans that
 * want bytes and scans that do not are measured apart: their costs differ.
 */
#include <time.h>

#include "index_internal.h"

/*
 * A trial: the two ways in turns of TURN_CALLS calls each, TRIAL_CALLS in
 * all; then RUN_CALLS calls the faster way. Turns of one call each misled:
 * a call in place right after one by copy cost twice what it costs among
 * its own kind (2 us a page against 0.8, where the copy cost 0.9).
 */
#define TURN_CALLS 4
#define TRIAL_CALLS (4 * TURN_CALLS)
#define RUN_CALLS 2048

GW_EXPORT void gw_index_set_first_reads(gw_index *ix, uint32_t way)
{
	for (int k = 0; k < 2; k++) {
		ix->first_reads[k].fixed = way <= GW_FIRST_READS_IN_PLACE ? way : GW_FIRST_READS_MEASURED;
		ix->first_reads[k].calls = 0;
	}
}

int gw__first_read_in_place(const gw_index *ix, int no_bytes)
{
	const struct first_read_choice *c = &ix->first_reads[no_bytes];

	if (c->fixed != GW_FIRST_READS_MEASURED)
		return c->fixed == GW_FIRST_READS_IN_PLACE;
	return c->calls < TRIAL_CALLS ? (int)(c->calls / TURN_CALLS & 1) : c->in_place;
}

uint64_t gw__now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

void gw__first_read_record(gw_index *ix, int no_bytes, int in_place, uint32_t pages, uint64_t ns)
{
	struct first_read_choice *c = &ix->first_reads[no_bytes];

	if (c->fixed != GW_FIRST_READS_MEASURED)
		return;
	if (c->calls == 0)
		c->pages[0] = c->pages[1] = c->ns[0] = c->ns[1] = 0;
	if (c->calls < TRIAL_CALLS) {
		c->pages[in_place] += pages;
		c->ns[in_place] += ns;
	}
	if (++c->calls == TRIAL_CALLS) {
		/* Faster per page read: ns[1] / pages[1] < ns[0] / pages[0]. A trial of holes says nothing. */
		c->in_place = c->pages[0] && c->pages[1] ? c->ns[1] * c->pages[0] < c->ns[0] * c->pages[1]
							   : c->in_place;
	}
	if (c->calls >= TRIAL_CALLS + RUN_CALLS)
		c->calls = 0;
}
