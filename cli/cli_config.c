/* The CLI's config file: "key=value" lines (server, user, token), mode 0600. */
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
    char buf[2048];
    int n = snprintf(buf, sizeof buf,
                     "# parley CLI configuration (written by parley login; keep it private)\n"
                     "server=%s\nuser=%s\ntoken=%s\n",
                     cfg->server, cfg->user, cfg->token);
    bool ok = n > 0 && (size_t)n < sizeof buf && write(fd, buf, (size_t)n) == n && fsync(fd) == 0;
    if (close(fd) < 0) ok = false;
    if (!ok || rename(tmp, cfg->path) < 0) {
        fprintf(stderr, "parley: cannot write %s: %s\n", cfg->path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}
