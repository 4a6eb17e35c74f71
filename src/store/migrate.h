/* migrate: grows an embedded store into a PostgreSQL database
 * (`parleyd migrate --from DATA_DIR --to postgresql://...`, README.md,
 * docs/cluster.md "Growing from embedded to cluster").
 *
 * migrate_run():
 *   1. refuses a DATA_DIR without data.mdb (ERR_NOT_FOUND: not a store),
 *      connects to the database (ERR_UNAVAILABLE) and brings its schema
 *      up to date with pg_schema_migrate() (ERR_VERSION: newer);
 *   2. opens the store through the embedded backend (db_lmdb) and closes
 *      it: that replays the message log (DATA_DIR/log) into LMDB, so acked
 *      messages not yet applied are copied too; the store's lock refuses
 *      a store a running parleyd holds (ERR_BUSY), another format version
 *      is ERR_VERSION;
 *   3. reads the store (store.h, one read transaction, the lock held) and,
 *      when the database holds no users and no conversations, copies
 *      users, sessions, conversations, directs, members and messages with
 *      COPY, streamed (bounded memory), all in one transaction (so a
 *      failed run leaves the database as it found it), keeping every id,
 *      then moves the identity sequences past the store's highest ids;
 *      a database that already holds data is not written: it is verified;
 *   4. verifies, in one repeatable-read snapshot, every row of the
 *      database against the store, in key order, both streamed: counts of
 *      users, sessions, conversations, directs, members and messages, each
 *      user, session, conversation, direct and member field by field, and
 *      per conversation a SHA-256 over its messages (seq, sender, ts,
 *      cmid, body in seq order) computed on each side. A database that
 *      held data and matches is the store migrated before: ERR_OK with
 *      r->already; one that differs is refused (ERR_CONFLICT), a mismatch
 *      after our own copy is ERR_CORRUPT; err names the first difference
 *      (the conversation, for members and messages).
 *
 * migrate_main() is the subcommand: its flags, the summary on out, the
 * error on errout; returns the exit status (0 done, 1 failed, 2 usage).
 *
 * Ownership: every string is the caller's, borrowed for the call.
 * Threads: the calling thread (the embedded backend's own threads run
 * only while step 2 replays the log).
 */
#ifndef PARLEY_MIGRATE_H
#define PARLEY_MIGRATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct migrate_counts {
    uint64_t users, sessions, convs, directs, members, messages;
} migrate_counts;

typedef struct migrate_report {
    migrate_counts copied;     /* rows written (all 0 when already) */
    migrate_counts verified;   /* rows that matched */
    bool already;              /* the database held this store: nothing copied */
    uint64_t checksums;        /* conversations whose message checksums matched */
    double copy_s, verify_s;   /* seconds */
    uint64_t clock;            /* the store clock: clients' inbox cursors are below it */
} migrate_report;

/* See above. err (cap bytes) gets the reason of a failure. */
int migrate_run(const char *data_dir, const char *url, migrate_report *r, char *err, size_t cap);

/* argv[0] is "migrate". */
int migrate_main(int argc, char **argv, FILE *out, FILE *errout);

#endif
