/* static: mapping URL paths to files under the web root, safely.
 *
 * Pure path logic (unit-tested) plus one blocking read helper. A path is
 * percent-decoded and split into segments; "..", hidden segments (".git")
 * and NUL bytes are refused, "/" and ".../" mean index.html, and the file
 * found must still lie inside the root after symlinks are resolved.
 */
#ifndef PARLEY_STATIC_H
#define PARLEY_STATIC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/rbuf.h"

#define STATIC_MAX_FILE (16u * 1024 * 1024)

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
 * outside root) or ERR_TOO_LARGE (over STATIC_MAX_FILE). */
int static_open(const char *root, const char *full, static_file *f);

#endif
