/* hub/hf.c: the Hugging Face Hub — its HTTP API and huggingface_hub's cache.
 *
 * One GET of /api/models/{id}/revision/{rev}?blobs=true gives the commit and,
 * per file, its blob id, size and (LFS files) sha256: enough to tell what the
 * cache already has without a request per file. Missing files are fetched
 * from /{id}/resolve/{commit}/{file}, which answers LFS files with a 302 to a
 * CDN; the blob is stored under its ETag (sha256 for LFS, git sha1 for small
 * files), exactly as huggingface_hub names it, and verified against it. */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hub/internal.h"

typedef struct hf_file {
    char *path;       /* repo path (rfilename) */
    char *etag;       /* blob name: lfs sha256 or git blob id */
    long long size;
    hub_hash hash;
} hf_file;

typedef struct hf_ctx {
    const char *repo_id;
    const hub_options *o;
    char *endpoint, *cache, *root, *revision, *commit, *token;
    hub_auth auth;
    hf_file *files;
    size_t n_files;
} hf_ctx;

static int is_hex(const char *s, size_t n)
{
    if (!s || strlen(s) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i])) return 0;
    return 1;
}

static hub_hash hash_of_etag(const char *etag)
{
    return is_hex(etag, 64) ? HASH_SHA256 : is_hex(etag, 40) ? HASH_GIT_SHA1 : HASH_NONE;
}

static char *hf_endpoint(const hub_options *o)
{
    const char *s = o->endpoint ? o->endpoint : getenv("HF_ENDPOINT");
    char *ep = hub_xstrdup(s && *s ? s : "https://huggingface.co");
    size_t n = strlen(ep);
    while (n && ep[n - 1] == '/') ep[--n] = 0;
    return ep;
}

/* --token, then HF_TOKEN, then the file `huggingface-cli login` writes. */
static char *hf_token(const hub_options *o)
{
    if (o->token && *o->token) return hub_xstrdup(o->token);
    const char *t = getenv("HF_TOKEN");
    if (!t || !*t) t = getenv("HUGGING_FACE_HUB_TOKEN");
    if (t && *t) return hub_xstrdup(t);
    char *path;
    const char *tp = getenv("HF_TOKEN_PATH"), *home = getenv("HF_HOME");
    if (tp && *tp) path = hub_xstrdup(tp);
    else if (home && *home) path = hub_xprintf("%s/token", home);
    else {
        const char *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
        path = x && *x ? hub_xprintf("%s/huggingface/token", x)
                       : hub_xprintf("%s/.cache/huggingface/token", h ? h : "/tmp");
    }
    char *data = NULL;
    size_t len = 0;
    if (file_read_all(path, 4096, &data, &len, NULL)) data = NULL;
    free(path);
    while (data && len && isspace((unsigned char)data[len - 1])) data[--len] = 0;
    if (data && !*data) { free(data); data = NULL; }
    return data;
}

/* Snapshot folder for a revision (a branch/tag via refs/, or a commit). */
static char *cached_snapshot(hf_ctx *c, const char *rev)
{
    char *commit = NULL;
    if (is_hex(rev, 40)) {
        commit = hub_xstrdup(rev);
    } else {
        char *ref = hub_xprintf("%s/refs/%s", c->root, rev), *data = NULL;
        size_t len;
        if (!file_read_all(ref, 256, &data, &len, NULL)) {
            while (len && isspace((unsigned char)data[len - 1])) data[--len] = 0;
            commit = data;
        }
        free(ref);
    }
    if (!commit) return NULL;
    char *snap = hub_xprintf("%s/snapshots/%s", c->root, commit);
    free(commit);
    struct stat st;
    if (stat(snap, &st) || !S_ISDIR(st.st_mode)) { free(snap); return NULL; }
    return snap;
}

