/*
 * resp_int.h -- helpers shared by the RESP request parser, the reply
 * encoder and the reply parser; not part of the public API.
 */
#ifndef KEEL_RESP_INT_H
#define KEEL_RESP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Strict decimal integer, as Redis's string2ll: an optional '-', then
 * digits with no leading zero (except "0" itself), nothing else, and the
 * value must fit in int64_t. Empty input fails. */
bool resp_parse_i64(const uint8_t *s, size_t n, int64_t *out);

/* Writes v in decimal to out (at least 20 bytes); returns the length. */
size_t resp_format_u64(uint64_t v, char *out);
size_t resp_format_i64(int64_t v, char *out);

#endif /* KEEL_RESP_INT_H */
