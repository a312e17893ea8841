/*
 * glob.c -- Redis's glob patterns for KEYS and SCAN MATCH: '*', '?',
 * '[abc]', '[^a]', '[a-z]' (reversed ranges allowed), '\' escapes.
 *
 * Single-character matchers follow Redis's stringmatchlen byte for byte,
 * including its edge cases (an unterminated '[' class ends at the pattern's
 * end; "[^" alone matches any byte; in "[a-]" the ']' is the range's end).
 * Redis reads its NUL terminator past the pattern end; kv_pat_at returns 0
 * there to stay in bounds with the same result.
 *
 * Unlike Redis's recursive '*', stars use the classic greedy two-pointer
 * backtrack: every other token consumes exactly one byte, so returning to
 * the last star is enough, and the match is O(len(pattern) * len(key))
 * worst case instead of exponential.
 */
#include "kv/kv_internal.h"

static uint8_t kv_pat_at(const uint8_t *pat, size_t plen, size_t i)
{
	return i < plen ? pat[i] : 0;
}

/* Matches one non-star token at pat[*pi] against byte ch; advances *pi
 * past the token. */
static bool kv_glob_one(const uint8_t *pat, size_t plen, size_t *pi,
			uint8_t ch)
{
	size_t i = *pi;
	uint8_t t = pat[i];
	if (t == '?') {
		*pi = i + 1;
		return true;
	}
	if (t == '[') {
		i++;
		bool neg = kv_pat_at(pat, plen, i) == '^';
		if (neg)
			i++;
		bool match = false;
		for (;;) {
			if (i < plen && pat[i] == '\\' && plen - i >= 2) {
				i++;
				if (pat[i] == ch)
					match = true;
			} else if (i < plen && pat[i] == ']') {
				break;
			} else if (i >= plen) {
				/* Unterminated: the class ends with the pattern. */
				break;
			} else if (plen - i >= 3 && pat[i + 1] == '-') {
				uint8_t lo = pat[i], hi = pat[i + 2];
				if (lo > hi) {
					uint8_t tmp = lo;
					lo = hi;
					hi = tmp;
				}
				i += 2;
				if (ch >= lo && ch <= hi)
					match = true;
			} else if (pat[i] == ch) {
				match = true;
			}
			i++;
		}
		*pi = i < plen ? i + 1 : plen;
		return neg ? !match : match;
	}
	if (t == '\\' && plen - i >= 2) {
		i++;
		t = pat[i];
	}
	*pi = i + 1;
	return t == ch;
}

bool kv_glob_match(const uint8_t *pat, size_t plen, const uint8_t *str,
		   size_t slen)
{
	size_t p = 0, s = 0;
	bool star = false;
	size_t star_p = 0, star_s = 0;
	while (s < slen) {
		if (p < plen && pat[p] == '*') {
			while (p < plen && pat[p] == '*')
				p++;
			if (p == plen)
				return true;
			star = true;
			star_p = p;
			star_s = s;
			continue;
		}
		if (p < plen) {
			size_t q = p;
			if (kv_glob_one(pat, plen, &q, str[s])) {
				p = q;
				s++;
				continue;
			}
		}
		if (!star)
			return false;
		/* Let the last star swallow one more byte and retry. */
		star_s++;
		s = star_s;
		p = star_p;
	}
	while (p < plen && pat[p] == '*')
		p++;
	return p == plen;
}