/* Turn a Hub error answer into a sentence that says what to do. */
static void api_error(hf_ctx *c, const hub_http_resp *r, const char *what, inferd_error *e)
{
    const char *code = r->error_code ? r->error_code : "";
    const char *msg = r->error_message ? r->error_message : "";
    if (!strcmp(code, "GatedRepo") || (r->status == 403 && c->token))
        err_set(e, "%s is a gated repo: accept its license at %s/%s while logged in, then set "
                "HF_TOKEN (or pass --token) to a token of that account%s (HTTP %ld%s%s)",
                c->repo_id, c->endpoint, c->repo_id,
                c->token ? "; the token given has no access yet" : "", r->status,
                *msg ? ": " : "", msg);
    else if (!strcmp(code, "RevisionNotFound"))
        err_set(e, "revision '%s' not found in %s (HTTP %ld); check --revision", c->revision,
                c->repo_id, r->status);
    else if (!strcmp(code, "EntryNotFound"))
        err_set(e, "%s not found in %s at revision %s (HTTP %ld)", what, c->repo_id,
                c->revision, r->status);
    else if (!strcmp(code, "RepoNotFound") || r->status == 401 || r->status == 404)
        err_set(e, "repository %s not found at %s (HTTP %ld): check the id%s", c->repo_id,
                c->endpoint, r->status,
                c->token ? "" : "; if it is private or gated, set HF_TOKEN or pass --token");
    else if (r->status == 403)
        err_set(e, "access to %s denied (HTTP 403%s%s); set HF_TOKEN to a token with access",
                c->repo_id, *msg ? ": " : "", msg);
    else
        err_set(e, "%s answered HTTP %ld for %s%s%s", c->endpoint, r->status, what,
                *msg ? ": " : "", msg);
}

static void net_error(hf_ctx *c, const hub_http_resp *r, inferd_error *e)
{
    err_set(e, "cannot reach %s (%s) and %s (revision %s) is not in the cache %s. Check the "
            "network, use a mirror (HF_ENDPOINT=https://hf-mirror.com) or ModelScope "
            "(--source modelscope)", c->endpoint, r->net_error, c->repo_id, c->revision,
            c->cache);
}

static int parse_info(hf_ctx *c, const char *body, inferd_error *e)
{
    json_error_t je;
    json_t *root = json_loads(body, 0, &je);
    json_t *sib = root ? json_object_get(root, "siblings") : NULL;
    const char *sha = root ? json_string_value(json_object_get(root, "sha")) : NULL;
    if (!root || !json_is_array(sib) || !is_hex(sha, 40)) {
        err_set(e, "%s did not answer like the Hugging Face API for %s (no commit sha or "
                "file list); is HF_ENDPOINT right?", c->endpoint, c->repo_id);
        json_decref(root);
        return -1;
    }
    c->commit = hub_xstrdup(sha);
    size_t n = json_array_size(sib);
    c->files = calloc(n ? n : 1, sizeof *c->files);
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(sib, i);
        const char *name = json_string_value(json_object_get(s, "rfilename"));
        if (!name || !*name || name[0] == '/' || strstr(name, "..")) continue;
        hf_file *f = &c->files[c->n_files++];
        f->path = hub_xstrdup(name);
        f->size = -1;
        json_t *lfs = json_object_get(s, "lfs");
        const char *blob = json_string_value(json_object_get(s, "blobId"));
        json_t *sz = json_object_get(s, "size");
        if (json_is_object(lfs)) {
            blob = json_string_value(json_object_get(lfs, "sha256"));
            sz = json_object_get(lfs, "size");
        }
        if (blob && hash_of_etag(blob) != HASH_NONE) {
            f->etag = hub_xstrdup(blob);
            f->hash = hash_of_etag(blob);
        }
        if (json_is_integer(sz)) f->size = json_integer_value(sz);
    }
    json_decref(root);
    return 0;
}

static char *resolve_url(hf_ctx *c, const char *path)
{
    char *p = hub_url_escape(path, 1);
    char *u = hub_xprintf("%s/%s/resolve/%s/%s", c->endpoint, c->repo_id, c->commit, p);
    free(p);
    return u;
}

