/* server/server.c: HTTP for `inferd serve` (see server.h); bodies go to
 * api_handle unread. libmicrohttpd with one thread per connection. A thread
 * may block for as long as its request generates (non-streaming) or feed
 * an SSE response from a content-reader callback that waits on the
 * engine's events; either way it polls its own socket between waits, so a
 * client that hangs up cancels its request within ~100 ms and the engine
 * frees its KV blocks at its next step. A client that only half-closed
 * (shutdown(SHUT_WR) after sending) still gets its answer. Browsers get
 * CORS headers, and their OPTIONS preflights an answer here, before the
 * API key is asked for (a preflight never carries it). */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server/server.h"

/* A client's X-Request-Id longer than this is replaced, not echoed: a
 * header the client controls must not grow every answer without bound. */
#define REQUEST_ID_MAX 128

/* A connection as the read watchdog sees it (MHD's socket context). */
typedef struct watch {
    struct watch *prev, *next;
    int fd;
    double deadline;             /* its request must be in by then; 0: being answered */
} watch;

struct srv_server {
    struct MHD_Daemon *d;
    srv_options o;
    char *api_key;
    char *origins, *methods, *headers;   /* CORS lists as cors_canon has them */
    _Atomic(api_ctx *) api;
    /* Requests not yet fully answered: counted from the first call until the
     * body (or the stream's last byte) is handed to MHD, not until MHD's
     * completion callback, so draining does not wait on MHD's bookkeeping
     * of keep-alive connections. */
    atomic_int active;
    atomic_int aborting;         /* srv_stop: every wait gives up */
    int port;
    int quiesced;                /* no longer accepting */
    uint64_t id_salt;            /* fresh request ids differ across restarts */
    atomic_uint_fast64_t id_counter;
    /* The read watchdog: MHD renews its connection timeout with each byte,
     * so a client trickling bytes would hold a connection (and its thread)
     * for ever; this thread closes those whose deadline passed. */
    pthread_mutex_t wmu;
    pthread_cond_t wcv;
    watch *watched;              /* every open connection */
    int wd_started, wd_stop;
    pthread_t wd;
};

/* One HTTP request (MHD's con_cls). */
typedef struct conn {
    srv_server *s;
    struct MHD_Connection *mc;
    strbuf body;
    int too_large, streamed;
    int smuggled;                /* Content-Length headers that disagree */
    int counted;                 /* holds one of s->active */
    int http11;                  /* may be sent interim (1xx) responses */
    double t0, probed_at;
    int status, prompt_tokens, completion_tokens;
    char method[16], path[256], peer[64];
    char request_id[REQUEST_ID_MAX + 1];   /* the X-Request-Id of the answer */
} conn;

/* What an SSE response's callbacks need; it outlives the conn. */
typedef struct sse_ctx {
    srv_server *s;
    api_stream *st;
    strbuf pending;
    size_t off;
    int ended, fd;
    int counted;                 /* holds one of s->active (taken from the conn) */
    double t0, probed_at;
    char method[16], path[256], peer[64];
} sse_ctx;

/* ---- helpers ---- */

static void log_line(const srv_server *s, const char *peer, const char *method,
                     const char *path, int status, int pt, int ct, double t0)
{
    if (!s->o.access_log)
        return;
    fprintf(stderr, "inferd: %s \"%s %s\" %d prompt_tokens=%d completion_tokens=%d %.3fs\n",
            peer, method, path, status, pt, ct, now_seconds() - t0);
}

/* What poll tells of a client's socket. A client that closed its socket
 * and one that only shut down its sending side once the request was sent
 * (shutdown(SHUT_WR), as some clients and proxies do) look the same, EOF,
 * until something is sent to them: only a closed socket answers data with
 * RST, which shows as HUP/ERR. A pipelined next request is data, not EOF. */
enum { PEER_ALIVE, PEER_EOF, PEER_GONE };

static int peer_state(int fd)
{
    if (fd < 0)
        return PEER_ALIVE;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0)
        return PEER_ALIVE;
    if (p.revents & (POLLHUP | POLLERR | POLLNVAL))
        return PEER_GONE;
    if (p.revents & POLLRDHUP)
        return PEER_EOF;
    char c;
    return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0 ? PEER_EOF : PEER_ALIVE;
}

/* A client at EOF is sent something harmless at most once a second, so
 * that a closed one answers with RST and its request is cancelled. */
