/* hub/hub.c: the hub module's front door (see hub.h: model folders from the
 * Hugging Face Hub and ModelScope into their caches, for cli/; files only,
 * never a model's contents). What both sources share — options and
 * environment, the default file selection, hashing, locks, disk checks — and
 * the entry points that pick a source: hub_pull, hub_resolve_model, hub_list,
 * hub_rm. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "hub/internal.h"

void hub_options_init(hub_options *o) { memset(o, 0, sizeof *o); }

static int env_true(const char *name)
{
    const char *v = getenv(name);
    return v && (!strcasecmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") ||
                 !strcasecmp(v, "on"));
}

hub_source hub_source_resolve(const hub_options *o)
{
    if (o && o->source != HUB_SOURCE_AUTO) return o->source;
    const char *s = getenv("INFERD_MODEL_SOURCE");
    if (s && !strcasecmp(s, "modelscope")) return HUB_SOURCE_MODELSCOPE;
    if (s && (!strcasecmp(s, "hf") || !strcasecmp(s, "huggingface"))) return HUB_SOURCE_HF;
    if (env_true("VLLM_USE_MODELSCOPE")) return HUB_SOURCE_MODELSCOPE;
    return HUB_SOURCE_HF;
}

const char *hub_source_name(hub_source s)
{
    return s == HUB_SOURCE_MODELSCOPE ? "modelscope" : "hf";
}

int hub_env_offline(const hub_options *o)
{
    return (o && o->offline) || env_true("HF_HUB_OFFLINE") || env_true("TRANSFORMERS_OFFLINE");
}

char *hub_xstrdup(const char *s)
{
    char *p = strdup(s ? s : "");
    if (!p) abort(); /* out of memory: nothing sensible to unwind to */
    return p;
}

char *hub_xprintf(const char *fmt, ...)
{
    strbuf b = {0};
    va_list ap;
    va_start(ap, fmt);
    char tmp[512];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    if (n >= 0 && (size_t)n < sizeof tmp) {
        sb_append(&b, tmp, (size_t)n);
    } else if (n >= 0) {
        char *big = malloc((size_t)n + 1);
        if (!big) abort();
        vsnprintf(big, (size_t)n + 1, fmt, ap2);
        sb_append(&b, big, (size_t)n);
        free(big);
    }
    va_end(ap2);
    va_end(ap);
    char *p = sb_steal(&b);
    if (!p) abort(); /* as hub_xstrdup */
    return p;
}

const char *hub_human(long long n, char buf[32])
{
    static const char *u[] = {"B", "kB", "MB", "GB", "TB"};
    double v = n < 0 ? 0 : (double)n;
    int i = 0;
    while (v >= 1000 && i < 4) { v /= 1000; i++; }
    snprintf(buf, 32, i ? "%.1f%s" : "%.0f%s", v, u[i]);
    return buf;
}

long long hub_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) ? -1 : (long long)st.st_size;
}

int hub_mkdirs(const char *dir, inferd_error *e)
{
    char *p = hub_xstrdup(dir);
    for (char *s = p + 1; ; s++) {
        if (*s == '/' || !*s) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0755) && errno != EEXIST) {
                err_set(e, "cannot create %s: %s", p, strerror(errno));
                free(p);
                return -1;
            }
            *s = c;
            if (!c) break;
        }
    }
    free(p);
    return 0;
}

int hub_mkdirs_for(const char *path, inferd_error *e)
{
    char *p = hub_xstrdup(path);
    char *slash = strrchr(p, '/');
    int rc = 0;
    if (slash && slash != p) {
        *slash = 0;
        rc = hub_mkdirs(p, e);
    }
    free(p);
    return rc;
}

