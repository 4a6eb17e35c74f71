/* static: mapping URL paths to files under the web root, safely.
 *
 * Pure path logic (unit-tested), a blocking open helper, and a load that
 * runs it off the loop. A path is percent-decoded and split into segments;
 * "..", hidden segments (".git") and NUL bytes are refused, "/" and ".../"
 * mean index.html, and the file found must still lie inside the root after
 * symlinks are resolved. Only regular files are served: a named pipe, a
 * device, a socket or a directory is "not found", and is never opened in a
 * way that could block (a FIFO's open() waits for a writer).
 */
#ifndef PARLEY_STATIC_H
#define PARLEY_STATIC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <stdbool.h>
#include <uv.h>

#include "base/rbuf.h"

#define STATIC_MAX_FILE (16u * 1024 * 1024)
#define STATIC_PATH_MAX 1536   /* room for static_join's result */

/* Joins root and the URL path (raw, not yet decoded) into out (cap bytes,
 * NUL-terminated). Returns the length, ERR_INVALID for a path that must not
 * be served (traversal, hidden segment, bad escape, not starting with '/'),
 * or ERR_TOO_LARGE. Does not touch the file system. */
int static_join(const char *root, const char *path, size_t path_len, char *out, size_t cap);

/* The Content-Type for a file name, by extension; never NULL. */
const char *static_content_type(const char *file);

typedef struct static_file {
    int fd;              /* open, read-only */
    uint64_t size;
    char etag[48];       /* quoted: "\"<size>-<mtime ns>\"" */
} static_file;

/* Opens a regular file inside root: resolves symlinks and checks that the
 * real path is still under root's real path. Returns ERR_OK with *f (the
 * caller closes f->fd), ERR_NOT_FOUND (missing, not a regular file, or
 * outside root) or ERR_TOO_LARGE (over STATIC_MAX_FILE). The real path is
 * stat'ed first, so a non-regular file is not even opened; the open is
 * O_NONBLOCK and checked again with fstat (a FIFO swapped in meanwhile
 * cannot block it). Blocking disk I/O all the same: the server calls it
 * only through static_load_start(), off its loops. */
int static_open(const char *root, const char *full, static_file *f);

/* One file read on libuv's thread pool: open, fstat and read run there,
 * and `done` runs on the thread of the loop the load was started on. The
 * caller allocates the struct (it may embed it first in its own, to find
 * its context in `done`), fills the inputs, and frees it in `done` with
 * static_load_free(). */
typedef struct static_load static_load;
struct static_load {
    uv_work_t work;                    /* libuv's request */
    void (*done)(static_load *l);      /* on the loop's thread, exactly once */
    /* inputs */
    const char *root;                  /* web root (borrowed; outlives the load) */
    char full[STATIC_PATH_MAX];        /* the file: static_join's result */
    char inm[64];                      /* If-None-Match, "" if none or too long */
    bool head;                         /* HEAD: the body is not read */
    /* results */
    int rc;                            /* ERR_OK, as static_open(), or ERR_IO (read
                                        * failed), ERR_NOMEM, ERR_CLOSED (cancelled) */
    bool not_modified;                 /* inm equals file.etag: the body is not read */
    static_file file;                  /* size and etag (file.fd is closed) */
    char *body;                        /* file.size bytes when read (owned), or NULL */
};

/* Queues the load. ERR_OK: `done` will run; ERR_BUSY: it was not queued
 * (and `done` will not run). */
int static_load_start(uv_loop_t *loop, static_load *l);
/* Frees l's body and l itself (malloc'd by the caller). */
void static_load_free(static_load *l);

#endif
