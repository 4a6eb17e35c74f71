/* The CLI's config file: "key=value" lines, mode 0600: server, user and
 * token of the last login, and one "device_key=SERVER USER KEY" line per
 * server and user that logged in (docs/protocol.md "Failed logins and known
 * devices"). SERVER is what --server named: one URL or a comma-separated
 * list of a cluster's nodes (kept normalized, so that "http://a/, http://b"
 * and "http://a,http://b" are one key). */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static void set_field(char *dst, size_t cap, const char *v)
{
    size_t n = strlen(v);
    if (n >= cap) n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = 0;
}

/* Servers compare entry by entry without the blanks around an entry and
 * without its trailing '/', joined by ','; users in lowercase (as the
 * server keeps them). Both false if either does not fit (or a server entry
 * is empty or has a space or control character inside). */
static bool norm_server(char *out, size_t cap, const char *server)
{
    size_t pos = 0;
    const char *p = server;
    for (;;) {
        const char *end = strchr(p, ',');
        if (!end) end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && (*a == ' ' || *a == '\t')) a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t')) b--;
        while (b - a > 1 && b[-1] == '/') b--;
        size_t n = (size_t)(b - a);
        if (n == 0 || pos + n + 1 >= cap) return false;
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)a[i] < 0x21 || a[i] == 0x7f) return false;
        if (pos) out[pos++] = ',';
        memcpy(out + pos, a, n);
        pos += n;
        if (!*end) break;
        p = end + 1;
    }
    out[pos] = 0;
    return true;
}

/* True if two normalized server lists name a server in common. */
static bool share_server(const char *x, const char *y)
{
    for (const char *a = x; *a;) {
        size_t an = strcspn(a, ",");
        for (const char *b = y; *b;) {
            size_t bn = strcspn(b, ",");
            if (an == bn && memcmp(a, b, an) == 0) return true;
            b += bn + (b[bn] == ',');
        }
        a += an + (a[an] == ',');
    }
    return false;
}

static bool norm_user(char *out, size_t cap, const char *user)
{
    size_t n = strlen(user);
    if (n == 0 || n >= cap) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = user[i];
        if ((unsigned char)ch < 0x21 || (unsigned char)ch >= 0x7f) return false;
        out[i] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
    }
    out[n] = 0;
    return true;
}

