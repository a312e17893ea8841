/* rand.c -- xoshiro256** (Blackman & Vigna), seeded through splitmix64.
 * Per-instance state only: the same seed always gives the same sequence. */
#include "keel/common.h"

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

void keel_rand_seed(struct keel_rand *r, uint64_t seed)
{
	uint64_t x = seed;
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t keel_rand_next(struct keel_rand *r)
{
	uint64_t *s = r->s;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

uint64_t keel_rand_below(struct keel_rand *r, uint64_t n)
{
	KEEL_ASSERT(n > 0);
	/* Rejection sampling removes modulo bias. */
	uint64_t limit = UINT64_MAX - (UINT64_MAX % n);
	uint64_t v;
	do {
		v = keel_rand_next(r);
	} while (v >= limit);
	return v % n;
}

bool keel_rand_chance(struct keel_rand *r, uint64_t num, uint64_t den)
{
	KEEL_ASSERT(den > 0);
	if (num == 0)
		return false;
	return keel_rand_below(r, den) < num;
}
