/* router: answers an HTTP request on a connection.
 *
 *   GET /healthz   200 {"status":"ok"}, 503 {"status":"stopping"} when stopping
 *   GET /metrics   Prometheus text format
 *   GET /v1/ws     WebSocket upgrade (subprotocol parley.v1.json)
 *   GET|HEAD /...  static files from --web-dir
 *
 * The request's slices point into the connection's input and are valid only
 * during the call.
 */
#ifndef PARLEY_ROUTER_H
#define PARLEY_ROUTER_H

#include "net/conn.h"
#include "codec/http.h"

void router_handle(conn *c, const http_request *req);

#endif
