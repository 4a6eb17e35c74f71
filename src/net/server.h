/* server: starting and stopping parleyd's I/O threads (srv.h).
 *
 * Lifecycle: server_create() binds every listener (so a busy port fails at
 * once) and prepares the loops; server_run() starts the threads;
 * server_stop() begins a graceful stop (no new connections, WebSockets
 * closed with 1001, output flushed); server_force() closes whatever is
 * left; server_wait() joins the threads.
 */
#ifndef PARLEY_SERVER_H
#define PARLEY_SERVER_H

#include <uv.h>

#include "net/srv.h"

/* Binds the listeners and prepares opt->threads loops (not yet running);
 * with opt->port SRV_NO_LISTEN it binds nothing and s->port is -1.
 * opt is copied (its strings must outlive the server); http and ws are the
 * protocol handlers (borrowed, must outlive it). on_done (may be NULL) is
 * signalled as each thread ends. Returns ERR_OK and *out (the caller's:
 * server_free), ERR_INVALID for bad TLS files, or ERR_IO after logging why
 * (e.g. the port is taken). */
int server_create(server **out, const srv_options *opt, const conn_http_ops *http,
                  const conn_ws_ops *ws, uv_async_t *on_done);

/* Adds an internal listener on addr:port (0: a free one, then in
 * s->internal_port), served by thread 0 with its own HTTP handler (e.g.
 * only /metrics), without SO_REUSEPORT: it shares nothing with the public
 * port, and a port already taken is an error. Before server_run() only.
 * http is borrowed (must outlive the server). Returns ERR_OK, or
 * ERR_INVALID / ERR_IO after logging why. */
int server_listen_internal(server *s, const char *addr, int port, const conn_http_ops *http);

/* Starts the threads. */
void server_run(server *s);

/* Begins a graceful stop. Any thread. Idempotent. */
void server_stop(server *s);

/* Closes every remaining connection now. Any thread. */
void server_force(server *s);

/* Joins the threads (all must have ended or be ending). */
void server_wait(server *s);

/* Frees a server whose threads were joined. */
void server_free(server *s);

#endif
