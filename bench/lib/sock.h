/* sock: TCP connections from the load generator to the server.
 *
 * Loopback only. Each connection is bound before connect to one of
 * `sources` addresses 127.0.0.2 .. 127.0.0.(1+sources) with
 * IP_BIND_ADDRESS_NO_PORT, so no single source address runs out of ports.
 * The caller owns every descriptor returned.
 */
#ifndef BENCH_SOCK_H
#define BENCH_SOCK_H

#include <stdbool.h>

typedef struct sock_target {
    char host[64];   /* the server's address, "127.0.0.1" */
    int port;
    int sources;     /* source addresses, 1..250 */
} sock_target;

/* A TCP socket (CLOEXEC, TCP_NODELAY) from source address src_i % sources,
 * with connect() started (nonblock) or done. Returns the fd or ERR_IO. */
int sock_connect(const sock_target *t, int src_i, bool nonblock);

#endif
