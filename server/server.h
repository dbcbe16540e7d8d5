/* server: the HTTP side of inferd on libmicrohttpd — sockets, one thread
 * per connection, body size limits, API-key checks, SSE streaming, the
 * access log and graceful shutdown. Used by cli/ (serve); it hands each
 * complete request to api_handle. What a request means is api/'s job: the
 * server never parses a body, and never sees tokens or tensors. */
#ifndef INFERD_SERVER_H
#define INFERD_SERVER_H

#include <stddef.h>

#include "api/api.h"
#include "common/common.h"

typedef struct srv_server srv_server;

typedef struct srv_options {
    const char *host;            /* address to bind, "0.0.0.0" if NULL */
    int port;                    /* 0 = any free port (see srv_port) */
    const char *api_key;         /* NULL: no authentication; "" is an error */
    size_t max_request_bytes;    /* larger bodies get 413 (default 32 MiB) */
    int access_log;              /* one line per request on stderr */
    /* Slow clients: a connection is closed when its request is not in whole
     * (headers and body) this long after the connection opened or its
     * previous answer ended — a deadline, not renewed by each byte (0 = 30 s);
     * one client address holds at most this many connections (0 = no cap). */
    double request_read_timeout_s;
    int max_connections_per_ip;
    /* CORS, as vLLM's flags: comma-separated lists (or JSON arrays, as vLLM
     * takes them); NULL = "*". Origins are matched exactly. */
    const char *allowed_origins, *allowed_methods, *allowed_headers;
} srv_options;

/* Starts listening at once; until srv_set_api every route but /health and
 * /metrics answers 503 "loading" (and /health 503 too), so a load balancer
 * can watch the model load. */
int srv_start(const srv_options *o, srv_server **out, inferd_error *e);
int srv_port(const srv_server *s);
/* The model is ready: requests go to a from now on. */
void srv_set_api(srv_server *s, api_ctx *a);
/* Stops accepting connections and waits up to timeout_s for requests in
 * flight to finish. Returns how many are still running. */
int srv_drain(srv_server *s, double timeout_s);
/* Cancels what still runs, closes every connection and frees the server.
 * The api context is not freed (the caller owns it). */
void srv_stop(srv_server *s);

#endif