static int probe_due(double *last)
{
    double now = now_seconds();
    if (now - *last < 1.0)
        return 0;
    *last = now;
    return 1;
}

static int conn_fd(struct MHD_Connection *mc)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? (int)ci->connect_fd : -1;
}

/* Before the answer, the one thing HTTP/1.1 lets a server send is an
 * interim response, which clients must skip (RFC 9110, 15.2); HTTP/1.0
 * clients get none, and a closed one of them is found when the answer is
 * written. */
static const char PROBE_1XX[] = "HTTP/1.1 100 Continue\r\n\r\n";

static int conn_alive(void *cls)
{
    conn *c = cls;
    if (atomic_load(&c->s->aborting))
        return 0;
    int fd = conn_fd(c->mc), st = peer_state(fd);
    if (st == PEER_EOF && c->http11 && probe_due(&c->probed_at) &&
        send(fd, PROBE_1XX, sizeof PROBE_1XX - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
        errno != EAGAIN && errno != EWOULDBLOCK)
        st = PEER_GONE;
    return st != PEER_GONE;
}

/* Compares in time that depends on the expected key's length only. */
static int key_equal(const char *got, const char *want)
{
    size_t a = strlen(got), b = strlen(want);
    unsigned char d = a != b;
    for (size_t i = 0; i < b; i++)
        d |= (unsigned char)(want[i] ^ (i < a ? got[i] : 0));
    return d == 0;
}

/* As vLLM does: the client's X-Request-Id back, so that it can match its
 * logs to ours, else a fresh one (what OpenAI's clients show as request_id).
 * Only printable ASCII is echoed: anything else could split the header. */
static void set_request_id(conn *c)
{
    const char *h = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "X-Request-Id");
    size_t n = h ? strlen(h) : 0;
    int ok = n > 0 && n <= REQUEST_ID_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = h[i] > 0x20 && h[i] < 0x7f;
    if (ok) {
        memcpy(c->request_id, h, n + 1);
        return;
    }
    /* splitmix64 of a counter: distinct ids without a lock */
    uint64_t x = c->s->id_salt +
                 0x9E3779B97F4A7C15ull * (atomic_fetch_add(&c->s->id_counter, 1) + 1);
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    snprintf(c->request_id, sizeof c->request_id, "req-%016llx",
             (unsigned long long)(x ^ (x >> 31)));
}

/* ---- CORS ---- */

/* A CORS flag as srv_options has it ("a,b" or vLLM's ["a","b"]) as "a, b",
 * malloc'd; NULL for NULL. */
static char *cors_canon(const char *in)
{
    if (!in)
        return NULL;
    strbuf b = {0};
    for (const char *p = in; *p;) {
        p += strspn(p, "[\", \t");
        size_t n = strcspn(p, "\",]");
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n) {
            if (b.n)
                sb_puts(&b, ", ");
            sb_append(&b, p, n);
        }
        p += n;
        p += strcspn(p, ",");
    }
    char *out = sb_steal(&b);
    return out ? out : strdup("");   /* "" or "[]": nothing is allowed */
}

/* Whether item (n bytes) is in list ("a, b" from cors_canon): NULL or an
 * item "*" takes anything; item NULL asks whether list takes anything.
 * Origins and methods compare exactly, header names (icase) without case. */
static int in_cors_list(const char *list, const char *item, size_t n, int icase)
{
    if (!list)
        return 1;
    for (const char *p = list; *p;) {
        size_t k = strcspn(p, ",");
        if ((k == 1 && *p == '*') ||
            (item && k == n && !(icase ? strncasecmp(p, item, n) : memcmp(p, item, n))))
            return 1;
        p += k;
        p += strspn(p, ", ");
    }
    return 0;
}

/* Access-Control-Allow-Origin for a request from an allowed Origin: "*"
 * when any may call (no credentials are used), else the origin itself,
 * with Vary so that a cache keeps one answer per origin. */
static void add_cors(conn *c, struct MHD_Response *r)
{
    const char *origin = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Origin");
    const char *allowed = c->s->origins;
    if (!origin || !in_cors_list(allowed, origin, strlen(origin), 0))
        return;
    if (in_cors_list(allowed, NULL, 0, 0)) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
    } else {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", origin);
        MHD_add_response_header(r, "Vary", "Origin");
    }
}

/* What every answer carries, errors and streams included. */
static void add_headers(conn *c, struct MHD_Response *r)
{
    MHD_add_response_header(r, "X-Request-Id", c->request_id);
    add_cors(c, r);
}

