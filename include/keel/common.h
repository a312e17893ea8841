/*
 * common.h -- the few things every keel module shares: error codes with one
 * message table, an always-on assertion, a per-instance random generator,
 * an injectable allocator and CRC32C.
 *
 * Nothing here holds process-wide mutable state: the simulator runs many
 * nodes in one process, each with its own generator and allocator.
 */
#ifndef KEEL_COMMON_H
#define KEEL_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- errors ------------------------------------------------------------ */

/* One X-macro list; keel_strerror() is generated from it. 0 is success. */
#define KEEL_ERRORS(X)                                                        \
	X(KEEL_OK, 0, "ok")                                                   \
	X(KEEL_ERR_NOMEM, 1, "out of memory")                                 \
	X(KEEL_ERR_INVAL, 2, "invalid argument")                              \
	X(KEEL_ERR_NOT_LEADER, 3, "not the leader")                           \
	X(KEEL_ERR_BUSY, 4, "too many uncommitted entries, try again")        \
	X(KEEL_ERR_TRANSFER, 5, "leadership transfer in progress")            \
	X(KEEL_ERR_TOO_BIG, 6, "length exceeds limit")                        \
	X(KEEL_ERR_CORRUPT, 7, "checksum mismatch")                           \
	X(KEEL_ERR_MAGIC, 8, "bad magic")                                     \
	X(KEEL_ERR_VERSION, 9, "unsupported version")                         \
	X(KEEL_ERR_CLUSTER, 10, "wrong cluster id")                           \
	X(KEEL_ERR_TYPE, 11, "unknown message type")                          \
	X(KEEL_ERR_TRUNCATED, 12, "truncated input")                          \
	X(KEEL_ERR_MALFORMED, 13, "malformed input")                          \
	X(KEEL_ERR_IO, 14, "i/o error")                                       \
	X(KEEL_ERR_NOSPACE, 15, "no space left on device")                    \
	X(KEEL_ERR_UNKNOWN_NODE, 16, "unknown node id")                       \
	X(KEEL_ERR_COMPACTED, 17, "entry compacted")                          \
	X(KEEL_ERR_UNAVAILABLE, 18, "entry not available")                     \
	X(KEEL_ERR_NOT_FOUND, 19, "no such file")                             \
	X(KEEL_ERR_EXISTS, 20, "file exists")                                 \
	X(KEEL_ERR_POISONED, 21, "storage failed earlier; writes stopped")

enum keel_err {
#define KEEL_ERR_ENUM_(name, value, text) name = (value),
	KEEL_ERRORS(KEEL_ERR_ENUM_)
#undef KEEL_ERR_ENUM_
};

/* Returns a static string for a keel error code ("unknown error" otherwise). */
const char *keel_strerror(int err);

/* ---- assertions -------------------------------------------------------- */

/* KEEL_ASSERT stays on in release builds: a broken invariant in a
 * replicated store must stop the process, never continue silently.
 * KEEL_DASSERT is for O(n) checks and compiles away unless KEEL_DEBUG. */
void keel_assert_fail(const char *expr, const char *file, int line)
	__attribute__((noreturn));

#define KEEL_ASSERT(expr)                                                     \
	((expr) ? (void)0 : keel_assert_fail(#expr, __FILE__, __LINE__))

#ifdef KEEL_DEBUG
#define KEEL_DASSERT(expr) KEEL_ASSERT(expr)
#else
#define KEEL_DASSERT(expr) ((void)0)
#endif

#define KEEL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define KEEL_MIN(a, b) ((a) < (b) ? (a) : (b))
#define KEEL_MAX(a, b) ((a) > (b) ? (a) : (b))

/* ---- allocator --------------------------------------------------------- */

/* An injectable allocator. Pure modules (raft/, kv/, resp/) allocate only
 * through one of these, so tests can inject failures and count bytes.
 * realloc(ctx, NULL, n) allocates; free(ctx, NULL) is a no-op. */
struct keel_alloc {
	void *ctx;
	void *(*malloc)(void *ctx, size_t size);
	void *(*realloc)(void *ctx, void *ptr, size_t size);
	void (*free)(void *ctx, void *ptr);
};

/* The libc-backed allocator. */
extern const struct keel_alloc keel_alloc_libc;

/* ---- random ------------------------------------------------------------ */

/* xoshiro256** seeded through splitmix64: small, fast, and every instance
 * owns its own state, so a run is a function of its seeds. Never seeded
 * from the clock inside keel; callers print the seeds they use. */
struct keel_rand {
	uint64_t s[4];
};

void keel_rand_seed(struct keel_rand *r, uint64_t seed);
uint64_t keel_rand_next(struct keel_rand *r);
/* Uniform in [0, n); n > 0. */
uint64_t keel_rand_below(struct keel_rand *r, uint64_t n);
/* True with probability num/den. */
bool keel_rand_chance(struct keel_rand *r, uint64_t num, uint64_t den);

/* ---- checksums --------------------------------------------------------- */

/* CRC32C (Castagnoli), the checksum of every peer frame and log record.
 * crc is the running value: start with 0. */
uint32_t keel_crc32c(uint32_t crc, const void *buf, size_t len);
/* The same function by the portable tables, whatever the CPU (for the
 * test that both paths agree), and whether keel_crc32c uses the CPU's
 * crc32 instruction (SSE4.2) instead. */
uint32_t keel_crc32c_portable(uint32_t crc, const void *buf, size_t len);
bool keel_crc32c_hw(void);

/* Strict unsigned decimal: digits only (no sign, space or suffix), no
 * overflow, within [min, max]. True and *out set, or false. */
bool keel_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);
/* The same rule over bytes (a command argument): 1..20 digits. */
bool keel_parse_u64_bytes(const uint8_t *p, size_t len, uint64_t min,
			  uint64_t max, uint64_t *out);

/* FNV-1a of the bytes with A-Z folded to a-z: the hash of the command
 * tables' case-insensitive name indexes. */
uint32_t keel_lower_hash(const uint8_t *p, size_t len);

/* ---- little-endian codec helpers --------------------------------------- */

static inline void keel_put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static inline void keel_put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void keel_put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t keel_get_u16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t keel_get_u32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}
static inline uint64_t keel_get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

#endif /* KEEL_COMMON_H */
