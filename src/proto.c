#include "proto.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "conn.h"
#include "err.h"

int proto_on_open(conn *c)
{
    return ERR_OK;
}

void proto_on_close(conn *c)
{
    c->user = NULL;
}

static void send_or_close(conn *c, const char *data, size_t len)
{
    int rc = conn_send_text(c, data, len);
    if (rc == ERR_FULL) conn_close_ws(c, WS_CLOSE_TRY_AGAIN, "output queue full");
    else if (rc == ERR_NOMEM) conn_close_ws(c, WS_CLOSE_INTERNAL, "out of memory");
}

static void send_error(conn *c, const char *code, const char *message)
{
    char buf[256];
    int n = snprintf(buf, sizeof buf, "{\"type\":\"error\",\"code\":\"%s\",\"message\":\"%s\"}",
                     code, message);
    metrics_error(&c->t->m, ERR_INVALID);
    send_or_close(c, buf, (size_t)n);
}

void proto_on_text(conn *c, const char *data, size_t len)
{
    cJSON *msg = cJSON_ParseWithLength(data, len);
    if (!msg || !cJSON_IsObject(msg)) {
        cJSON_Delete(msg);
        send_error(c, "bad_json", "expected a JSON object");
        return;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(msg, "type");
    if (!cJSON_IsString(type)) send_error(c, "bad_request", "missing string field 'type'");
    else if (strcmp(type->valuestring, "ping") == 0) send_or_close(c, "{\"type\":\"pong\"}", 15);
    else if (strcmp(type->valuestring, "echo") == 0) send_or_close(c, data, len);
    else send_error(c, "unknown_type", "unknown message type");
    cJSON_Delete(msg);
}