static enum MHD_Result send_body(conn *c, int status, const char *ctype, char *body, size_t len,
                                 int retry_after)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, body ? body : (char *)"", body ? MHD_RESPMEM_MUST_FREE
                                                                         : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    add_headers(c, r);
    if (ctype)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (retry_after > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", retry_after);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, v);
    }
    if (status == 401)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result ok = MHD_queue_response(c->mc, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result send_error(conn *c, int status, const char *param, const char *msg,
                                  int retry_after)
{
    c->status = status;
    api_count_http(atomic_load(&c->s->api), status);
    char *body = api_error_body(status, param, "%s", msg);
    return send_body(c, status, "application/json", body, strlen(body), retry_after);
}

static void uncount(srv_server *s, int *counted)
{
    if (*counted) {
        *counted = 0;
        atomic_fetch_sub(&s->active, 1);
    }
}

/* ---- slow clients ---- */

static void watch_set(srv_server *s, struct MHD_Connection *mc, double deadline)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    watch *w = ci ? ci->socket_context : NULL;
    if (!w)
        return;
    pthread_mutex_lock(&s->wmu);
    w->deadline = deadline;
    pthread_mutex_unlock(&s->wmu);
}

static void on_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    srv_server *s = cls;
    watch *w = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        if (!(w = calloc(1, sizeof *w)))
            return; /* unwatched: MHD's idle timeout still ends it */
        w->fd = conn_fd(mc);
        w->deadline = now_seconds() + s->o.request_read_timeout_s;
        pthread_mutex_lock(&s->wmu);
        w->next = s->watched;
        if (s->watched)
            s->watched->prev = w;
        s->watched = w;
        pthread_mutex_unlock(&s->wmu);
        *socket_context = w;
        return;
    }
    if (!w)
        return;
    /* MHD closes the socket after this call: under wmu, the watchdog never
     * shuts down a descriptor already given to another connection. */
    pthread_mutex_lock(&s->wmu);
    if (w->prev)
        w->prev->next = w->next;
    else
        s->watched = w->next;
    if (w->next)
        w->next->prev = w->prev;
    pthread_mutex_unlock(&s->wmu);
    free(w);
    *socket_context = NULL;
}

static void *watchdog(void *arg)
{
    srv_server *s = arg;
    long closed = 0;
    double told = 0;
    pthread_mutex_lock(&s->wmu);
    while (!s->wd_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->wcv, &s->wmu, &ts);
        double now = now_seconds();
        for (watch *w = s->watched; w; w = w->next)
            if (w->deadline > 0 && now > w->deadline && w->fd >= 0) {
                /* MHD's thread sees EOF and closes the connection itself */
                shutdown(w->fd, SHUT_RDWR);
                w->deadline = 0;
                closed++;
            }
        /* one line per 10 s at most: an attack must not flood the log */
        if (closed && now - told >= 10) {
            fprintf(stderr, "inferd: closed %ld connections that sent no whole request within "
                    "%gs (--request-read-timeout)\n", closed, s->o.request_read_timeout_s);
            closed = 0;
            told = now;
        }
    }
    pthread_mutex_unlock(&s->wmu);
    return NULL;
}

