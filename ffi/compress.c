/*
 * Compression of page data on the wire (zstd). The contexts are made once
 * per thread and reused: creating one per call would cost more than
 * compressing a frame of pages, and one shared by two threads (Deno
 * workers each calling in) would be corrupted. A thread's contexts are
 * freed when it ends.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "internal.h"

/* The calling thread's zstd contexts, each made on first use. */
struct contexts {
	ZSTD_CCtx *cctx;
	ZSTD_DCtx *dctx;
};

static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t key;
static int key_made;

static void free_contexts(void *data)
{
	struct contexts *c = data;

	ZSTD_freeCCtx(c->cctx);
	ZSTD_freeDCtx(c->dctx);
	free(c);
}

static void make_key(void)
{
	key_made = pthread_key_create(&key, free_contexts) == 0;
}

/* This thread's contexts (not yet made ones NULL), or NULL when out of memory. */
static struct contexts *thread_contexts(void)
{
	struct contexts *c;

	pthread_once(&key_once, make_key);
	if (!key_made)
		return NULL;
	c = pthread_getspecific(key);
	if (c)
		return c;
	c = calloc(1, sizeof(*c));
	if (c && pthread_setspecific(key, c) != 0) {
		free(c);
		c = NULL;
	}
	return c;
}

GW_EXPORT uint32_t gw_compress_bound(uint32_t len)
{
	size_t bound = ZSTD_compressBound(len);

	return bound > UINT32_MAX ? 0 : (uint32_t)bound; /* 0: no bound fits, as in zstd */
}

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

GW_EXPORT int gw_compress(const uint8_t *src, uint32_t len, uint8_t *dst, uint32_t cap, int32_t level,
			  uint64_t *ns)
{
	struct contexts *c = thread_contexts();
	uint64_t started = now_ns();
	size_t n;

	if (!c || (!c->cctx && !(c->cctx = ZSTD_createCCtx())))
		return -ENOMEM;
	/* The size comes back as an int: never let it reach past INT_MAX. */
	if (cap > INT_MAX)
		cap = INT_MAX;
	n = ZSTD_compressCCtx(c->cctx, dst, cap, src, len, level);
	if (ns)
		*ns = now_ns() - started;
	if (ZSTD_isError(n))
		return ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall ? -EOVERFLOW : -EINVAL;
	return (int)n;
}

GW_EXPORT int gw_decompress(const uint8_t *src, uint32_t len, uint8_t *dst, uint32_t expected)
{
	struct contexts *c = thread_contexts();
	size_t n;

	if (!c || (!c->dctx && !(c->dctx = ZSTD_createDCtx())))
		return -ENOMEM;
	/* The output holds exactly what the frame announces: more is an error, not a bomb. */
	n = ZSTD_decompressDCtx(c->dctx, dst, expected, src, len);
	if (ZSTD_isError(n) || n != expected)
		return -EBADMSG;
	return 0;
}