static bool key_ok(const char *key)
{
    size_t n = strlen(key);
    if (n == 0 || n >= PARLEY_DEVICE_KEY_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = key[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_'))
            return false;
    }
    return true;
}

static cli_device_key *find_key(cli_config *cfg, const char *server, const char *user)
{
    for (size_t i = 0; i < cfg->nkeys; i++)
        if (strcmp(cfg->keys[i].server, server) == 0 && strcmp(cfg->keys[i].user, user) == 0)
            return &cfg->keys[i];
    return NULL;
}

const char *cli_config_device_key(const cli_config *cfg, const char *server, const char *user)
{
    char sv[sizeof cfg->keys[0].server], us[PARLEY_USER_MAX];
    if (!norm_server(sv, sizeof sv, server) || !norm_user(us, sizeof us, user)) return NULL;
    const cli_device_key *k = find_key((cli_config *)cfg, sv, us);
    if (k) return k->key;
    /* Else the newest key of a list that shares a server with this one: the
     * nodes of a cluster share their accounts, so the key of a login
     * through "http://a,http://b" is as good through "http://b" alone. */
    for (size_t i = cfg->nkeys; i-- > 0;)
        if (strcmp(cfg->keys[i].user, us) == 0 && share_server(cfg->keys[i].server, sv))
            return cfg->keys[i].key;
    return NULL;
}

void cli_config_set_device_key(cli_config *cfg, const char *server, const char *user,
                               const char *key)
{
    cli_device_key nk;
    if (!norm_server(nk.server, sizeof nk.server, server) ||
        !norm_user(nk.user, sizeof nk.user, user) || !key_ok(key))
        return;
    set_field(nk.key, sizeof nk.key, key);
    /* The newest goes last: drop the old entry (or the oldest when full). */
    cli_device_key *old = find_key(cfg, nk.server, nk.user);
    size_t drop = old ? (size_t)(old - cfg->keys) : cfg->nkeys == CLI_MAX_DEVICE_KEYS ? 0 : SIZE_MAX;
    if (drop != SIZE_MAX) {
        memmove(&cfg->keys[drop], &cfg->keys[drop + 1],
                (cfg->nkeys - drop - 1) * sizeof cfg->keys[0]);
        cfg->nkeys--;
    }
    cfg->keys[cfg->nkeys++] = nk;
}

/* "SERVER USER KEY" (split at the last two spaces). */
static void load_device_key(cli_config *cfg, char *v)
{
    char *sp2 = strrchr(v, ' ');
    if (!sp2) return;
    *sp2 = 0;
    char *sp1 = strrchr(v, ' ');
    if (!sp1) return;
    *sp1 = 0;
    cli_config_set_device_key(cfg, v, sp1 + 1, sp2 + 1);
}

int cli_config_load(cli_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    const char *env = getenv("PARLEY_CONFIG");
    if (env && *env) {
        if (strlen(env) >= sizeof cfg->path) {
            fprintf(stderr, "parley: PARLEY_CONFIG is too long\n");
            return -1;
        }
        set_field(cfg->path, sizeof cfg->path, env);
    } else {
        const char *home = getenv("HOME");
        if (!home || !*home) {
            struct passwd *pw = getpwuid(getuid());
            home = pw ? pw->pw_dir : NULL;
        }
        if (!home) {
            fprintf(stderr, "parley: no home directory: set PARLEY_CONFIG\n");
            return -1;
        }
        if ((size_t)snprintf(cfg->path, sizeof cfg->path, "%s/.config/parley/config", home) >=
            sizeof cfg->path) {
            fprintf(stderr, "parley: the config path is too long\n");
            return -1;
        }
    }
    FILE *f = fopen(cfg->path, "r");
    if (!f) {
        if (errno == ENOENT) return 0;
        fprintf(stderr, "parley: cannot read %s: %s\n", cfg->path, strerror(errno));
        return -1;
    }
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (!n || line[0] == '#') continue;
        char *eq = strchr(line, '=');
        if (!eq) continue;
        *eq = 0;
        const char *k = line, *v = eq + 1;
        if (strcmp(k, "server") == 0) set_field(cfg->server, sizeof cfg->server, v);
        else if (strcmp(k, "user") == 0) set_field(cfg->user, sizeof cfg->user, v);
        else if (strcmp(k, "token") == 0) set_field(cfg->token, sizeof cfg->token, v);
        else if (strcmp(k, "device_key") == 0) load_device_key(cfg, eq + 1);
    }
    fclose(f);
    return 0;
}

/* mkdir -p of path's parent directories (new ones 0700). */
static int make_parents(const char *path)
{
    char tmp[4096];
    set_field(tmp, sizeof tmp, path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0700) < 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return 0;
}

int cli_config_save(const cli_config *cfg)
{
    if (make_parents(cfg->path) < 0) {
        fprintf(stderr, "parley: cannot create the directory of %s: %s\n", cfg->path, strerror(errno));
        return -1;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp%ld", cfg->path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "parley: cannot write %s: %s\n", tmp, strerror(errno));
        return -1;
    }
    fchmod(fd, 0600); /* whatever the umask */
    static char buf[2048 + CLI_MAX_DEVICE_KEYS * sizeof(cli_device_key)];
    int n = snprintf(buf, sizeof buf,
                     "# parley CLI configuration (written by parley login; keep it private)\n"
                     "server=%s\nuser=%s\ntoken=%s\n",
                     cfg->server, cfg->user, cfg->token);
    for (size_t i = 0; i < cfg->nkeys && n > 0 && (size_t)n < sizeof buf; i++)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "device_key=%s %s %s\n",
                      cfg->keys[i].server, cfg->keys[i].user, cfg->keys[i].key);
    bool ok = n > 0 && (size_t)n < sizeof buf && write(fd, buf, (size_t)n) == n && fsync(fd) == 0;
    if (close(fd) < 0) ok = false;
    if (!ok || rename(tmp, cfg->path) < 0) {
        fprintf(stderr, "parley: cannot write %s: %s\n", cfg->path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}