/* ---- SSE ---- */

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    sse_ctx *x = cls;
    for (;;) {
        if (x->off < x->pending.n) {
            size_t n = x->pending.n - x->off;
            if (n > max)
                n = max;
            memcpy(buf, x->pending.p + x->off, n);
            x->off += n;
            return (ssize_t)n;
        }
        x->pending.n = 0;
        x->off = 0;
        if (x->ended) {
            uncount(x->s, &x->counted);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (atomic_load(&x->s->aborting)) {
            uncount(x->s, &x->counted);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        int rc = api_stream_next(x->st, &x->pending, 100);
        if (rc < 0) {
            x->ended = 1;
        } else if (rc == 0) {
            int st = peer_state(x->fd);
            if (st == PEER_GONE) {
                uncount(x->s, &x->counted);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            /* an SSE comment line: clients skip it */
            if (st == PEER_EOF && probe_due(&x->probed_at))
                sb_puts(&x->pending, ": keep-alive\n\n");
        }
    }
}

static void sse_free(void *cls)
{
    sse_ctx *x = cls;
    int pt = 0, ct = 0;
    api_stream_usage(x->st, &pt, &ct);
    log_line(x->s, x->peer, x->method, x->path, x->ended ? 200 : 499, pt, ct, x->t0);
    api_stream_free(x->st);
    uncount(x->s, &x->counted);
    sb_free(&x->pending);
    free(x);
}

static enum MHD_Result send_stream(conn *c, api_response *ar)
{
    sse_ctx *x = calloc(1, sizeof *x);
    if (!x) {
        api_response_clear(ar);
        return send_error(c, 500, NULL, "out of memory", 0);
    }
    x->s = c->s;
    x->st = ar->stream;
    ar->stream = NULL;
    x->fd = conn_fd(c->mc);
    x->t0 = c->t0;
    x->counted = c->counted;
    c->counted = 0;
    memcpy(x->method, c->method, sizeof x->method);
    memcpy(x->path, c->path, sizeof x->path);
    memcpy(x->peer, c->peer, sizeof x->peer);
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, x, sse_free);
    if (!r) {
        sse_free(x);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    add_headers(c, r);
    c->streamed = 1;
    c->status = 200;
    api_count_http(atomic_load(&c->s->api), 200);
    enum MHD_Result ok = MHD_queue_response(c->mc, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ok;
}

/* ---- requests ---- */

/* With --api-key every path needs the key but the probes a load balancer
 * or Prometheus polls without one (as in vLLM): a list of what is open, not
 * of what is closed, so a route added later (/classify was one) cannot be
 * left open by forgetting it here. */
static int needs_key(const char *path)
{
    return strcmp(path, "/health") && strcmp(path, "/metrics");
}

/* A browser asks whether it may send the real request: 204 with what is
 * allowed, or 400 naming what is not (as Starlette's CORSMiddleware, which
 * vLLM uses, answers). Whether the path exists is the real request's
 * business. */
static enum MHD_Result preflight(conn *c)
{
    const srv_server *s = c->s;
    const char *origin = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Origin");
    const char *method = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND,
                                                     "Access-Control-Request-Method");
    const char *hdrs = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND,
                                                   "Access-Control-Request-Headers");
    if (!in_cors_list(s->origins, origin, strlen(origin), 0))
        return send_error(c, 400, NULL, "Disallowed CORS origin (--allowed-origins)", 0);
    if (!in_cors_list(s->methods, method, strlen(method), 0))
        return send_error(c, 400, NULL, "Disallowed CORS method (--allowed-methods)", 0);
    for (const char *p = hdrs ? hdrs : ""; *(p += strspn(p, ", \t"));) {
        size_t n = strcspn(p, ", \t");
        if (!in_cors_list(s->headers, p, n, 1))
            return send_error(c, 400, NULL, "Disallowed CORS headers (--allowed-headers)", 0);
        p += n;
    }
    c->status = 204;
    api_count_http(atomic_load(&c->s->api), 204);
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (char *)"",
                                                             MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    add_headers(c, r);
    MHD_add_response_header(r, "Access-Control-Allow-Methods",
                            in_cors_list(s->methods, NULL, 0, 0)
                                ? "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT" : s->methods);
    if (hdrs)   /* each passed the check above */
        MHD_add_response_header(r, "Access-Control-Allow-Headers", hdrs);
    MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    enum MHD_Result ok = MHD_queue_response(c->mc, 204, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result answer(conn *c)
{
    srv_server *s = c->s;
    api_ctx *a = atomic_load(&s->api);
    if (c->smuggled)
        return send_error(c, 400, NULL, "the request has Content-Length headers that disagree", 0);
    if (c->too_large) {
        char msg[160];
        snprintf(msg, sizeof msg, "the request body is larger than the limit of %zu bytes "
                 "(--max-request-bytes)", s->o.max_request_bytes);
        return send_error(c, 413, NULL, msg, 0);
    }
    if (!strcmp(c->method, "OPTIONS") &&
        MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Origin") &&
        MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Access-Control-Request-Method"))
        return preflight(c);
    if (s->api_key && needs_key(c->path)) {
        const char *h = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND,
                                                    MHD_HTTP_HEADER_AUTHORIZATION);
        if (!h)
            return send_error(c, 401, NULL, "You didn't provide an API key. Send it as "
                              "'Authorization: Bearer KEY'.", 0);
        if (strncasecmp(h, "Bearer ", 7) || !key_equal(h + 7, s->api_key))
            return send_error(c, 401, NULL, "Incorrect API key provided.", 0);
    }
    if (!a)
        return send_error(c, 503, NULL, "the model is still loading; retry shortly", 5);
    api_response ar;
    /* HEAD is GET without the body (RFC 9110 9.3.2), which MHD leaves out
     * itself; a route without GET answers HEAD as api/ says (405). */
    int head = !strcmp(c->method, "HEAD");
    api_handle(a, head ? "GET" : c->method, c->path, c->body.p, c->body.n, conn_alive, c, &ar);
    if (head && ar.status == 405) {
        api_response_clear(&ar);
        api_handle(a, c->method, c->path, c->body.p, c->body.n, conn_alive, c, &ar);
    }
    if (ar.stream)
        return send_stream(c, &ar);
    c->status = ar.status;
    c->prompt_tokens = ar.prompt_tokens;
    c->completion_tokens = ar.completion_tokens;
    api_count_http(a, ar.status);
    if (ar.status == 499) {   /* the client is gone: nothing to answer */
        api_response_clear(&ar);
        return MHD_NO;
    }
    char *body = ar.body;
    ar.body = NULL;
    enum MHD_Result ok = send_body(c, ar.status, ar.content_type, body, ar.len, ar.retry_after);
    api_response_clear(&ar);
    return ok;
}

static enum MHD_Result dispatch(conn *c)
{
    watch_set(c->s, c->mc, 0); /* the request is in: no deadline while it is answered */
    enum MHD_Result ok = answer(c);
    uncount(c->s, &c->counted);   /* a stream took it over already */
    return ok;
}

/* Two Content-Length headers of different values frame the body one way
 * here (MHD reads the first) and maybe the other way in a proxy in front:
 * request smuggling. RFC 9112 6.3 makes that an error; equal ones are one. */
typedef struct cl_scan {
    const char *first;
    int differ;
} cl_scan;

static enum MHD_Result scan_content_length(void *cls, enum MHD_ValueKind kind, const char *key,
                                           const char *value)
{
    cl_scan *sc = cls;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH))
        return MHD_YES;
    if (!sc->first)
        sc->first = value ? value : "";
    else if (strcmp(sc->first, value ? value : ""))
        sc->differ = 1;
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
    srv_server *s = cls;
    conn *c = *con_cls;
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c)
            return MHD_NO;
        c->s = s;
        c->mc = mc;
        c->t0 = now_seconds();
        snprintf(c->method, sizeof c->method, "%s", method);
        c->http11 = !strcmp(version, MHD_HTTP_VERSION_1_1);
        snprintf(c->path, sizeof c->path, "%s", url);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (ci && ci->client_addr) {
            const struct sockaddr *sa = ci->client_addr;
            if (sa->sa_family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, c->peer,
                          sizeof c->peer);
            else if (sa->sa_family == AF_INET6)
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, c->peer,
                          sizeof c->peer);
        }
        if (!c->peer[0])
            snprintf(c->peer, sizeof c->peer, "-");
        set_request_id(c);
        *con_cls = c;
        c->counted = 1;
        atomic_fetch_add(&s->active, 1);
        cl_scan sc = {0};
        MHD_get_connection_values(mc, MHD_HEADER_KIND, scan_content_length, &sc);
        if (sc.differ) {
            c->smuggled = 1;
            return dispatch(c);
        }
        const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        /* Refuse an announced oversized body before reading any of it. */
        if (cl && strtoull(cl, NULL, 10) > s->o.max_request_bytes) {
            c->too_large = 1;
            return dispatch(c);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!c->too_large && c->body.n + *upload_size <= s->o.max_request_bytes)
            sb_append(&c->body, upload_data, *upload_size);
        else
            c->too_large = 1;
        *upload_size = 0;
        return MHD_YES;
    }
    return dispatch(c);
}

