/* alloc.c -- the libc allocator behind struct keel_alloc. Pure modules never
 * call malloc themselves; they receive an allocator and this is the default. */
#include <stdlib.h>

#include "keel/common.h"

static void *libc_malloc(void *ctx, size_t size)
{
	(void)ctx;
	return malloc(size);
}

static void *libc_realloc(void *ctx, void *ptr, size_t size)
{
	(void)ctx;
	return realloc(ptr, size);
}

static void libc_free(void *ctx, void *ptr)
{
	(void)ctx;
	free(ptr);
}

const struct keel_alloc keel_alloc_libc = {
	.ctx = NULL,
	.malloc = libc_malloc,
	.realloc = libc_realloc,
	.free = libc_free,
};
