/*
 * How a scan that wants no page's bytes (the preparation scan) reads a page
 * for the first time: with pread, or where it lies, through a mapping of
 * the file. Which is faster depends on the machine: here the mapping hashed
 * 1 GiB of guest-like RAM some 12% faster (the copy into the buffer is
 * half of pread's cost), but on a VM whose hypervisor traps the first touch
 * of each mapped page (shadow page tables) it ran at a third of pread's
 * speed. So the index measures both on its own first calls, taking turns
 * so that both meet the same mix of holes and data, keeps the faster for a
 * while, and measures again (the host's load may change).
 * A scan that wants bytes always copies: the copy is the snapshot it sends.
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
	ix->first_reads.fixed = way <= GW_FIRST_READS_IN_PLACE ? way : GW_FIRST_READS_MEASURED;
	ix->first_reads.calls = 0;
}

int gw__first_read_in_place(const gw_index *ix)
{
	const struct first_read_choice *c = &ix->first_reads;

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

void gw__first_read_record(gw_index *ix, int in_place, uint32_t pages, uint64_t ns)
{
	struct first_read_choice *c = &ix->first_reads;

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
