#include "net/static.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/err.h"
#include "codec/http.h"

int static_join(const char *root, const char *path, size_t path_len, char *out, size_t cap)
{
    char dec[1024];
    if (path_len == 0 || path[0] != '/') return ERR_INVALID;
    int n = http_percent_decode(path, path_len, dec, sizeof dec - 16);
    if (n < 0) return n == ERR_TOO_LARGE ? ERR_TOO_LARGE : ERR_INVALID;
    dec[n] = 0;
    /* Every segment must be a plain name: no "", ".", ".." or hidden. */
    for (char *seg = dec + 1;;) {
        char *end = strchr(seg, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if (len == 0 && end) return ERR_INVALID;  /* "//" */
        if (len > 0 && seg[0] == '.') return ERR_INVALID;
        if (memchr(seg, '\\', len)) return ERR_INVALID;
        if (!end) break;
        seg = end + 1;
    }
    if (dec[n - 1] == '/') {
        memcpy(dec + n, "index.html", 11);
        n += 10;
    }
    size_t rl = strlen(root);
    while (rl > 1 && root[rl - 1] == '/') rl--;
    if (rl + (size_t)n + 1 > cap) return ERR_TOO_LARGE;
    memcpy(out, root, rl);
    memcpy(out + rl, dec, (size_t)n + 1);
    return (int)(rl + (size_t)n);
}

static const struct { const char *ext, *type; } types[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"webmanifest", "application/manifest+json"},
    {"txt", "text/plain; charset=utf-8"},
    {"md", "text/markdown; charset=utf-8"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"ico", "image/x-icon"},
    {"wasm", "application/wasm"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
};

const char *static_content_type(const char *file)
{
    const char *slash = strrchr(file, '/');
    const char *dot = strrchr(slash ? slash : file, '.');
    if (dot)
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcasecmp(dot + 1, types[i].ext) == 0) return types[i].type;
    return "application/octet-stream";
}

int static_open(const char *root, const char *full, static_file *f)
{
    char rroot[PATH_MAX], rfull[PATH_MAX];
    if (!realpath(root, rroot) || !realpath(full, rfull)) return ERR_NOT_FOUND;
    size_t rl = strlen(rroot);
    if (strncmp(rfull, rroot, rl) != 0 || (rfull[rl] != '/' && rfull[rl] != 0))
        return ERR_NOT_FOUND;
    /* Never open what is not a regular file: a FIFO's open() waits for a
     * writer, a device's may do anything. */
    struct stat st;
    if (stat(rfull, &st) != 0 || !S_ISREG(st.st_mode)) return ERR_NOT_FOUND;
    int fd = open(rfull, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) return ERR_NOT_FOUND;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) { close(fd); return ERR_NOT_FOUND; }
    if ((uint64_t)st.st_size > STATIC_MAX_FILE) { close(fd); return ERR_TOO_LARGE; }
    f->fd = fd;
    f->size = (uint64_t)st.st_size;
    snprintf(f->etag, sizeof f->etag, "\"%llx-%llx\"", (unsigned long long)st.st_size,
             (unsigned long long)st.st_mtim.tv_sec * 1000000000ull +
                 (unsigned long long)st.st_mtim.tv_nsec);
    return ERR_OK;
}

/* ---- loads on the thread pool ---------------------------------------------------- */

static void load_work(uv_work_t *w)
{
    static_load *l = w->data;
    l->rc = static_open(l->root, l->full, &l->file);
    if (l->rc < 0) return;
    if (l->inm[0] && strcmp(l->inm, l->file.etag) == 0) {
        l->not_modified = true;
    } else if (!l->head) {
        l->body = malloc(l->file.size ? l->file.size : 1);
        uint64_t got = 0;
        while (l->body && got < l->file.size) {
            ssize_t n = pread(l->file.fd, l->body + got, l->file.size - got, (off_t)got);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break; /* an error, or the file shrank meanwhile */
            got += (uint64_t)n;
        }
        if (!l->body || got != l->file.size) {
            l->rc = l->body ? ERR_IO : ERR_NOMEM;
            free(l->body);
            l->body = NULL;
        }
    }
    close(l->file.fd);
    l->file.fd = -1;
}

static void load_after(uv_work_t *w, int status)
{
    static_load *l = w->data;
    if (status == UV_ECANCELED) l->rc = ERR_CLOSED;
    l->done(l);
}

int static_load_start(uv_loop_t *loop, static_load *l)
{
    l->work.data = l;
    l->rc = ERR_IO;
    l->not_modified = false;
    l->body = NULL;
    l->file.fd = -1;
    return uv_queue_work(loop, &l->work, load_work, load_after) == 0 ? ERR_OK : ERR_BUSY;
}

void static_load_free(static_load *l)
{
    if (!l) return;
    free(l->body);
    free(l);
}
