/*
 * Compression jobs on threads of the library's own: the caller starts a
 * job and goes on with its work (the next chunk's scan and plan), then
 * collects the result. Deno's non-blocking FFI calls did the same through
 * its blocking pool and event loop, but on a VM each call cost 0.6-1.3 ms
 * of wake-ups beyond zstd's own time, several hundred frames a round.
 * Here a job's thread is woken at its start, while the caller still works,
 * and the caller waits for the end only if it comes first, spinning a
 * little before it sleeps.
 *
 * One thread per job: a job is started at most once before its finish, and
 * a thread that ends its job sleeps until its job starts again. Threads
 * are made by the thread that starts the job's first run and inherit its
 * CPU weight (Linux keeps nice per thread).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "internal.h"

/* Spins of a caller waiting for its job before it sleeps (tens of microseconds): a spinning caller holds a core the job may need. */
#define SPINS 1000

/* A hint to the core that this thread spins. */
static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield");
#endif
}

enum job_state { JOB_IDLE, JOB_QUEUED, JOB_DONE, JOB_QUIT };

struct gw_compress_job {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t change; /* state changed */
	_Atomic int state;
	int started;           /* the thread exists */
	const uint8_t *src;
	uint32_t len;
	uint8_t *dst;
	uint32_t cap;
	int32_t level;
	int result;
	uint64_t ns;
};

static void *job_main(void *data)
{
	struct gw_compress_job *job = data;

	pthread_mutex_lock(&job->lock);
	for (;;) {
		while (atomic_load(&job->state) == JOB_IDLE || atomic_load(&job->state) == JOB_DONE)
			pthread_cond_wait(&job->change, &job->lock);
		if (atomic_load(&job->state) == JOB_QUIT)
			break;
		pthread_mutex_unlock(&job->lock);
		job->result = gw_compress(job->src, job->len, job->dst, job->cap, job->level, &job->ns);
		pthread_mutex_lock(&job->lock);
		atomic_store(&job->state, JOB_DONE);
		pthread_cond_broadcast(&job->change);
	}
	pthread_mutex_unlock(&job->lock);
	return NULL;
}

GW_EXPORT int gw_compress_job_new(gw_compress_job **out)
{
	struct gw_compress_job *job = calloc(1, sizeof(*job));

	if (!job)
		return -ENOMEM;
	pthread_mutex_init(&job->lock, NULL);
	pthread_cond_init(&job->change, NULL);
	atomic_init(&job->state, JOB_IDLE);
	*out = job;
	return 0;
}

GW_EXPORT int gw_compress_job_start(gw_compress_job *job, const uint8_t *src, uint32_t len, uint8_t *dst,
				    uint32_t cap, int32_t level)
{
	int err = 0;

	pthread_mutex_lock(&job->lock);
	if (atomic_load(&job->state) != JOB_IDLE) { /* queued, or done and not finished yet */
		err = -EBUSY;
		goto out;
	}
	if (!job->started) {
		err = -pthread_create(&job->thread, NULL, job_main, job);
		if (err)
			goto out;
		job->started = 1;
	}
	job->src = src;
	job->len = len;
	job->dst = dst;
	job->cap = cap;
	job->level = level;
	atomic_store(&job->state, JOB_QUEUED);
	pthread_cond_broadcast(&job->change);
out:
	pthread_mutex_unlock(&job->lock);
	return err;
}

GW_EXPORT int gw_compress_job_finish(gw_compress_job *job, uint64_t *ns)
{
	int state;

	for (int spin = 0; spin < SPINS && atomic_load(&job->state) == JOB_QUEUED; spin++)
		relax();
	pthread_mutex_lock(&job->lock);
	while ((state = atomic_load(&job->state)) == JOB_QUEUED)
		pthread_cond_wait(&job->change, &job->lock);
	pthread_mutex_unlock(&job->lock);
	if (state != JOB_DONE)
		return -EINVAL; /* never started */
	atomic_store(&job->state, JOB_IDLE);
	if (ns)
		*ns = job->ns;
	return job->result;
}

GW_EXPORT void gw_compress_job_free(gw_compress_job *job)
{
	if (!job)
		return;
	pthread_mutex_lock(&job->lock);
	/* A job still queued is finished first: its thread reads the caller's buffers. */
	while (atomic_load(&job->state) == JOB_QUEUED)
		pthread_cond_wait(&job->change, &job->lock);
	atomic_store(&job->state, JOB_QUIT);
	pthread_cond_broadcast(&job->change);
	pthread_mutex_unlock(&job->lock);
	if (job->started)
		pthread_join(job->thread, NULL);
	pthread_mutex_destroy(&job->lock);
	pthread_cond_destroy(&job->change);
	free(job);
}
