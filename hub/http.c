/* hub/http.c: the libcurl side of the hub — single requests for the APIs and
 * a curl-multi downloader with resume, verification, retries and progress.
 *
 * Redirects are never left to libcurl: the hubs answer a download with a 302
 * to a CDN whose signed URL must be fetched exactly as given, and the token
 * must not travel with it. Every hop is checked against hub_auth.origin. */
#include <curl/curl.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hub/internal.h"

#define USER_AGENT "inferd/0.1 (huggingface_hub-compatible)"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

/* Base of the retry backoff in seconds: 1 s, 2 s, 4 s. INFERD_HUB_BACKOFF
 * shortens it (the tests use it so a dead endpoint fails in a blink). */
static double backoff_base(void)
{
    const char *s = getenv("INFERD_HUB_BACKOFF");
    double v = s ? atof(s) : 1.0;
    return v >= 0 ? v : 1.0;
}
#define MAX_ATTEMPTS 4

static void sleep_seconds(double s)
{
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

/* ---- URLs ---- */

char *hub_url_origin(const char *url)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *out = NULL;
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT))
        goto done;
    for (char *p = host; *p; p++)
        if (*p >= 'A' && *p <= 'Z') *p += 32;
    out = hub_xprintf("%s://%s:%s", scheme, host, port);
done:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return out;
}

char *hub_url_join(const char *base, const char *location)
{
    CURLU *u = curl_url();
    char *s = NULL, *out = NULL;
    if (u && !curl_url_set(u, CURLUPART_URL, base, 0) &&
        !curl_url_set(u, CURLUPART_URL, location, 0) &&
        !curl_url_get(u, CURLUPART_URL, &s, 0))
        out = hub_xstrdup(s);
    curl_free(s);
    curl_url_cleanup(u);
    return out;
}

char *hub_url_escape(const char *s, int keep_slash)
{
    strbuf b = {0};
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
            (*p >= '0' && *p <= '9') || strchr("-._~", *p) || (keep_slash && *p == '/'))
            sb_putc(&b, (char)*p);
        else
            sb_printf(&b, "%%%02X", *p);
    }
    char *out = sb_steal(&b);
    if (!out) abort(); /* out of memory: as hub_xstrdup */
    return out;
}

/* Authorization only to the origin the token belongs to. */
static struct curl_slist *auth_headers(const char *url, const hub_auth *auth,
                                       struct curl_slist *h)
{
    if (!auth || !auth->token || !*auth->token || !auth->origin) return h;
    char *o = hub_url_origin(url);
    if (o && !strcmp(o, auth->origin)) {
        char *line = hub_xprintf("Authorization: Bearer %s", auth->token);
        h = curl_slist_append(h, line);
        free(line);
    }
    free(o);
    return h;
}

/* ---- single requests ---- */

static void set_str(char **dst, const char *v, size_t n)
{
    free(*dst);
    *dst = malloc(n + 1);
    memcpy(*dst, v, n);
    (*dst)[n] = 0;
}

/* ETags arrive as "abc" or W/"abc"; the cache names blobs by the bare value. */
static void normalize_etag(char *s)
{
    if (!s) return;
    char *p = s;
    if (!strncmp(p, "W/", 2)) p += 2;
    size_t n = strlen(p);
    if (n >= 2 && p[0] == '"' && p[n - 1] == '"') { p++; n -= 2; }
    memmove(s, p, n);
    s[n] = 0;
}

static void resp_reset_headers(hub_http_resp *r)
{
    free(r->location); free(r->etag); free(r->linked_etag); free(r->repo_commit);
    free(r->error_code); free(r->error_message);
    r->location = r->etag = r->linked_etag = r->repo_commit = NULL;
    r->error_code = r->error_message = NULL;
    r->content_length = r->linked_size = -1;
}

