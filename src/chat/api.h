/* api: the REST API under /v1/ (docs/protocol.md, "Accounts" and
 * "Conversations"). JSON in, JSON out; errors as
 * {"error":{"code":...,"message":...}} with their HTTP status. Requests
 * that need the storage writer or the password KDF hold the connection
 * (conn_hold) and answer from a completion on the connection's thread.
 */
#ifndef PARLEY_API_H
#define PARLEY_API_H

#include <stdbool.h>

#include "net/conn.h"
#include "codec/http.h"

/* Computes the dummy hash that equalises login timing. Once, at start-up. */
int api_init(void);

/* Answers with {"error":{"code":...,"message":...}} and the status of
 * err's row in the error table (err.h), counted in the metrics. message
 * NULL: the row's message; extra: header lines (NULL: WWW-Authenticate for
 * 401, Retry-After: 1 for 503); head: no body (HEAD); retry_ms >= 0 adds
 * "retry_after_ms". */
void api_send_error(conn *c, bool keep_alive, bool head, int err, const char *message,
                    const char *extra, long retry_ms);

/* Answers req if its path is under /v1/ (except /v1/ws) and returns true;
 * false leaves it to the caller. */
bool api_handle(conn *c, const http_request *req);

#endif
