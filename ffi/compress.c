/*
 * Compression of page data on the wire (zstd). The contexts are made once
 * and reused: creating one per call would cost more than compressing a
 * frame of pages. Callers are single-threaded (one Deno thread).
 */
#include <errno.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "internal.h"

GW_EXPORT uint32_t gw_compress_bound(uint32_t len)
{
	return (uint32_t)ZSTD_compressBound(len);
}

GW_EXPORT int gw_compress(const uint8_t *src, uint32_t len, uint8_t *dst, uint32_t cap, int32_t level)
{
	static ZSTD_CCtx *cctx;
	size_t n;

	if (!cctx && !(cctx = ZSTD_createCCtx()))
		return -ENOMEM;
	n = ZSTD_compressCCtx(cctx, dst, cap, src, len, level);
	if (ZSTD_isError(n))
		return ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall ? -EOVERFLOW : -EINVAL;
	return (int)n;
}

GW_EXPORT int gw_decompress(const uint8_t *src, uint32_t len, uint8_t *dst, uint32_t expected)
{
	static ZSTD_DCtx *dctx;
	size_t n;

	if (!dctx && !(dctx = ZSTD_createDCtx()))
		return -ENOMEM;
	/* The output holds exactly what the frame announces: more is an error, not a bomb. */
	n = ZSTD_decompressDCtx(dctx, dst, expected, src, len);
	if (ZSTD_isError(n) || n != expected)
		return -EBADMSG;
	return 0;
}
