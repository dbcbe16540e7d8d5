/* hub/ms.c: ModelScope — its HTTP API and the modelscope library's cache.
 *
 * File list: GET /api/v1/models/{id}/repo/files?Revision=R&Recursive=True
 * (Data.Files[]: Path, Type, Size, Sha256, Revision). Download:
 * GET /api/v1/models/{id}/repo?Revision=R&FilePath=F. Files land as plain
 * files in CACHE/models/OWNER/NAME/, and the index pickles the library keeps
 * next to them (.msc: [{'Path', 'Revision'}...], .mdl: {'id': ...}) are
 * written too, or modelscope would not trust the files and fetch them again. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hub/internal.h"

typedef struct ms_file {
    char *path, *sha256, *revision;
    long long size;
} ms_file;

char *hub_ms_model_dir(const char *cache, const char *repo_id)
{
    char *id = hub_xstrdup(repo_id), *slash = strchr(id, '/');
    strbuf name = {0};
    if (slash) *slash = 0;
    for (const char *p = slash ? slash + 1 : id; *p; p++)
        if (*p == '.') sb_puts(&name, "___");
        else sb_putc(&name, *p);
    char *dir = hub_xprintf("%s/models/%s/%s", cache, slash ? id : "damo", name.p);
    sb_free(&name);
    free(id);
    return dir;
}

/* modelscope stores "Qwen2.5" as "Qwen2___5" and points the name users type
 * at it with an absolute symlink; do the same so either path works. */
static int link_unmasked(const char *cache, const char *repo_id, const char *mdir,
                         inferd_error *e)
{
    if (!strchr(strchr(repo_id, '/') + 1, '.')) return 0;
    char *plain = hub_xprintf("%s/models/%s", cache, repo_id);
    char *abs = realpath(mdir, NULL);
    int rc = 0;
    struct stat st;
    if (abs && lstat(plain, &st) && symlink(abs, plain)) {
        err_set(e, "cannot create %s: %s", plain, strerror(errno));
        rc = -1;
    }
    free(abs);
    free(plain);
    return rc;
}

/* modelscope reads MODELSCOPE_DOMAIN and prepends https:// itself; a local
 * mirror needs http://, hence MODELSCOPE_URL_SCHEME. */
static char *ms_endpoint(const hub_options *o)
{
    char *ep;
    if (o->endpoint && *o->endpoint) {
        ep = hub_xstrdup(o->endpoint);
    } else {
        const char *dom = getenv("MODELSCOPE_DOMAIN"), *sch = getenv("MODELSCOPE_URL_SCHEME");
        if (!dom || !*dom) dom = "www.modelscope.cn";
        if (strstr(dom, "://")) ep = hub_xstrdup(dom);
        else ep = hub_xprintf("%s%s", sch && *sch ? sch : "https://", dom);
    }
    size_t n = strlen(ep);
    while (n && ep[n - 1] == '/') ep[--n] = 0;
    return ep;
}

/* Python pickle, protocol 2: just enough for lists of str->str dicts. */
static void pk_str(strbuf *b, const char *s)
{
    uint32_t n = (uint32_t)strlen(s);
    unsigned char hdr[5] = {'X', n & 255, (n >> 8) & 255, (n >> 16) & 255, n >> 24};
    sb_append(b, (const char *)hdr, 5);
    sb_append(b, s, n);
}