int hub_file_digest(const char *path, hub_hash h, char out[65], inferd_error *e)
{
    FILE *f = fopen(path, "rb");
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char md[EVP_MAX_MD_SIZE], *buf = malloc(1 << 20);
    unsigned mdlen = 0;
    int rc = -1;
    if (!f || !ctx || !buf) {
        err_set(e, "cannot read %s: %s", path, strerror(errno));
        goto done;
    }
    EVP_DigestInit_ex(ctx, h == HASH_GIT_SHA1 ? EVP_sha1() : EVP_sha256(), NULL);
    if (h == HASH_GIT_SHA1) {
        /* git hashes "blob <size>\0" + content: the ETag of a small file. */
        char hdr[64];
        fseek(f, 0, SEEK_END);
        long sz = ftell(f);
        fseek(f, 0, SEEK_SET);
        int n = snprintf(hdr, sizeof hdr, "blob %ld", sz);
        EVP_DigestUpdate(ctx, hdr, (size_t)n + 1);
    }
    size_t n;
    while ((n = fread(buf, 1, 1 << 20, f)) > 0) EVP_DigestUpdate(ctx, buf, n);
    if (ferror(f)) {
        err_set(e, "cannot read %s: %s", path, strerror(errno));
        goto done;
    }
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    for (unsigned i = 0; i < mdlen; i++) sprintf(out + 2 * i, "%02x", md[i]);
    out[2 * mdlen] = 0;
    rc = 0;
done:
    if (f) fclose(f);
    EVP_MD_CTX_free(ctx);
    free(buf);
    return rc;
}

int hub_check_free_space(const char *dir, long long need, inferd_error *e)
{
    struct statvfs vfs;
    if (need <= 0 || statvfs(dir, &vfs)) return 0;
    long long avail = (long long)vfs.f_bavail * (long long)vfs.f_frsize;
    /* Keep a little headroom: a disk filled to the last byte breaks more
     * than this download. */
    long long margin = 64ll << 20;
    if (avail < need + margin) {
        char a[32], b[32];
        err_set(e, "not enough disk space in %s: need %s, %s free; free some space or point "
                "HF_HUB_CACHE / MODELSCOPE_CACHE (or --cache-dir) at a bigger disk",
                dir, hub_human(need, a), hub_human(avail, b));
        return -1;
    }
    return 0;
}

int hub_lock(const char *path, int quiet, inferd_error *e)
{
    if (hub_mkdirs_for(path, e)) return -1;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        err_set(e, "cannot open lock %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        if (!quiet) fprintf(stderr, "waiting for another download of the same file (%s)\n", path);
        if (flock(fd, LOCK_EX)) {
            err_set(e, "cannot lock %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
    }
    return fd;
}

void hub_unlock(int fd)
{
    if (fd >= 0) close(fd); /* closing drops the flock */
}

/* What serving needs. Top-level files only: subfolders hold other formats
 * (onnx/, original/ consolidated.pth, openvino/) — except sentence-transformers'
 * pooling config, which embeddings need. */
int hub_default_wants(const char *path, int has_safetensors)
{
    static const char *keep[] = {
        "*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken",
        "tokenizer*", "vocab*", "merges*", NULL,
    };
    if (!strncmp(path, "1_Pooling/", 10)) return 1;
    if (strchr(path, '/')) return 0;
    for (int i = 0; keep[i]; i++)
        if (!fnmatch(keep[i], path, 0)) return 1;
    /* No safetensors: PyTorch pickles are the only weights there are. */
    return !has_safetensors && !fnmatch("pytorch_model*.bin", path, 0);
}

/* Include/exclude as huggingface_hub applies them: fnmatch where '*'
 * crosses '/', a pattern ending in '/' means everything below it. */
static int glob_match(const char *pat, const char *path)
{
    size_t n = strlen(pat);
    if (n && pat[n - 1] == '/') {
        char *p = hub_xprintf("%s*", pat);
        int m = !fnmatch(p, path, 0);
        free(p);
        return m;
    }
    return !fnmatch(pat, path, 0);
}

int hub_repo_flags(const char *path)
{
    if (fnmatch("*.safetensors", path, 0)) return 0;
    return HUB_HAS_SAFETENSORS | (!fnmatch("model*.safetensors", path, 0) ? HUB_HAS_HF_SHARDS : 0);
}

int hub_selected(const char *path, const hub_options *o, int repo_flags)
{
    int in = 0;
    if (o->n_include) {
        for (size_t i = 0; i < o->n_include && !in; i++) in = glob_match(o->include[i], path);
    } else {
        in = hub_default_wants(path, repo_flags & HUB_HAS_SAFETENSORS);
        /* Mistral's repos carry the weights twice: HF shards and one
         * consolidated file for their own runtime. Take the shards only. */
        if (in && (repo_flags & HUB_HAS_HF_SHARDS) && !fnmatch("consolidated*.safetensors", path, 0))
            in = 0;
    }
    for (size_t i = 0; in && i < o->n_exclude; i++)
        if (glob_match(o->exclude[i], path)) in = 0;
    return in;
}

static char *home_cache(void)
{
    const char *x = getenv("XDG_CACHE_HOME");
    if (x && *x) return hub_xstrdup(x);
    const char *h = getenv("HOME");
    return hub_xprintf("%s/.cache", h && *h ? h : "/tmp");
}

char *hub_hf_cache_dir(const hub_options *o)
{
    if (o && o->cache_dir) return hub_xstrdup(o->cache_dir);
    const char *c = getenv("HF_HUB_CACHE");
    if (!c || !*c) c = getenv("HUGGINGFACE_HUB_CACHE");
    if (c && *c) return hub_xstrdup(c);
    const char *home = getenv("HF_HOME");
    if (home && *home) return hub_xprintf("%s/hub", home);
    char *x = home_cache();
    char *r = hub_xprintf("%s/huggingface/hub", x);
    free(x);
    return r;
}

char *hub_ms_cache_dir(const hub_options *o)
{
    if (o && o->cache_dir) return hub_xstrdup(o->cache_dir);
    const char *c = getenv("MODELSCOPE_CACHE");
    if (c && *c) return hub_xstrdup(c);
    char *x = home_cache();
    char *r = hub_xprintf("%s/modelscope/hub", x);
    free(x);
    return r;
}

static int valid_repo_id(const char *id)
{
    const char *slash = strchr(id, '/');
    if (!slash || slash == id || !slash[1] || strchr(slash + 1, '/')) return 0;
    if (strstr(id, "..") || strstr(id, "--")) return 0;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("-_./", *p)))
            return 0;
    return 1;
}