/* Mirrors that answer the API without blob metadata: ask the file itself,
 * as huggingface_hub does — HEAD, following only same-origin redirects. */
static int head_meta(hf_ctx *c, hf_file *f, inferd_error *e)
{
    char *url = resolve_url(c, f->path);
    hub_http_resp r;
    int rc = -1;
    for (int hops = 0; hops < 10; hops++) {
        if (hub_http("HEAD", url, &c->auth, &r)) { net_error(c, &r, e); goto done; }
        if (r.status >= 300 && r.status < 400 && r.location && !r.linked_etag) {
            char *next = hub_url_join(url, r.location), *o = next ? hub_url_origin(next) : NULL;
            int same = o && c->auth.origin && !strcmp(o, c->auth.origin);
            free(o);
            if (same) { free(url); url = next; hub_http_resp_free(&r); continue; }
            free(next);
        }
        break;
    }
    if (r.status >= 400) { api_error(c, &r, f->path, e); goto done; }
    const char *etag = r.linked_etag ? r.linked_etag : r.etag;
    long long size = r.linked_size >= 0 ? r.linked_size : r.content_length;
    if (!etag || !*etag) {
        err_set(e, "%s sent no ETag for %s; cannot place it in the cache", c->endpoint, f->path);
        goto done;
    }
    free(f->etag);
    f->etag = hub_xstrdup(etag);
    f->hash = hash_of_etag(etag);
    f->size = size;
    rc = 0;
done:
    hub_http_resp_free(&r);
    free(url);
    return rc;
}

/* snapshots/<commit>/<path> -> ../../blobs/<etag>, one more ../ per folder
 * level of path, as huggingface_hub writes it. */