static size_t header_cb(char *buf, size_t sz, size_t nitems, void *ud)
{
    hub_http_resp *r = ud;
    size_t n = sz * nitems, len = n;
    if (n >= 5 && !strncmp(buf, "HTTP/", 5)) { resp_reset_headers(r); return len; }
    const char *colon = memchr(buf, ':', n);
    if (!colon) return len;
    size_t klen = (size_t)(colon - buf);
    const char *v = colon + 1;
    while (v < buf + n && (*v == ' ' || *v == '\t')) v++;
    size_t vlen = (size_t)(buf + n - v);
    while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' ')) vlen--;
#define IS(name) (klen == strlen(name) && !strncasecmp(buf, name, klen))
    if (IS("location")) set_str(&r->location, v, vlen);
    else if (IS("etag")) { set_str(&r->etag, v, vlen); normalize_etag(r->etag); }
    else if (IS("x-linked-etag")) { set_str(&r->linked_etag, v, vlen); normalize_etag(r->linked_etag); }
    else if (IS("x-repo-commit")) set_str(&r->repo_commit, v, vlen);
    else if (IS("x-error-code")) set_str(&r->error_code, v, vlen);
    else if (IS("x-error-message")) set_str(&r->error_message, v, vlen);
    else if (IS("content-length")) r->content_length = strtoll(v, NULL, 10);
    else if (IS("x-linked-size")) r->linked_size = strtoll(v, NULL, 10);
#undef IS
    return len;
}

static size_t body_cb(char *buf, size_t sz, size_t n, void *ud)
{
    strbuf *b = ud;
    /* API answers are small; a runaway body is a misconfigured endpoint. */
    if (b->n + sz * n > (64u << 20)) return 0;
    sb_append(b, buf, sz * n);
    return sz * n;
}

static void common_opts(CURL *h, const char *url)
{
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_USERAGENT, USER_AGENT);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 15L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    /* A stalled transfer (under 1 KB/s for 60 s) is a network error: retry. */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 60L);
    /* Hub checksums are over the raw bytes: never let a proxy compress. */
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, NULL);
}

static int http_once(const char *method, const char *url, const hub_auth *auth,
                     hub_http_resp *r)
{
    CURL *h = curl_easy_init();
    struct curl_slist *hdrs = NULL;
    char errbuf[CURL_ERROR_SIZE] = "";
    if (!h) { snprintf(r->net_error, sizeof r->net_error, "curl_easy_init failed"); return -1; }
    common_opts(h, url);
    hdrs = auth_headers(url, auth, hdrs);
    hdrs = curl_slist_append(hdrs, "Accept-Encoding: identity");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r->body);
    if (!strcmp(method, "HEAD")) curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    CURLcode rc = curl_easy_perform(h);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    } else {
        r->status = 0;
        snprintf(r->net_error, sizeof r->net_error, "%s",
                 errbuf[0] ? errbuf : curl_easy_strerror(rc));
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    return rc == CURLE_OK ? 0 : -1;
}

static int retryable(long status) { return status == 0 || status == 429 || status >= 500; }

int hub_http(const char *method, const char *url, const hub_auth *auth, hub_http_resp *r)
{
    pthread_once(&curl_once, curl_init_once);
    memset(r, 0, sizeof *r);
    r->content_length = r->linked_size = -1;
    for (int attempt = 0;; attempt++) {
        sb_free(&r->body);
        resp_reset_headers(r);
        r->net_error[0] = 0;
        http_once(method, url, auth, r);
        if (!retryable(r->status) || attempt + 1 >= MAX_ATTEMPTS) break;
        sleep_seconds(backoff_base() * pow(2, attempt));
    }
    return r->status ? 0 : -1;
}

void hub_http_resp_free(hub_http_resp *r)
{
    resp_reset_headers(r);
    sb_free(&r->body);
}

/* ---- downloads ---- */

typedef enum { X_PENDING, X_RUNNING, X_DONE } xstate;