int hub_pull(const char *repo_id, const hub_options *o, char **dir, inferd_error *e)
{
    hub_options def;
    if (!o) { hub_options_init(&def); o = &def; }
    *dir = NULL;
    if (!valid_repo_id(repo_id)) {
        err_set(e, "'%s' is not a repo id: expected ORG/NAME such as Qwen/Qwen2.5-0.5B-Instruct "
                "(or a local folder that exists)", repo_id);
        return -1;
    }
    if (hub_source_resolve(o) == HUB_SOURCE_MODELSCOPE) return hub_ms_pull(repo_id, o, dir, e);
    return hub_hf_pull(repo_id, o, dir, e);
}

int hub_resolve_model(const char *name_or_dir, const hub_options *o, char **dir,
                      inferd_error *e)
{
    struct stat st;
    *dir = NULL;
    if (!stat(name_or_dir, &st) && S_ISDIR(st.st_mode)) {
        *dir = hub_xstrdup(name_or_dir);
        return 0;
    }
    /* A path-looking name that is not there is a typo, not a repo id. */
    if (name_or_dir[0] == '/' || name_or_dir[0] == '.' || name_or_dir[0] == '~') {
        err_set(e, "model folder %s does not exist", name_or_dir);
        return -1;
    }
    return hub_pull(name_or_dir, o, dir, e);
}

/* ---- list and rm ---- */

static long long dir_size(const char *path, int follow)
{
    DIR *d = opendir(path);
    if (!d) return 0;
    long long total = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char *p = hub_xprintf("%s/%s", path, de->d_name);
        struct stat st;
        if (!(follow ? stat : lstat)(p, &st)) {
            if (S_ISDIR(st.st_mode)) total += dir_size(p, follow);
            else if (S_ISREG(st.st_mode)) total += st.st_size;
        }
        free(p);
    }
    closedir(d);
    return total;
}

static char *read_small(const char *path)
{
    char *data = NULL;
    size_t len;
    if (file_read_all(path, 4096, &data, &len, NULL)) return NULL;
    while (len && (data[len - 1] == '\n' || data[len - 1] == ' ')) data[--len] = 0;
    return data;
}

