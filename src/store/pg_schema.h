/* pg_schema: the PostgreSQL backend's schema (db_pg.c), as numbered
 * migrations kept in this repository (pg_schema.c), applied at start.
 *
 * pg_schema_migrate() takes a transaction-level advisory lock (several
 * nodes may start at once: one migrates, the others wait and find it
 * done), reads the version in parley_schema, applies every migration
 * after it in the same transaction, and records the new version. A
 * database whose version is newer than this binary knows is refused
 * (ERR_VERSION) and left untouched: run the newer parleyd, or restore.
 *
 * What the schema holds, and the rules its functions decide (the same as
 * the embedded backend's, db_lmdb.c), are written beside each migration.
 *
 * Threads: the caller's connection, not shared while it runs.
 */
#ifndef PARLEY_PG_SCHEMA_H
#define PARLEY_PG_SCHEMA_H

#include <stddef.h>

#include <libpq-fe.h>

/* The newest schema version this binary knows. */
int pg_schema_version(void);

/* Brings the database to pg_schema_version(). ERR_OK; ERR_VERSION (newer:
 * *found set); ERR_IO (the server's message in err). */
int pg_schema_migrate(PGconn *c, int *found, char *err, size_t cap);

#endif
