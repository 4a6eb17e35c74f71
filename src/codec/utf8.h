/* utf8: an incremental, allocation-free UTF-8 validator (RFC 3629).
 *
 * Rejects overlong forms, surrogates (U+D800..U+DFFF), code points above
 * U+10FFFF and stray continuation bytes. Incremental: a sequence may be
 * split across calls (WebSocket fragments), and an invalid byte is reported
 * as soon as it is seen, not at the end of the message.
 */
#ifndef PARLEY_UTF8_H
#define PARLEY_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UTF8_ACCEPT 0u  /* at a code point boundary: valid so far */
#define UTF8_REJECT 1u  /* invalid: stays rejected */

/* Advances the validator state over s[0..n). Start with UTF8_ACCEPT.
 * Returns the new state: UTF8_ACCEPT at a boundary, UTF8_REJECT once
 * invalid, any other value in the middle of a multi-byte sequence. */
uint32_t utf8_feed(uint32_t state, const uint8_t *s, size_t n);

/* True if s[0..n) is complete, valid UTF-8. */
bool utf8_valid(const uint8_t *s, size_t n);

#endif