static int list_hf(FILE *f, const char *cache)
{
    DIR *d = opendir(cache);
    if (!d) return 0;
    int count = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "models--", 8)) continue;
        /* models--org--name: '--' never appears inside an id (the Hub forbids it). */
        char *id = hub_xstrdup(de->d_name + 8), *sep = strstr(id, "--");
        if (sep) { *sep = '/'; memmove(sep + 1, sep + 2, strlen(sep + 2) + 1); }
        char *root = hub_xprintf("%s/%s", cache, de->d_name);
        char *blobs = hub_xprintf("%s/blobs", root);
        char *ref = hub_xprintf("%s/refs/main", root);
        char *commit = read_small(ref);
        char sz[32];
        fprintf(f, "%-50s %-10s %-12.12s %9s  %s\n", id, "hf", commit ? commit : "-",
                hub_human(dir_size(blobs, 0), sz), root);
        count++;
        free(commit); free(ref); free(blobs); free(root); free(id);
    }
    closedir(d);
    return count;
}

static int list_ms(FILE *f, const char *cache)
{
    char *models = hub_xprintf("%s/models", cache);
    DIR *d = opendir(models);
    int count = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char *owner = hub_xprintf("%s/%s", models, de->d_name);
        DIR *d2 = opendir(owner);
        struct dirent *de2;
        while (d2 && (de2 = readdir(d2))) {
            if (de2->d_name[0] == '.' || de2->d_type == DT_LNK) continue; /* unmasked alias */
            char *root = hub_xprintf("%s/%s", owner, de2->d_name);
            char *mv = hub_xprintf("%s/.mv", root);
            char *rev = read_small(mv);
            char *id = hub_xprintf("%s/%s", de->d_name, de2->d_name);
            char sz[32];
            const char *r = rev && !strncmp(rev, "Revision:", 9) ? rev + 9 : rev;
            fprintf(f, "%-50s %-10s %-12.12s %9s  %s\n", id, "modelscope", r ? r : "-",
                    hub_human(dir_size(root, 0), sz), root);
            count++;
            free(id); free(rev); free(mv); free(root);
        }
        if (d2) closedir(d2);
        free(owner);
    }
    if (d) closedir(d);
    free(models);
    return count;
}

int hub_list(FILE *f, const hub_options *o, inferd_error *e)
{
    char *hf = hub_hf_cache_dir(o), *ms = hub_ms_cache_dir(o);
    fprintf(f, "%-50s %-10s %-12s %9s  %s\n", "MODEL", "SOURCE", "REVISION", "SIZE", "PATH");
    int n = list_hf(f, hf);
    if (!o || !o->cache_dir || strcmp(hf, ms)) n += list_ms(f, ms);
    free(hf);
    free(ms);
    return n;
}

static int rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st)) return -1;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            char *p = hub_xprintf("%s/%s", path, de->d_name);
            rm_tree(p);
            free(p);
        }
        if (d) closedir(d);
        return rmdir(path);
    }
    return unlink(path);
}

int hub_rm(const char *repo_id, const hub_options *o, inferd_error *e)
{
    char *root;
    if (!valid_repo_id(repo_id)) {
        err_set(e, "'%s' is not a repo id (ORG/NAME)", repo_id);
        return -1;
    }
    if (hub_source_resolve(o) == HUB_SOURCE_MODELSCOPE) {
        char *cache = hub_ms_cache_dir(o);
        root = hub_ms_model_dir(cache, repo_id);
        free(cache);
    } else {
        char *cache = hub_hf_cache_dir(o), *id = hub_xstrdup(repo_id);
        char *slash = strchr(id, '/');
        *slash = 0;
        root = hub_xprintf("%s/models--%s--%s", cache, id, slash + 1);
        free(id);
        free(cache);
    }
    struct stat st;
    if (lstat(root, &st)) {
        err_set(e, "%s is not in the %s cache (%s)", repo_id, hub_source_name(hub_source_resolve(o)),
                root);
        free(root);
        return -1;
    }
    int rc = rm_tree(root);
    if (rc) err_set(e, "could not remove all of %s: %s", root, strerror(errno));
    if (!rc && hub_source_resolve(o) == HUB_SOURCE_MODELSCOPE) {
        /* and the unmasked alias modelscope makes for names with dots */
        char *cache = hub_ms_cache_dir(o), *alias = hub_xprintf("%s/models/%s", cache, repo_id);
        struct stat lst;
        if (!lstat(alias, &lst) && S_ISLNK(lst.st_mode)) unlink(alias);
        free(alias);
        free(cache);
    }
    free(root);
    return rc;
}
