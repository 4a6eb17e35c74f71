/* utf8: incremental UTF-8 validation with a small DFA.
 *
 * Every byte maps to one of 12 classes; the state and the class index a
 * transition table. States 0 (UTF8_ACCEPT) and 1 (UTF8_REJECT) are the
 * public ones; 2..8 mean "inside a multi-byte sequence" and record exactly
 * which continuation bytes are still allowed, so overlongs (E0 80..9F,
 * F0 80..8F), surrogates (ED A0..BF) and code points above U+10FFFF
 * (F4 90..BF) are refused at the first byte that makes them so.
 *
 * While at a boundary, runs of ASCII are skipped 8 bytes at a time.
 */
#include "codec/utf8.h"

#include <string.h>

/* Byte classes. */
enum {
    C_ASCII = 0, /* 00..7F */
    C_C80,       /* 80..8F continuation */
    C_C90,       /* 90..9F continuation */
    C_CA0,       /* A0..BF continuation */
    C_BAD,       /* C0 C1 F5..FF: never valid */
    C_L2,        /* C2..DF: lead of a 2-byte sequence */
    C_E0,        /* E0: 3-byte, second byte A0..BF (no overlong) */
    C_L3,        /* E1..EC EE EF: 3-byte */
    C_ED,        /* ED: 3-byte, second byte 80..9F (no surrogate) */
    C_F0,        /* F0: 4-byte, second byte 90..BF (no overlong) */
    C_L4,        /* F1..F3: 4-byte */
    C_F4,        /* F4: 4-byte, second byte 80..8F (<= U+10FFFF) */
    NCLASS
};

/* States beyond ACCEPT (0) and REJECT (1). */
enum {
    S_NEED1 = 2, /* one continuation 80..BF left */
    S_NEED2,     /* two left */
    S_NEED3,     /* three left */
    S_E0,        /* after E0: A0..BF, then one more */
    S_ED,        /* after ED: 80..9F, then one more */
    S_F0,        /* after F0: 90..BF, then two more */
    S_F4,        /* after F4: 80..8F, then two more */
    NSTATE
};

#define A UTF8_ACCEPT
#define R UTF8_REJECT

static const uint8_t utf8_class[256] = {
    /* 00..7F */
    0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,
    0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,
    0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,
    0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,
    /* 80..8F */
    1,1,1,1,1,1,1,1, 1,1,1,1,1,1,1,1,
    /* 90..9F */
    2,2,2,2,2,2,2,2, 2,2,2,2,2,2,2,2,
    /* A0..BF */
    3,3,3,3,3,3,3,3, 3,3,3,3,3,3,3,3, 3,3,3,3,3,3,3,3, 3,3,3,3,3,3,3,3,
    /* C0..DF */
    4,4,5,5,5,5,5,5, 5,5,5,5,5,5,5,5, 5,5,5,5,5,5,5,5, 5,5,5,5,5,5,5,5,
    /* E0..EF */
    6,7,7,7,7,7,7,7, 7,7,7,7,7,8,7,7,
    /* F0..FF */
    9,10,10,10,11,4,4,4, 4,4,4,4,4,4,4,4,
};

static const uint8_t utf8_next[NSTATE][NCLASS] = {
    /*            ASC C80 C90 CA0 BAD L2       E0    L3       ED    F0    L4       F4 */
    [A]       = { A,  R,  R,  R,  R,  S_NEED1, S_E0, S_NEED2, S_ED, S_F0, S_NEED3, S_F4 },
    [R]       = { R,  R,  R,  R,  R,  R,       R,    R,       R,    R,    R,       R    },
    [S_NEED1] = { R,  A,  A,  A,  R,  R,       R,    R,       R,    R,    R,       R    },
    [S_NEED2] = { R,  S_NEED1, S_NEED1, S_NEED1, R, R, R, R,  R,    R,    R,       R    },
    [S_NEED3] = { R,  S_NEED2, S_NEED2, S_NEED2, R, R, R, R,  R,    R,    R,       R    },
    [S_E0]    = { R,  R,  R,  S_NEED1, R, R,   R,    R,       R,    R,    R,       R    },
    [S_ED]    = { R,  S_NEED1, S_NEED1, R, R,  R,    R,       R,    R,    R,       R,   R },
    [S_F0]    = { R,  R,  S_NEED2, S_NEED2, R, R, R,   R,       R,    R,    R,       R    },
    [S_F4]    = { R,  S_NEED2, R, R,  R,  R,       R,    R,       R,    R,    R,       R    },
};

#undef A
#undef R

#define HIGH_BITS 0x8080808080808080ull

uint32_t utf8_feed(uint32_t state, const uint8_t *s, size_t n)
{
    if (state >= NSTATE)
        return UTF8_REJECT; /* not a state this module produced */
    if (state == UTF8_REJECT)
        return UTF8_REJECT;
    size_t i = 0;
    while (i < n) {
        if (state == UTF8_ACCEPT) {
            /* Fast path: skip ASCII, a word at a time, then bytewise up to
             * the first byte with the high bit set. */
            while (n - i >= 8) {
                uint64_t w;
                memcpy(&w, s + i, 8);
                if (w & HIGH_BITS)
                    break;
                i += 8;
            }
            while (i < n && s[i] < 0x80)
                i++;
            if (i == n)
                break;
        }
        state = utf8_next[state][utf8_class[s[i++]]];
        if (state == UTF8_REJECT)
            return UTF8_REJECT; /* fail fast: stop at the first bad byte */
    }
    return state;
}

bool utf8_valid(const uint8_t *s, size_t n)
{
    return utf8_feed(UTF8_ACCEPT, s, n) == UTF8_ACCEPT;
}