/* A percent-encoded NUL would cut the decoded path short ("/health%00/x"
 * routed to /health): a path or query value holding one stays encoded, so
 * it matches no route. */
static size_t unescape(void *cls, struct MHD_Connection *mc, char *s)
{
    return strstr(s, "%00") ? strlen(s) : MHD_http_unescape(s);
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                         enum MHD_RequestTerminationCode why)
{
    srv_server *s = cls;
    conn *c = *con_cls;
    if (!c)
        return;
    if (!c->streamed)
        log_line(s, c->peer, c->method, c->path, c->status ? c->status : 499,
                 c->prompt_tokens, c->completion_tokens, c->t0);
    uncount(s, &c->counted);
    sb_free(&c->body);
    free(c);
    *con_cls = NULL;
    /* keep-alive: the next request, idle time included, has its deadline */
    watch_set(s, mc, now_seconds() + s->o.request_read_timeout_s);
}

/* ---- lifecycle ---- */

int srv_start(const srv_options *o, srv_server **out, inferd_error *e)
{
    srv_server *s = calloc(1, sizeof *s);
    struct addrinfo *ai = NULL;
    if (!s) {
        err_set(e, "out of memory");
        return -1;
    }
    s->o = *o;
    if (!s->o.max_request_bytes)
        s->o.max_request_bytes = (size_t)32 << 20;
    if (!(s->o.request_read_timeout_s > 0))
        s->o.request_read_timeout_s = 30;
    pthread_mutex_init(&s->wmu, NULL);
    pthread_cond_init(&s->wcv, NULL);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    s->id_salt = ((uint64_t)now.tv_sec << 30) ^ (uint64_t)now.tv_nsec ^ ((uint64_t)getpid() << 48);
    if (o->api_key) {
        /* "" would match no "Bearer KEY" yet once meant "no key": a
         * server the user asked to protect must not start open. */
        if (!*o->api_key) {
            err_set(e, "the API key is empty: give a key, or none to serve without "
                    "authentication");
            goto err;
        }
        if (!(s->api_key = strdup(o->api_key))) {
            err_set(e, "out of memory");
            goto err;
        }
    }
    if ((o->allowed_origins && !(s->origins = cors_canon(o->allowed_origins))) ||
        (o->allowed_methods && !(s->methods = cors_canon(o->allowed_methods))) ||
        (o->allowed_headers && !(s->headers = cors_canon(o->allowed_headers)))) {
        err_set(e, "out of memory");
        goto err;
    }
    const char *host = o->host && *o->host ? o->host : "0.0.0.0";
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    char port[16];
    snprintf(port, sizeof port, "%d", o->port);
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai) {
        err_set(e, "cannot resolve --host '%s': %s", host, gai_strerror(gai));
        goto err;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ITC;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    s->d = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, on_request, s,
                            MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)600,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)4096,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                            (unsigned)(o->max_connections_per_ip > 0 ? o->max_connections_per_ip : 0),
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                            MHD_OPTION_THREAD_STACK_SIZE, (size_t)1 << 20,
                            MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
                            MHD_OPTION_END);
    if (!s->d) {
        err_set(e, "cannot listen on %s:%d (address in use, or not an address of this "
                "machine?)", host, o->port);
        goto err;
    }
    if (pthread_create(&s->wd, NULL, watchdog, s)) {
        err_set(e, "cannot start the server's read watchdog thread");
        goto err;
    }
    s->wd_started = 1;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : o->port;
    freeaddrinfo(ai);
    *out = s;
    return 0;