typedef struct xfer {
    hub_job *job;
    xstate state;
    CURL *h;
    struct curl_slist *hdrs;
    FILE *f;
    char *url;            /* current hop */
    long long have;       /* bytes in tmp_path */
    long long got_now;    /* bytes received in this run, for the speed */
    long status;          /* of the current response, once known */
    int attempts, redirects, verify_fails;
    double retry_at;
    strbuf errbody;       /* body of a non-2xx answer (error text) */
    hub_http_resp hdr;    /* headers of the current answer (X-Error-Code...) */
    int write_errno;      /* a local write failed: no point retrying */
} xfer;

typedef struct dl {
    xfer *x;
    size_t n;
    const hub_auth *auth;
    int quiet, tty;
    const char *what;
    long long total, got_now;
    double t0, last_print;
    int drawn_lines;
    size_t n_done;
} dl;

static size_t dl_write(char *buf, size_t sz, size_t nm, void *ud)
{
    xfer *x = ud;
    size_t n = sz * nm;
    if (!x->status) {
        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->status);
        /* A server that ignores Range sends the whole file: start over. */
        if (x->status == 200 && x->have > 0) {
            if (ftruncate(fileno(x->f), 0) || fseek(x->f, 0, SEEK_SET)) return 0;
            x->have = 0;
        }
    }
    if (x->status != 200 && x->status != 206) {
        if (x->errbody.n < 4096) sb_append(&x->errbody, buf, n);
        return n;
    }
    if (fwrite(buf, 1, n, x->f) != n) { /* aborts the transfer */
        x->write_errno = errno ? errno : EIO;
        return 0;
    }
    x->have += (long long)n;
    x->got_now += (long long)n;
    return n;
}

