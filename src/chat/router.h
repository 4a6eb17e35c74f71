/* router: answers an HTTP request on a connection.
 *
 *   GET /healthz   200 {"status":"ok"}, 503 {"status":"stopping"} when stopping
 *   GET /metrics   Prometheus text format (net/metrics.h, the writer's
 *                  histograms, the store's gauges, process_*, build_info)
 *   GET /v1/ws     WebSocket upgrade (subprotocol parley.v1.json)
 *   GET|HEAD /...  static files from --web-dir
 *
 * The request's slices point into the connection's input and are valid only
 * during the call.
 */
#ifndef PARLEY_ROUTER_H
#define PARLEY_ROUTER_H

#include "net/srv.h"

/* The HTTP handler for server_create(): answers each request on its
 * connection's thread. */
extern const conn_http_ops router_http_ops;

/* The handler for the internal listener (server_listen_internal,
 * --metrics-listen): GET|HEAD /metrics as above, 404 for every other path. */
extern const conn_http_ops router_metrics_ops;

#endif