err:
    if (ai)
        freeaddrinfo(ai);
    if (s->d)
        MHD_stop_daemon(s->d);
    pthread_cond_destroy(&s->wcv);
    pthread_mutex_destroy(&s->wmu);
    free(s->api_key);
    free(s->origins);
    free(s->methods);
    free(s->headers);
    free(s);
    return -1;
}

int srv_port(const srv_server *s) { return s->port; }

void srv_set_api(srv_server *s, api_ctx *a) { atomic_store(&s->api, a); }

int srv_drain(srv_server *s, double timeout_s)
{
    /* MHD stops accepting but leaves the socket listening, where the kernel
     * would still complete handshakes nobody answers: close it, so new
     * clients are refused at once and can go to another replica. */
    if (!s->quiesced) {
        MHD_socket ls = MHD_quiesce_daemon(s->d);
        if (ls != MHD_INVALID_SOCKET)
            close(ls);
        s->quiesced = 1;
    }
    double until = now_seconds() + timeout_s;
    while (atomic_load(&s->active) > 0 && now_seconds() < until) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return atomic_load(&s->active);
}

void srv_stop(srv_server *s)
{
    if (!s)
        return;
    atomic_store(&s->aborting, 1);
    if (s->wd_started) {
        pthread_mutex_lock(&s->wmu);
        s->wd_stop = 1;
        pthread_cond_signal(&s->wcv);
        pthread_mutex_unlock(&s->wmu);
        pthread_join(s->wd, NULL);
    }
    MHD_stop_daemon(s->d); /* its connections' CLOSED notes empty s->watched */
    pthread_cond_destroy(&s->wcv);
    pthread_mutex_destroy(&s->wmu);
    free(s->api_key);
    free(s->origins);
    free(s->methods);
    free(s->headers);
    free(s);
}
