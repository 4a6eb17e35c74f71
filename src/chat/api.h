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

/* Answers req if its path is under /v1/ (except /v1/ws) and returns true;
 * false leaves it to the caller. */
bool api_handle(conn *c, const http_request *req);

#endif
