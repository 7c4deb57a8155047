/*
 * Helper threads for the page work of a scan: reads, zero checks and
 * hashes are the same for every page and share nothing, so a call splits
 * its pages among the caller and the helpers and returns when all are
 * done. The index itself (lookups, inserts, byte compares against holders)
 * stays on the caller's thread.
 *
 * Helpers are made on first use (or ahead of it: gw_scan_threads_start)
 * and live as long as the process, asleep between jobs. One job runs at a
 * time; a second caller (another thread) does its work alone rather than
 * wait.
 */
#include <pthread.h>

#include "internal.h"

static struct {
	pthread_mutex_t lock;
	pthread_cond_t wake;             /* a job started */
	pthread_cond_t done;             /* the last helper part ended */
	pthread_mutex_t busy;            /* held by the caller of the running job */
	uint32_t helpers;                /* helper threads started (ids 1 .. helpers) */
	uint64_t job;                    /* number of the latest job */
	uint64_t first_job[GW_MAX_THREADS]; /* by helper id: the job number at its start */
	uint32_t parts;                  /* parts of the current job */
	uint32_t unfinished;             /* helper parts of it still running */
	gw__work_fn *fn;
	void *arg;
} pool = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.wake = PTHREAD_COND_INITIALIZER,
	.done = PTHREAD_COND_INITIALIZER,
	.busy = PTHREAD_MUTEX_INITIALIZER,
};

static void *helper_main(void *data)
{
	uint32_t id = (uint32_t)(uintptr_t)data;
	uint64_t seen;

	pthread_mutex_lock(&pool.lock);
	seen = pool.first_job[id];
	for (;;) {
		gw__work_fn *fn;
		void *arg;
		uint32_t parts;

		while (pool.job == seen)
			pthread_cond_wait(&pool.wake, &pool.lock);
		seen = pool.job;
		if (id >= pool.parts)
			continue;
		fn = pool.fn;
		arg = pool.arg;
		parts = pool.parts;
		pthread_mutex_unlock(&pool.lock);
		fn(arg, id, parts);
		pthread_mutex_lock(&pool.lock);
		if (--pool.unfinished == 0)
			pthread_cond_signal(&pool.done);
	}
	return NULL;
}

/* Starts helpers up to ids 1 .. want - 1 (fewer if threads cannot be made); lock held. */
static void start_helpers(uint32_t want)
{
	while (pool.helpers + 1 < want) {
		uint32_t id = pool.helpers + 1;
		pthread_t thread;

		pool.first_job[id] = pool.job;
		if (pthread_create(&thread, NULL, helper_main, (void *)(uintptr_t)id) != 0)
			return;
		pthread_detach(thread);
		pool.helpers = id;
	}
}

GW_EXPORT void gw_scan_threads_start(uint32_t threads)
{
	pthread_mutex_lock(&pool.lock);
	start_helpers(threads > GW_MAX_THREADS ? GW_MAX_THREADS : threads);
	pthread_mutex_unlock(&pool.lock);
}

void gw__parallel(gw__work_fn *fn, void *arg, uint32_t parts)
{
	if (parts > GW_MAX_THREADS)
		parts = GW_MAX_THREADS;
	if (parts <= 1 || pthread_mutex_trylock(&pool.busy) != 0) {
		fn(arg, 0, 1);
		return;
	}
	pthread_mutex_lock(&pool.lock);
	start_helpers(parts);
	if (parts > pool.helpers + 1)
		parts = pool.helpers + 1;
	pool.fn = fn;
	pool.arg = arg;
	pool.parts = parts;
	pool.unfinished = parts - 1;
	pool.job++;
	pthread_cond_broadcast(&pool.wake);
	pthread_mutex_unlock(&pool.lock);

	fn(arg, 0, parts);

	pthread_mutex_lock(&pool.lock);
	while (pool.unfinished)
		pthread_cond_wait(&pool.done, &pool.lock);
	pthread_mutex_unlock(&pool.lock);
	pthread_mutex_unlock(&pool.busy);
}