static int write_file_atomic(const char *path, const char *data, size_t n, inferd_error *e)
{
    char *tmp = hub_xprintf("%s.tmp%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(data, 1, n, f) == n;
    if (f && fclose(f)) ok = 0;
    if (!ok || rename(tmp, path)) {
        err_set(e, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}

static int write_index(const char *dir, const char *repo_id, const char *revision,
                       ms_file *files, size_t n, inferd_error *e)
{
    strbuf b = {0};
    int rc = -1;
    char *p = NULL;
    sb_append(&b, "\x80\x02]", 3);
    sb_putc(&b, '(');
    for (size_t i = 0; i < n; i++) {
        sb_append(&b, "}(", 2);
        pk_str(&b, "Path");
        pk_str(&b, files[i].path);
        pk_str(&b, "Revision");
        pk_str(&b, files[i].revision ? files[i].revision : revision);
        sb_putc(&b, 'u');
    }
    sb_append(&b, "e.", 2);
    p = hub_xprintf("%s/.msc", dir);
    if (write_file_atomic(p, b.p, b.n, e)) goto done;
    free(p);
    sb_free(&b);
    sb_append(&b, "\x80\x02}(", 4);
    pk_str(&b, "id");
    pk_str(&b, repo_id);
    sb_append(&b, "u.", 2);
    p = hub_xprintf("%s/.mdl", dir);
    if (write_file_atomic(p, b.p, b.n, e)) goto done;
    free(p);
    sb_free(&b);
    sb_printf(&b, "Revision:%s,CreatedAt:%ld", revision, (long)time(NULL));
    p = hub_xprintf("%s/.mv", dir);
    if (write_file_atomic(p, b.p, b.n, e)) goto done;
    rc = 0;
done:
    free(p);
    sb_free(&b);
    return rc;
}

static void ms_api_error(const char *ep, const char *repo_id, const char *rev,
                         const hub_http_resp *r, inferd_error *e)
{
    const char *body = r->body.p ? r->body.p : "";
    json_t *j = json_loads(body, 0, NULL);
    const char *msg = j ? json_string_value(json_object_get(j, "Message")) : NULL;
    if (r->status == 404 || r->status == 400)
        err_set(e, "model %s (revision %s) not found on ModelScope at %s%s%s; check the id "
                "as ModelScope writes it (e.g. qwen/Qwen2.5-7B-Instruct)", repo_id, rev, ep,
                msg ? ": " : "", msg ? msg : "");
    else if (r->status == 401 || r->status == 403)
        err_set(e, "access to %s denied by ModelScope (HTTP %ld%s%s): log in and accept the "
                "model's terms on its page, then set MODELSCOPE_API_TOKEN", repo_id, r->status,
                msg ? ": " : "", msg ? msg : "");
    else
        err_set(e, "ModelScope at %s answered HTTP %ld for %s%s%s", ep, r->status, repo_id,
                msg ? ": " : "", msg ? msg : "");
    json_decref(j);
}

int hub_ms_pull(const char *repo_id, const hub_options *o, char **dir, inferd_error *e)
{
    char *ep = ms_endpoint(o), *cache = hub_ms_cache_dir(o);
    char *mdir = hub_ms_model_dir(cache, repo_id);
    const char *rev = o->revision && *o->revision ? o->revision : "master";
    const char *token = o->token && *o->token ? o->token : getenv("MODELSCOPE_API_TOKEN");
    hub_auth auth = {token, hub_url_origin(ep)};
    hub_http_resp r = {0};
    json_t *root = NULL;
    ms_file *files = NULL;
    hub_job *jobs = NULL;
    size_t n_files = 0, n_jobs = 0;
    int lock = -1, rc = -1;
    *dir = NULL;

    if (hub_env_offline(o)) {
        char *msc = hub_xprintf("%s/.msc", mdir);
        int have = file_exists(msc);
        free(msc);
        if (!have) {
            err_set(e, "offline and %s is not in the ModelScope cache %s", repo_id, cache);
            goto done;
        }
        *dir = hub_xstrdup(mdir);
        rc = 0;
        goto done;
    }
    if (!auth.origin) {
        err_set(e, "ModelScope endpoint '%s' is not a URL", ep);
        goto done;
    }
    char *erev = hub_url_escape(rev, 0);
    char *url = hub_xprintf("%s/api/v1/models/%s/repo/files?Revision=%s&Recursive=True", ep,
                            repo_id, erev);
    int got = hub_http("GET", url, &auth, &r);
    free(url);
    if (got) {
        char *msc = hub_xprintf("%s/.msc", mdir);
        int have = file_exists(msc);
        free(msc);
        if (have) {
            if (!o->quiet)
                fprintf(stderr, "cannot reach %s (%s); using the cached copy %s\n", ep,
                        r.net_error, mdir);
            *dir = hub_xstrdup(mdir);
            rc = 0;
        } else {
            err_set(e, "cannot reach ModelScope at %s (%s) and %s is not cached in %s; check "
                    "the network, MODELSCOPE_DOMAIN, or use --source hf", ep, r.net_error,
                    repo_id, cache);
        }
        free(erev);
        goto done;
    }
    root = json_loads(r.body.p ? r.body.p : "", 0, NULL);
    json_t *code = root ? json_object_get(root, "Code") : NULL;
    json_t *list = root ? json_object_get(json_object_get(root, "Data"), "Files") : NULL;
    if (r.status != 200 || (json_is_integer(code) && json_integer_value(code) != 200) ||
        !json_is_array(list)) {
        if (r.status == 200) r.status = 404; /* ModelScope says "not found" in the body */
        ms_api_error(ep, repo_id, rev, &r, e);
        free(erev);
        goto done;
    }
    size_t n = json_array_size(list);
    files = calloc(n + 1, sizeof *files);
    jobs = calloc(n + 1, sizeof *jobs);
    int has_st = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = json_string_value(json_object_get(json_array_get(list, i), "Path"));
        if (p) has_st |= hub_repo_flags(p);
    }
    long long need = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *f = json_array_get(list, i);
        const char *path = json_string_value(json_object_get(f, "Path"));
        const char *type = json_string_value(json_object_get(f, "Type"));
        if (!path || !*path || path[0] == '/' || strstr(path, "..")) continue;
        if (type && strcmp(type, "blob")) continue;
        if (!hub_selected(path, o, has_st)) continue;
        ms_file *m = &files[n_files++];
        m->path = hub_xstrdup(path);
        const char *sha = json_string_value(json_object_get(f, "Sha256"));
        const char *frev = json_string_value(json_object_get(f, "Revision"));
        m->sha256 = sha && strlen(sha) == 64 ? hub_xstrdup(sha) : NULL;
        m->revision = frev ? hub_xstrdup(frev) : NULL;
        json_t *sz = json_object_get(f, "Size");
        m->size = json_is_integer(sz) ? json_integer_value(sz) : -1;
    }
    if (!n_files) {
        err_set(e, "no file of %s matches the selection%s", repo_id,
                o->n_include ? "; check --include/--exclude" : "");
        free(erev);
        goto done;
    }
    /* The lock modelscope's snapshot_download takes: .lock/OWNER___NAME. */
    char *lockp = hub_xprintf("%s/.lock/%.*s___%s", cache,
                              (int)(strchr(repo_id, '/') - repo_id), repo_id,
                              strchr(repo_id, '/') + 1);
    lock = hub_lock(lockp, o->quiet, e);
    free(lockp);
    if (lock < 0) { free(erev); goto done; }
    for (size_t i = 0; i < n_files; i++) {
        ms_file *m = &files[i];
        char *final = hub_xprintf("%s/%s", mdir, m->path);
        long long have = hub_file_size(final);
        int ok = have >= 0 && (m->size < 0 || have == m->size);
        if (ok && o->verify && m->sha256) {
            char got[65];
            if (hub_file_digest(final, HASH_SHA256, got, e)) { free(final); free(erev); goto done; }
            ok = !strcmp(got, m->sha256);
        }
        if (ok) { free(final); continue; }
        hub_job *j = &jobs[n_jobs++];
        char *fp = hub_url_escape(m->path, 0);
        j->name = hub_xstrdup(m->path);
        j->url = hub_xprintf("%s/api/v1/models/%s/repo?Revision=%s&FilePath=%s", ep, repo_id,
                             erev, fp);
        free(fp);
        j->tmp_path = hub_xprintf("%s/._____temp/%s", mdir, m->path);
        j->final_path = final;
        j->size = m->size;
        j->hash = m->sha256 ? HASH_SHA256 : HASH_NONE;
        if (m->sha256) snprintf(j->digest, sizeof j->digest, "%s", m->sha256);
        long long part = hub_file_size(j->tmp_path);
        if (m->size > 0) need += m->size - (part > 0 && part <= m->size ? part : 0);
    }
    free(erev);
    if (hub_mkdirs(mdir, e) || hub_check_free_space(mdir, need, e)) goto done;
    if (n_jobs) {
        char *what = hub_xprintf("Fetching %s", repo_id);
        if (!o->quiet)
            fprintf(stderr, "Fetching %zu of %zu files of %s (revision %s) from %s\n", n_jobs,
                    n_files, repo_id, rev, ep);
        int dr = hub_download(jobs, n_jobs, &auth, o->max_workers, o->quiet, what, e);
        free(what);
        if (dr) { err_prefix(e, "%s", repo_id); goto done; }
    } else if (!o->quiet) {
        fprintf(stderr, "%s: all %zu files already in the cache\n", repo_id, n_files);
    }
    if (write_index(mdir, repo_id, rev, files, n_files, e)) goto done;
    if (link_unmasked(cache, repo_id, mdir, e)) goto done;
    char *tmpdir = hub_xprintf("%s/._____temp", mdir);
    rmdir(tmpdir); /* only when empty: partial files of other runs stay */
    free(tmpdir);
    *dir = hub_xstrdup(mdir);
    rc = 0;
done:
    hub_unlock(lock);
    for (size_t i = 0; i < n_jobs; i++) hub_job_free(&jobs[i]);
    for (size_t i = 0; i < n_files; i++) {
        free(files[i].path);
        free(files[i].sha256);
        free(files[i].revision);
    }
    free(jobs);
    free(files);
    json_decref(root);
    hub_http_resp_free(&r);
    free(auth.origin);
    free(mdir);
    free(cache);
    free(ep);
    return rc;
}