static int xfer_start(dl *d, xfer *x, CURLM *m, inferd_error *e)
{
    hub_job *j = x->job;
    x->have = hub_file_size(j->tmp_path);
    if (x->have < 0) x->have = 0;
    if (hub_mkdirs_for(j->tmp_path, e)) return -1;
    x->f = fopen(j->tmp_path, "ab");
    if (!x->f) {
        err_set(e, "cannot write %s: %s", j->tmp_path, strerror(errno));
        return -1;
    }
    /* curl hands over 16 KB pieces; unbuffered, a full disk fails the
     * write that hit it instead of a later flush nobody checks. */
    setvbuf(x->f, NULL, _IONBF, 0);
    x->h = curl_easy_init();
    common_opts(x->h, x->url);
    x->hdrs = auth_headers(x->url, d->auth, NULL);
    x->hdrs = curl_slist_append(x->hdrs, "Accept-Encoding: identity");
    if (x->have > 0) {
        char range[64];
        snprintf(range, sizeof range, "Range: bytes=%lld-", x->have);
        x->hdrs = curl_slist_append(x->hdrs, range);
    }
    curl_easy_setopt(x->h, CURLOPT_HTTPHEADER, x->hdrs);
    curl_easy_setopt(x->h, CURLOPT_WRITEFUNCTION, dl_write);
    curl_easy_setopt(x->h, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(x->h, CURLOPT_PRIVATE, x);
    curl_easy_setopt(x->h, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(x->h, CURLOPT_HEADERDATA, &x->hdr);
    x->status = 0;
    x->write_errno = 0;
    sb_free(&x->errbody);
    curl_multi_add_handle(m, x->h);
    x->state = X_RUNNING;
    return 0;
}

static void xfer_stop(xfer *x, CURLM *m)
{
    if (x->h) {
        curl_multi_remove_handle(m, x->h);
        curl_easy_cleanup(x->h);
        x->h = NULL;
    }
    curl_slist_free_all(x->hdrs);
    x->hdrs = NULL;
    if (x->f) { fclose(x->f); x->f = NULL; }
}

static void schedule_retry(xfer *x, int restart_url)
{
    x->state = X_PENDING;
    x->retry_at = now_seconds() + backoff_base() * pow(2, x->attempts - 1);
    if (restart_url) {
        free(x->url);
        x->url = hub_xstrdup(x->job->url);
        x->redirects = 0;
    }
}

static const char *status_hint(long status)
{
    switch (status) {
    case 401: return " (authentication required: set HF_TOKEN or pass --token)";
    case 403: return " (access denied: the repo may be gated; accept its license on the model page and set HF_TOKEN)";
    case 404: return " (not found on the server)";
    default: return "";
    }
}

/* A transfer ended: decide what it means. Returns -1 on a final error. */
static int xfer_finish(dl *d, xfer *x, CURLcode rc, inferd_error *e)
{
    hub_job *j = x->job;
    char hb[2][32];
    if (x->write_errno) {
        err_set(e, "cannot write %s: %s%s", j->tmp_path, strerror(x->write_errno),
                x->write_errno == ENOSPC ? " — the disk is full; free space or point "
                "HF_HUB_CACHE / MODELSCOPE_CACHE (--cache-dir) elsewhere, then pull again "
                "to resume" : "");
        return -1;
    }
    if (rc != CURLE_OK) {
        if (++x->attempts >= MAX_ATTEMPTS) {
            err_set(e, "downloading %s failed after %d attempts: %s", j->name,
                    x->attempts, curl_easy_strerror(rc));
            return -1;
        }
        if (!d->quiet)
            fprintf(stderr, "%s%s: %s, retrying (attempt %d)\n", d->tty ? "\r\033[K" : "",
                    j->name, curl_easy_strerror(rc), x->attempts + 1);
        schedule_retry(x, 1);
        return 0;
    }
    if (x->status >= 300 && x->status < 400) {
        /* An absolute Location is a signed CDN URL: byte for byte as sent,
         * never re-encoded. Only a relative one (renamed repo) is joined. */
        const char *loc = x->hdr.location;
        char *next = !loc ? NULL
                     : (!strncasecmp(loc, "https://", 8) || !strncasecmp(loc, "http://", 7))
                           ? hub_xstrdup(loc) : hub_url_join(x->url, loc);
        if (!next || ++x->redirects > 10) {
            free(next);
            err_set(e, "downloading %s: bad or looping redirect", j->name);
            return -1;
        }
        free(x->url);
        x->url = next;
        x->state = X_PENDING;
        x->retry_at = 0;
        return 0;
    }
    if (x->status != 200 && x->status != 206) {
        if (x->status == 416) { /* our partial file is not a prefix of theirs */
            unlink(j->tmp_path);
        } else if (!retryable(x->status)) {
            const char *code = x->hdr.error_code ? x->hdr.error_code : "";
            const char *msg = x->hdr.error_message ? x->hdr.error_message
                              : x->errbody.p ? x->errbody.p : "";
            if (!strcmp(code, "GatedRepo"))
                err_set(e, "%s: the repo is gated (HTTP %ld): accept its license on the model "
                        "page while logged in, then set HF_TOKEN (or --token) to a token of "
                        "that account (%.200s)", j->name, x->status, msg);
            else
                err_set(e, "downloading %s: HTTP %ld%s%s%.200s", j->name, x->status,
                        status_hint(x->status), *msg ? ": " : "", msg);
            return -1;
        }
        if (++x->attempts >= MAX_ATTEMPTS) {
            err_set(e, "downloading %s: HTTP %ld after %d attempts", j->name, x->status,
                    x->attempts);
            return -1;
        }
        schedule_retry(x, 1);
        return 0;
    }
    /* A 2xx: the tmp file should now be whole. */
    if (j->size >= 0 && x->have < j->size) { /* connection closed early */
        if (++x->attempts >= MAX_ATTEMPTS) {
            err_set(e, "downloading %s: transfer keeps ending early (%lld of %lld bytes)",
                    j->name, x->have, j->size);
            return -1;
        }
        schedule_retry(x, 1);
        return 0;
    }
    int bad = j->size >= 0 && x->have != j->size;
    char got[65] = "";
    if (!bad && j->hash != HASH_NONE) {
        if (hub_file_digest(j->tmp_path, j->hash, got, e)) return -1;
        bad = strcmp(got, j->digest) != 0;
    }
    if (bad) {
        unlink(j->tmp_path);
        if (++x->verify_fails >= 2) {
            if (j->size >= 0 && x->have != j->size)
                err_set(e, "%s: expected %s, received %s twice; the server or a proxy "
                        "is sending a different file", j->name, hub_human(j->size, hb[0]),
                        hub_human(x->have, hb[1]));
            else
                err_set(e, "%s: %s mismatch twice (expected %s, got %s); the mirror or a "
                        "proxy is corrupting it — try another HF_ENDPOINT or --source",
                        j->name, j->hash == HASH_SHA256 ? "sha256" : "git sha1", j->digest, got);
            return -1;
        }
        if (!d->quiet)
            fprintf(stderr, "%s%s: checksum mismatch, downloading it again\n",
                    d->tty ? "\r\033[K" : "", j->name);
        x->have = 0;
        schedule_retry(x, 1);
        x->retry_at = 0;
        return 0;
    }
    if (hub_mkdirs_for(j->final_path, e)) return -1;
    if (rename(j->tmp_path, j->final_path)) {
        err_set(e, "cannot move %s into the cache: %s", j->final_path, strerror(errno));
        return -1;
    }
    x->state = X_DONE;
    d->n_done++;
    if (!d->quiet && !d->tty)
        fprintf(stderr, "downloaded %s (%s)\n", j->name, hub_human(x->have, hb[0]));
    return 0;
}

static void bar(char *out, size_t cap, double frac, int width)
{
    int fill = (int)(frac * width + 0.5);
    if (fill > width) fill = width;
    size_t k = 0;
    for (int i = 0; i < width && k + 4 < cap; i++) {
        const char *c = i < fill ? "\u2588" : " ";
        size_t l = strlen(c);
        memcpy(out + k, c, l);
        k += l;
    }
    out[k] = 0;
}

/* Terminal: a bar per running file and a total bar, redrawn in place.
 * Otherwise: one plain line every few seconds (logs, CI). */
static void progress(dl *d, int final)
{
    if (d->quiet) return;
    double now = now_seconds();
    if (!final && now - d->last_print < (d->tty ? 0.2 : 5.0)) return;
    d->last_print = now;
    long long got = 0;
    for (size_t i = 0; i < d->n; i++) got += d->x[i].have;
    long long now_bytes = 0;
    for (size_t i = 0; i < d->n; i++) now_bytes += d->x[i].got_now;
    double el = now - d->t0, rate = el > 0 ? now_bytes / el : 0;
    double frac = d->total > 0 ? (double)got / d->total : 1;
    if (frac > 1) frac = 1;
    long long left = d->total - got;
    char a[32], b[32], r[32], eta[32] = "-";
    if (rate > 0 && left > 0) snprintf(eta, sizeof eta, "%.0fs", left / rate);
    else if (left <= 0) snprintf(eta, sizeof eta, "0s");
    hub_human(got, a);
    hub_human(d->total, b);
    hub_human((long long)rate, r);
    if (!d->tty) {
        fprintf(stderr, "%s: %zu/%zu files, %s / %s (%.0f%%), %s/s, ETA %s\n", d->what,
                d->n_done, d->n, a, b, frac * 100, r, eta);
        return;
    }
    strbuf s = {0};
    if (d->drawn_lines) sb_printf(&s, "\033[%dA", d->drawn_lines);
    int lines = 0;
    char bb[128];
    for (size_t i = 0; i < d->n && !final; i++) {
        xfer *x = &d->x[i];
        if (x->state != X_RUNNING) continue;
        double f = x->job->size > 0 ? (double)x->have / x->job->size : 0;
        bar(bb, sizeof bb, f, 20);
        char h1[32], h2[32];
        sb_printf(&s, "\r\033[K  %-40.40s |%s| %3.0f%% %s/%s\n", x->job->name, bb, f * 100,
                  hub_human(x->have, h1), hub_human(x->job->size, h2));
        lines++;
    }
    bar(bb, sizeof bb, frac, 30);
    sb_printf(&s, "\r\033[K%s: %zu/%zu files |%s| %3.0f%% %s/%s %s/s ETA %s\n", d->what,
              d->n_done, d->n, bb, frac * 100, a, b, r, eta);
    lines++;
    /* Clear lines left over from a taller previous frame. */
    for (int i = lines; i < d->drawn_lines; i++) sb_puts(&s, "\r\033[K\n");
    if (d->drawn_lines > lines) sb_printf(&s, "\033[%dA", d->drawn_lines - lines);
    d->drawn_lines = lines;
    fputs(s.p, stderr);
    fflush(stderr);
    sb_free(&s);
}

int hub_download(hub_job *jobs, size_t n, const hub_auth *auth, int max_workers,
                 int quiet, const char *what, inferd_error *e)
{
    pthread_once(&curl_once, curl_init_once);
    if (!n) return 0;
    int rc = -1;
    dl d = {0};
    CURLM *m = curl_multi_init();
    d.x = calloc(n, sizeof *d.x);
    d.n = n;
    d.auth = auth;
    d.quiet = quiet;
    d.tty = isatty(2);
    d.what = what;
    d.t0 = d.last_print = now_seconds();
    if (!m || !d.x) { err_set(e, "out of memory"); goto err; }
    if (max_workers <= 0) max_workers = 8;
    for (size_t i = 0; i < n; i++) {
        d.x[i].job = &jobs[i];
        d.x[i].url = hub_xstrdup(jobs[i].url);
        d.total += jobs[i].size > 0 ? jobs[i].size : 0;
    }
    /* Partial files from an earlier run count as done already; one that is
     * whole (killed between the last byte and the rename) needs no request. */
    for (size_t i = 0; i < n; i++) {
        hub_job *j = &jobs[i];
        long long h = hub_file_size(j->tmp_path);
        d.x[i].have = h > 0 ? h : 0;
        if (j->size <= 0 || h != j->size) continue;
        char got[65] = "";
        if (j->hash != HASH_NONE && hub_file_digest(j->tmp_path, j->hash, got, e)) goto err;
        if (j->hash != HASH_NONE && strcmp(got, j->digest)) {
            unlink(j->tmp_path);
            d.x[i].have = 0;
            continue;
        }
        if (hub_mkdirs_for(j->final_path, e)) goto err;
        if (rename(j->tmp_path, j->final_path)) {
            err_set(e, "cannot move %s into the cache: %s", j->final_path, strerror(errno));
            goto err;
        }
        d.x[i].state = X_DONE;
        d.n_done++;
    }
    for (;;) {
        int running = 0, pending = 0;
        double now = now_seconds();
        for (size_t i = 0; i < n; i++) running += d.x[i].state == X_RUNNING;
        for (size_t i = 0; i < n; i++) {
            xfer *x = &d.x[i];
            if (x->state != X_PENDING) continue;
            pending++;
            if (running >= max_workers || x->retry_at > now) continue;
            if (xfer_start(&d, x, m, e)) goto err;
            running++;
        }
        if (!running && !pending) break;
        int still;
        curl_multi_perform(m, &still);
        CURLMsg *msg;
        int left, finished = 0;
        while ((msg = curl_multi_info_read(m, &left))) {
            finished++;
            if (msg->msg != CURLMSG_DONE) continue;
            xfer *x;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            CURLcode res = msg->data.result;
            if (!x->status) curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->status);
            fflush(x->f);
            int r = xfer_finish(&d, x, res, e);
            xfer_stop(x, m);
            if (r) goto err;
        }
        progress(&d, 0);
        /* A finished hop (a redirect, a retry) can start its next one now. */
        if (!finished) curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    progress(&d, 1);
    rc = 0;
err:
    for (size_t i = 0; d.x && i < n; i++) {
        xfer_stop(&d.x[i], m);
        free(d.x[i].url);
        sb_free(&d.x[i].errbody);
        hub_http_resp_free(&d.x[i].hdr);
    }
    free(d.x);
    if (m) curl_multi_cleanup(m);
    return rc;
}

void hub_job_free(hub_job *j)
{
    free(j->name);
    free(j->url);
    free(j->tmp_path);
    free(j->final_path);
}
