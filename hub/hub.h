/* hub: fetch model folders from the Hugging Face Hub and ModelScope into the
 * caches their own Python libraries use, so a model pulled by inferd is found
 * by transformers / modelscope and the reverse. Used by cli/ (pull, list, rm,
 * and serve / run given a repo id). It moves files only: it never opens a
 * model (loader/ does) and knows nothing of serving.
 *
 * Hugging Face cache (as huggingface_hub lays it out):
 *   $HF_HUB_CACHE/models--ORG--NAME/blobs/<etag>          file contents
 *                                  /refs/<revision>       commit hash
 *                                  /snapshots/<commit>/F  -> ../../blobs/<etag>
 * ModelScope cache (as the modelscope library lays it out):
 *   $MODELSCOPE_CACHE/models/OWNER/NAME/F   plus .msc / .mdl index pickles
 *   ('.' in NAME is written '___', as modelscope does).
 *
 * Environment read (each overridden by the matching hub_options field):
 *   HF_ENDPOINT, HF_TOKEN, HF_TOKEN_PATH, HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE,
 *   MODELSCOPE_DOMAIN, MODELSCOPE_URL_SCHEME, MODELSCOPE_CACHE,
 *   INFERD_MODEL_SOURCE=hf|modelscope, VLLM_USE_MODELSCOPE=true,
 *   XDG_CACHE_HOME, HOME. */
#ifndef INFERD_HUB_H
#define INFERD_HUB_H

#include <stddef.h>
#include <stdio.h>
#include "common/common.h"

typedef enum hub_source {
    HUB_SOURCE_AUTO = 0, /* INFERD_MODEL_SOURCE / VLLM_USE_MODELSCOPE, else HF */
    HUB_SOURCE_HF,
    HUB_SOURCE_MODELSCOPE,
} hub_source;

/* What to pull and how. Zero-initialise (or hub_options_init) and set what
 * you need; every NULL / 0 field means "from the environment or default".
 * Strings are borrowed for the duration of the call. */
typedef struct hub_options {
    hub_source source;
    const char *revision;  /* NULL: "main" (HF) or "master" (ModelScope) */
    const char *token;     /* NULL: $HF_TOKEN, then the token file */
    const char *endpoint;  /* NULL: $HF_ENDPOINT or https://huggingface.co;
                              ModelScope: $MODELSCOPE_URL_SCHEME$MODELSCOPE_DOMAIN */
    const char *cache_dir; /* NULL: $HF_HUB_CACHE / $MODELSCOPE_CACHE defaults */
    const char *const *include; /* fnmatch globs on repo paths; NULL: the */
    size_t n_include;           /* default selection (what serving needs) */
    const char *const *exclude;
    size_t n_exclude;
    int offline;     /* 1: cache only; 0: $HF_HUB_OFFLINE decides */
    int verify;      /* 1: re-hash cached files against the hub's sha256 */
    int quiet;       /* 1: no progress on stderr */
    int max_workers; /* parallel downloads; 0: 8 */
} hub_options;

void hub_options_init(hub_options *o);

/* The source o selects once the environment is taken into account. */
hub_source hub_source_resolve(const hub_options *o);
const char *hub_source_name(hub_source s);

/* Download the selected files of repo_id (e.g. "Qwen/Qwen2.5-0.5B-Instruct")
 * into the cache and return, in *dir (malloc'd, caller frees), the local
 * folder that holds them (HF: the snapshot folder). Files already cached are
 * not downloaded again. Progress goes to stderr. */
int hub_pull(const char *repo_id, const hub_options *o, char **dir, inferd_error *e);

/* What serve/run call: name_or_dir is either an existing local folder
 * (returned as is) or a repo id, resolved through the cache and pulled when
 * missing (or, offline, found in the cache only). *dir is malloc'd. */
int hub_resolve_model(const char *name_or_dir, const hub_options *o, char **dir,
                      inferd_error *e);

/* Default file selection: 1 if a repo path is one serving needs, given
 * whether the repo has safetensors weights (then .bin/.pth are skipped). */
int hub_default_wants(const char *path, int repo_has_safetensors);

/* Print the cached models of both caches (id, source, revision, size, path)
 * to f. Returns the number of models listed, or -1. */
int hub_list(FILE *f, const hub_options *o, inferd_error *e);

/* Remove repo_id from the cache of the selected source (whole repo: blobs,
 * refs, snapshots). Returns 0, or -1 when it is not cached. */
int hub_rm(const char *repo_id, const hub_options *o, inferd_error *e);

/* Paths the hub would use, for messages and tests (malloc'd strings). */
char *hub_hf_cache_dir(const hub_options *o);
char *hub_ms_cache_dir(const hub_options *o);

#endif
