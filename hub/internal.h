/* hub internals shared by hub.c, http.c, hf.c and ms.c; not a public header
 * (nothing outside hub/ includes it). */
#ifndef INFERD_HUB_INTERNAL_H
#define INFERD_HUB_INTERNAL_H

#include "hub/hub.h"
#include "common/common.h"

/* ---- one HTTP exchange (API calls, HEAD) ---- */
typedef struct hub_http_resp {
    long status;           /* 0 when no response arrived (network error) */
    strbuf body;
    char *location;        /* Location header, as sent */
    char *etag;            /* ETag, quotes and W/ removed */
    char *linked_etag;     /* X-Linked-Etag (sha256 of an LFS file) */
    char *repo_commit;     /* X-Repo-Commit */
    char *error_code;      /* X-Error-Code (RepoNotFound, GatedRepo, ...) */
    char *error_message;   /* X-Error-Message */
    long long content_length, linked_size; /* -1 if absent */
    char net_error[256];   /* curl's message when status == 0 */
} hub_http_resp;

/* The credentials of one pull: token and the origin (scheme://host:port) it
 * may be sent to. Never sent anywhere else, redirects included. */
typedef struct hub_auth {
    const char *token;  /* NULL: anonymous */
    char *origin;
} hub_auth;

/* method "GET" or "HEAD". Redirects are NOT followed (the caller decides,
 * the CDN's signed Location must be used exactly as given). Retries network
 * errors, 429 and 5xx with backoff. Returns 0 when a response arrived. */
int hub_http(const char *method, const char *url, const hub_auth *auth,
             hub_http_resp *r);
void hub_http_resp_free(hub_http_resp *r);
/* "scheme://host:port" of url, port made explicit; NULL if unparsable. */
char *hub_url_origin(const char *url);
/* Resolve a (possibly relative) Location against base. */
char *hub_url_join(const char *base, const char *location);
/* Percent-encode s; '/' kept when keep_slash. */
char *hub_url_escape(const char *s, int keep_slash);

/* ---- parallel downloads ---- */
typedef enum hub_hash { HASH_NONE = 0, HASH_SHA256, HASH_GIT_SHA1 } hub_hash;

typedef struct hub_job {
    char *name;        /* repo path, for messages */
    char *url;         /* first URL; redirects are followed per hub_auth rules */
    char *tmp_path;    /* partial download, kept across runs for resume */
    char *final_path;  /* renamed into place once verified */
    long long size;    /* expected bytes, -1 unknown */
    hub_hash hash;
    char digest[65];   /* expected hex digest */
} hub_job;

/* Download jobs (up to max_workers at a time), resuming partial tmp files
 * with Range requests, verifying size and digest (a mismatch is fetched once
 * more, then an error), renaming each into final_path. */
int hub_download(hub_job *jobs, size_t n, const hub_auth *auth, int max_workers,
                 int quiet, const char *what, inferd_error *e);
void hub_job_free(hub_job *j);

/* ---- helpers ---- */
int hub_file_digest(const char *path, hub_hash h, char out[65], inferd_error *e);
int hub_mkdirs(const char *dir, inferd_error *e); /* mkdir -p */
int hub_mkdirs_for(const char *path, inferd_error *e); /* parent of path */
long long hub_file_size(const char *path); /* -1 if missing */
/* What the repo holds, for the default selection. */
#define HUB_HAS_SAFETENSORS 1     /* any *.safetensors */
#define HUB_HAS_HF_SHARDS 2       /* model*.safetensors (then consolidated* is a duplicate) */
int hub_repo_flags(const char *path); /* the flags one repo path contributes */
int hub_selected(const char *path, const hub_options *o, int repo_flags);
int hub_env_offline(const hub_options *o);
char *hub_xstrdup(const char *s);
char *hub_xprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Human-readable byte count into buf. */
const char *hub_human(long long n, char buf[32]);
int hub_check_free_space(const char *dir, long long need, inferd_error *e);
/* flock()ed lock file; returns fd or -1. Says on stderr when it waits. */
int hub_lock(const char *path, int quiet, inferd_error *e);
void hub_unlock(int fd);

/* ---- sources ---- */
int hub_hf_pull(const char *repo_id, const hub_options *o, char **dir, inferd_error *e);
/* ModelScope writes "Qwen2.5" as "Qwen2___5" on disk: CACHE/models/OWNER/NAME. */
char *hub_ms_model_dir(const char *cache, const char *repo_id);
int hub_ms_pull(const char *repo_id, const hub_options *o, char **dir, inferd_error *e);

#endif
