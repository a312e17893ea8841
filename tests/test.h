/*
 * test.h -- a tiny test harness: TEST(name) { ... } registers a test,
 * EXPECT/ASSERT check conditions, main() runs every test (or those whose
 * name contains argv[1]) and prints "N passed, M failed".
 *
 * Random tests take their seed from KEEL_SEED when set, print it, and never
 * seed from the clock.
 */
#ifndef KEEL_TEST_H
#define KEEL_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*test_fn)(void);
struct test_case {
	const char *name;
	test_fn fn;
};

#define TEST_MAX 512
static struct test_case test_cases_[TEST_MAX];
static int test_count_;
static int test_failed_now_;

static inline void test_register_(const char *name, test_fn fn)
{
	if (test_count_ >= TEST_MAX) {
		fprintf(stderr, "too many tests\n");
		exit(2);
	}
	test_cases_[test_count_].name = name;
	test_cases_[test_count_].fn = fn;
	test_count_++;
}

#define TEST(name)                                                            \
	static void test_##name(void);                                        \
	__attribute__((constructor)) static void test_reg_##name(void)        \
	{                                                                     \
		test_register_(#name, test_##name);                           \
	}                                                                     \
	static void test_##name(void)

#define EXPECT(cond)                                                          \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "  %s:%d: expected %s\n", __FILE__,   \
				__LINE__, #cond);                             \
			test_failed_now_ = 1;                                 \
		}                                                             \
	} while (0)

#define ASSERT(cond)                                                          \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "  %s:%d: assertion %s\n", __FILE__,  \
				__LINE__, #cond);                             \
			test_failed_now_ = 1;                                 \
			return;                                               \
		}                                                             \
	} while (0)

#define EXPECT_EQ_U64(a, b)                                                   \
	do {                                                                  \
		uint64_t a_ = (uint64_t)(a), b_ = (uint64_t)(b);              \
		if (a_ != b_) {                                               \
			fprintf(stderr,                                       \
				"  %s:%d: %s == %s: %" PRIu64 " != %" PRIu64  \
				"\n",                                         \
				__FILE__, __LINE__, #a, #b, a_, b_);          \
			test_failed_now_ = 1;                                 \
		}                                                             \
	} while (0)

/* The seed for random tests: KEEL_SEED or the given default. Printed. */
static inline uint64_t test_seed(uint64_t dflt)
{
	const char *s = getenv("KEEL_SEED");
	uint64_t seed = s ? strtoull(s, NULL, 10) : dflt;
	fprintf(stderr, "  seed=%" PRIu64 " (replay with KEEL_SEED=%" PRIu64
			")\n",
		seed, seed);
	return seed;
}

#ifndef TEST_NO_MAIN
int main(int argc, char **argv)
{
	int passed = 0, failed = 0;
	const char *filter = argc > 1 ? argv[1] : NULL;
	for (int i = 0; i < test_count_; i++) {
		if (filter && !strstr(test_cases_[i].name, filter))
			continue;
		test_failed_now_ = 0;
		test_cases_[i].fn();
		if (test_failed_now_) {
			printf("FAIL %s\n", test_cases_[i].name);
			failed++;
		} else {
			printf("ok   %s\n", test_cases_[i].name);
			passed++;
		}
		fflush(stdout);
	}
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
#endif

#endif /* KEEL_TEST_H */