static int link_snapshot(hf_ctx *c, const hf_file *f, inferd_error *e)
{
    char *link = hub_xprintf("%s/snapshots/%s/%s", c->root, c->commit, f->path);
    strbuf target = {0};
    int rc = -1;
    for (const char *p = f->path; *p; p++)
        if (*p == '/') sb_puts(&target, "../");
    sb_printf(&target, "../../blobs/%s", f->etag);
    if (hub_mkdirs_for(link, e)) goto done;
    char cur[512];
    ssize_t n = readlink(link, cur, sizeof cur - 1);
    if (n >= 0) {
        cur[n] = 0;
        if (!strcmp(cur, target.p)) { rc = 0; goto done; }
    }
    unlink(link);
    if (symlink(target.p, link)) {
        err_set(e, "cannot create %s: %s", link, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    sb_free(&target);
    free(link);
    return rc;
}

static int write_ref(hf_ctx *c, inferd_error *e)
{
    if (!strcmp(c->revision, c->commit)) return 0;
    char *ref = hub_xprintf("%s/refs/%s", c->root, c->revision);
    char *tmp = hub_xprintf("%s.tmp%d", ref, (int)getpid());
    int rc = -1;
    FILE *f = NULL;
    if (hub_mkdirs_for(ref, e)) goto done;
    f = fopen(tmp, "w");
    /* No newline: huggingface_hub writes the bare hash. */
    if (!f || fputs(c->commit, f) < 0 || fclose(f)) {
        if (f) fclose(f);
        err_set(e, "cannot write %s: %s", ref, strerror(errno));
        goto done;
    }
    if (rename(tmp, ref)) { err_set(e, "cannot write %s: %s", ref, strerror(errno)); goto done; }
    rc = 0;
done:
    if (rc) unlink(tmp);
    free(tmp);
    free(ref);
    return rc;
}

/* Is the cached blob of f whole (and, with --verify, its hash right)? */
static int blob_ok(hf_ctx *c, const hf_file *f, const char *blob, inferd_error *e)
{
    long long have = hub_file_size(blob);
    if (have < 0) return 0;
    char h1[32], h2[32];
    if (f->size >= 0 && have != f->size) {
        if (!c->o->quiet)
            fprintf(stderr, "cached %s is damaged (%s, expected %s): downloading it again\n",
                    f->path, hub_human(have, h1), hub_human(f->size, h2));
        unlink(blob);
        return 0;
    }
    if (c->o->verify && f->hash != HASH_NONE) {
        char got[65];
        if (hub_file_digest(blob, f->hash, got, e)) return -1;
        if (strcmp(got, f->etag)) {
            if (!c->o->quiet)
                fprintf(stderr, "cached %s fails its checksum: downloading it again\n", f->path);
            unlink(blob);
            return 0;
        }
    }
    return 1;
}

static void ctx_free(hf_ctx *c)
{
    for (size_t i = 0; i < c->n_files; i++) {
        free(c->files[i].path);
        free(c->files[i].etag);
    }
    free(c->files);
    free(c->endpoint); free(c->cache); free(c->root); free(c->revision);
    free(c->commit); free(c->token); free(c->auth.origin);
}

int hub_hf_pull(const char *repo_id, const hub_options *o, char **dir, inferd_error *e)
{
    hf_ctx c = {0};
    hub_http_resp r = {0};
    hub_job *jobs = NULL;
    int *locks = NULL;
    size_t n_jobs = 0, n_locks = 0;
    hf_file **want = NULL;
    int rc = -1;
    c.repo_id = repo_id;
    c.o = o;
    c.endpoint = hf_endpoint(o);
    c.cache = hub_hf_cache_dir(o);
    c.revision = hub_xstrdup(o->revision && *o->revision ? o->revision : "main");
    {
        char *id = hub_xstrdup(repo_id), *slash = strchr(id, '/');
        *slash = 0;
        c.root = hub_xprintf("%s/models--%s--%s", c.cache, id, slash + 1);
        free(id);
    }
    if (hub_env_offline(o)) {
        *dir = cached_snapshot(&c, c.revision);
        if (!*dir)
            err_set(e, "offline (HF_HUB_OFFLINE) and %s (revision %s) is not in the cache %s; "
                    "pull it once with network access", repo_id, c.revision, c.cache);
        rc = *dir ? 0 : -1;
        goto done;
    }
    c.token = hf_token(o);
    c.auth.token = c.token;
    c.auth.origin = hub_url_origin(c.endpoint);
    if (!c.auth.origin) {
        err_set(e, "HF endpoint '%s' is not a URL (expected e.g. https://hf-mirror.com)",
                c.endpoint);
        goto done;
    }

    char *rev = hub_url_escape(c.revision, 0);
    char *api = hub_xprintf("%s/api/models/%s/revision/%s?blobs=true", c.endpoint, repo_id, rev);
    free(rev);
    /* Renamed repos answer with a redirect to the new name; follow it (the
     * token goes along only while the origin stays the same). */
    int got;
    for (int hops = 0;; hops++) {
        got = hub_http("GET", api, &c.auth, &r);
        if (got || r.status < 300 || r.status >= 400 || !r.location || hops == 5) break;
        char *next = hub_url_join(api, r.location);
        if (!next) break;
        free(api);
        api = next;
        hub_http_resp_free(&r);
    }
    free(api);
    if (got) {
        /* No network: a cached copy is as good as huggingface_hub's fallback. */
        *dir = cached_snapshot(&c, c.revision);
        if (*dir) {
            if (!o->quiet)
                fprintf(stderr, "cannot reach %s (%s); using the cached copy %s\n", c.endpoint,
                        r.net_error, *dir);
            rc = 0;
        } else {
            net_error(&c, &r, e);
        }
        goto done;
    }
    if (r.status != 200) { api_error(&c, &r, "the model info", e); goto done; }
    if (parse_info(&c, r.body.p ? r.body.p : "", e)) goto done;

    int has_st = 0;
    for (size_t i = 0; i < c.n_files; i++) has_st |= hub_repo_flags(c.files[i].path);
    /* One lock fd per missing blob is held through the download: let a
     * repo of many shards fit under the soft descriptor limit. */
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max &&
        rl.rlim_cur < c.n_files + 256) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    want = calloc(c.n_files + 1, sizeof *want);
    jobs = calloc(c.n_files + 1, sizeof *jobs);
    locks = calloc(c.n_files + 1, sizeof *locks);
    size_t n_want = 0;
    long long need = 0;
    for (size_t i = 0; i < c.n_files; i++) {
        hf_file *f = &c.files[i];
        if (!hub_selected(f->path, o, has_st)) continue;
        want[n_want++] = f;
        if (!f->etag && head_meta(&c, f, e)) goto done;
    }
    if (!n_want) {
        err_set(e, "no file of %s matches the selection (%zu files in the repo)%s", repo_id,
                c.n_files, o->n_include ? "; check --include/--exclude" : "");
        goto done;
    }
    for (size_t i = 0; i < n_want; i++) {
        hf_file *f = want[i];
        char *blob = hub_xprintf("%s/blobs/%s", c.root, f->etag);
        int ok = blob_ok(&c, f, blob, e);
        if (ok < 0) { free(blob); goto done; }
        if (ok) { free(blob); continue; }
        /* Same lock file huggingface_hub takes, so the two never write one
         * blob at once; another inferd may have finished it meanwhile. */
        char *lock = hub_xprintf("%s/.locks/%s/%s.lock", c.cache, strrchr(c.root, '/') + 1,
                                 f->etag);
        int fd = hub_lock(lock, o->quiet, e);
        free(lock);
        if (fd < 0) { free(blob); goto done; }
        locks[n_locks++] = fd;
        if (blob_ok(&c, f, blob, e) == 1) { free(blob); continue; }
        hub_job *j = &jobs[n_jobs++];
        j->name = hub_xstrdup(f->path);
        j->url = resolve_url(&c, f->path);
        j->tmp_path = hub_xprintf("%s.incomplete", blob);
        j->final_path = blob;
        j->size = f->size;
        j->hash = f->hash;
        snprintf(j->digest, sizeof j->digest, "%s", f->etag);
        long long part = hub_file_size(j->tmp_path);
        if (f->size > 0) need += f->size - (part > 0 && part <= f->size ? part : 0);
    }
    if (n_jobs) {
        char *blobs = hub_xprintf("%s/blobs", c.root);
        int bad = hub_mkdirs(blobs, e) || hub_check_free_space(blobs, need, e);
        free(blobs);
        if (bad) goto done;
        char *what = hub_xprintf("Fetching %s", repo_id);
        if (!o->quiet)
            fprintf(stderr, "Fetching %zu of %zu files of %s (revision %s, commit %.12s) from %s\n",
                    n_jobs, n_want, repo_id, c.revision, c.commit, c.endpoint);
        int dr = hub_download(jobs, n_jobs, &c.auth, o->max_workers, o->quiet, what, e);
        free(what);
        if (dr) { err_prefix(e, "%s", repo_id); goto done; }
    } else if (!o->quiet) {
        fprintf(stderr, "%s: all %zu files already in the cache (commit %.12s)\n", repo_id,
                n_want, c.commit);
    }
    for (size_t i = 0; i < n_want; i++)
        if (link_snapshot(&c, want[i], e)) goto done;
    if (write_ref(&c, e)) goto done;
    *dir = hub_xprintf("%s/snapshots/%s", c.root, c.commit);
    rc = 0;
done:
    for (size_t i = 0; i < n_locks; i++) hub_unlock(locks[i]);
    for (size_t i = 0; i < n_jobs; i++) hub_job_free(&jobs[i]);
    free(locks);
    free(jobs);
    free(want);
    hub_http_resp_free(&r);
    ctx_free(&c);
    return rc;
}
