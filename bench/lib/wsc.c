#include "lib/wsc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client_http.h"
#include "lib/util.h"

#define MAX_QUEUED (64u << 20)

/* The key is fixed: the generator proves nothing to itself by varying it,
 * and the answer is still checked. */
static const char KEY[] = "dGhlIHNhbXBsZSBub25jZQ==";
static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

void wsc_init(wsc *c, uint32_t idx)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->idx = idx;
    c->pair = -1;
    client_backoff_init(&c->bo, 1000, 60000);
}

int wsc_connect(wsc *c, const sock_target *t, int src_i)
{
    c->t0 = now_ns();
    c->fd = sock_connect(t, src_i, true);
    if (c->fd < 0) return ERR_IO;
    c->st = WSC_CONNECTING;
    return ERR_OK;
}

int wsc_send_upgrade(wsc *c, const sock_target *t)
{
    char path[64], req[768];
    if (c->pair >= 0) snprintf(path, sizeof path, "/v1/ws?pair=%lld", (long long)c->pair);
    else snprintf(path, sizeof path, "/v1/ws");
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Protocol: parley.v1.json\r\n%s%s%s\r\n",
                     path, t->host, t->port, KEY, c->tok ? "Authorization: Bearer " : "",
                     c->tok ? c->tok : "", c->tok ? "\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof req) return ERR_IO;
    c->st = WSC_HANDSHAKE;
    return wsc_write(c, req, (size_t)n);
}

int wsc_parse_upgrade(wsc *c, wsc_upgrade *u)
{
    client_http_response r;
    int n = client_http_parse_response((char *)c->in, c->in_len, false, false, 1u << 20, &r);
    if (n == ERR_AGAIN) return ERR_AGAIN;
    if (n < 0) return ERR_PROTOCOL;
    u->status = r.status;
    u->retry_after_ms = client_http_retry_after_ms(&r);
    if (r.status != 101) return ERR_PROTOCOL;
    char want[29];
    const http_str *acc = client_http_header(&r, "Sec-WebSocket-Accept");
    if (ws_accept_key(KEY, sizeof KEY - 1, want) != ERR_OK || !acc || acc->n != 28 ||
        memcmp(acc->p, want, 28) != 0)
        return ERR_PROTOCOL;
    memmove(c->in, c->in + n, c->in_len - (size_t)n);
    c->in_len -= (uint32_t)n;
    return n;
}

int wsc_write(wsc *c, const void *data, size_t len)
{
    if (c->fd < 0) return ERR_IO;
    if (!c->out_len) {
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
        if (n == (ssize_t)len) return ERR_OK;
        if (n < 0) {
            if (errno != EAGAIN) return ERR_IO;
            n = 0;
        }
        data = (const uint8_t *)data + n;
        len -= (size_t)n;
    }
    if (c->out_len + len > MAX_QUEUED) return ERR_IO;
    if (c->out_cap < c->out_len + len) {
        c->out_cap = (uint32_t)((c->out_len + len) * 2);
        c->out = xrealloc(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += (uint32_t)len;
    return ERR_OK;
}

int wsc_send_frame(wsc *c, uint8_t opcode, const void *payload, size_t n)
{
    uint8_t stackbuf[2048];
    uint8_t *f = n + WS_MAX_HEADER <= sizeof stackbuf ? stackbuf : xcalloc(1, n + WS_MAX_HEADER);
    size_t h = ws_frame_header(f, opcode, true, n, MASK);
    memcpy(f + h, payload, n);
    ws_mask(f + h, n, MASK, 0);
    int rc = wsc_write(c, f, h + n);
    if (f != stackbuf) free(f);
    return rc;
}

int wsc_flush(wsc *c)
{
    while (c->out_len) {
        ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
        if (n < 0 && errno == EAGAIN) return ERR_AGAIN;
        if (n <= 0) return ERR_IO;
        memmove(c->out, c->out + n, c->out_len - (size_t)n);
        c->out_len -= (uint32_t)n;
    }
    return ERR_OK;
}

void wsc_keep_input(wsc *c, const uint8_t *data, size_t n)
{
    if (c->in_cap < c->in_len + n) {
        c->in_cap = (uint32_t)((c->in_len + n) * 2 + 1024);
        c->in = xrealloc(c->in, c->in_cap);
    }
    memcpy(c->in + c->in_len, data, n);
    c->in_len += (uint32_t)n;
}

int wsc_parse_frame(uint8_t *buf, size_t len, ws_frame *f, uint16_t *close_code)
{
    const ws_limits lim = {.max_message = MAX_QUEUED};
    return ws_parse_frame(buf, len, WS_CLIENT, &lim, f, close_code);
}

void wsc_close(wsc *c, bool rst)
{
    if (c->fd >= 0) {
        if (rst) {
            struct linger lg = {1, 0};
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        close(c->fd);
    }
    c->fd = -1;
    free(c->in);
    free(c->out);
    c->in = c->out = NULL;
    c->in_len = c->in_cap = c->out_len = c->out_cap = 0;
    c->outstanding = 0;
}
