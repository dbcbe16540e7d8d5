/* loader/safetensors.c: the loader's weight table (ld_weights_*, the entry
 * points model/ opens a folder with; loader.h says what the module is for)
 * and the safetensors reader. The format is an 8-byte little-endian header
 * length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw
 * data. The header and every offset in it are untrusted: all of it is checked
 * before a pointer into the mapping is handed out. */
#include "loader/loader.h"
#include "loader/loader_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The reference implementation refuses headers over 100 MB. */
#define MAX_HEADER_BYTES (100u << 20)
#define MAX_SHARDS 4096

typedef struct mapping {
    char *path;
    void *base;
    size_t size;
} mapping;

struct ld_weights {
    mapping *maps;
    size_t n_maps;
    ld_tensor *tensors;       /* sorted by name */
    size_t n_tensors, cap;
    void **owned;             /* aligned copies of misaligned tensors */
    size_t n_owned;
};

static int dtype_from_name(const char *s, inferd_dtype *out)
{
    static const struct { const char *name; inferd_dtype t; } known[] = {
        {"F32", DT_F32}, {"F16", DT_F16}, {"BF16", DT_BF16}, {"I32", DT_I32}, {"I64", DT_I64},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(s, known[i].name) == 0) {
            *out = known[i].t;
            return 0;
        }
    return -1;
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const ld_tensor *)a)->name, ((const ld_tensor *)b)->name);
}

typedef struct span {
    uint64_t begin, end;
    const char *name;
} span;

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int map_file(const char *path, mapping *m, inferd_error *e)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err_set(e, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        err_set(e, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    m->size = (size_t)st.st_size;
    m->base = NULL;
    if (m->size > 0) {
        m->base = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m->base == MAP_FAILED) {
            m->base = NULL;
            err_set(e, "%s: mmap failed: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
    }
    close(fd);
    m->path = strdup(path);
    if (!m->path) {
        err_set(e, "out of memory");
        return -1;
    }
    return 0;
}

int ldi_push_tensor(ld_weights *w, const ld_tensor *t, inferd_error *e)
{
    if (w->n_tensors == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 256;
        ld_tensor *n = realloc(w->tensors, cap * sizeof *n);
        if (!n) {
            free((char *)t->name);
            err_set(e, "out of memory");
            return -1;
        }
        w->tensors = n;
        w->cap = cap;
    }
    w->tensors[w->n_tensors++] = *t;
    return 0;
}

/* Tensors are usually aligned to their element size; an odd writer may not
 * do that, and the backends read elements directly, so such a tensor gets an
 * aligned copy instead of failing. */
void *ldi_own(ld_weights *w, size_t n, inferd_error *e)
{
    void **owned = realloc(w->owned, (w->n_owned + 1) * sizeof *owned);
    if (!owned) {
        err_set(e, "out of memory");
        return NULL;
    }
    w->owned = owned;
    size_t bytes = (n + 63) / 64 * 64;
    void *buf = aligned_alloc(64, bytes ? bytes : 64);
    if (!buf) {
        err_set(e, "out of memory");
        return NULL;
    }
    memset(buf, 0, bytes ? bytes : 64);
    w->owned[w->n_owned++] = buf;
    return buf;
}

const void *ldi_aligned_data(ld_weights *w, const uint8_t *p, size_t n, size_t align,
                             inferd_error *e)
{
    if (align <= 1 || ((uintptr_t)p % align) == 0 || n == 0)
        return p;
    void *copy = ldi_own(w, n, e);
    if (copy)
        memcpy(copy, p, n);
    return copy;
}

static int parse_shape(json_t *shape, ld_tensor *t, const char *file, const char *name,
                       uint64_t *n_elems, inferd_error *e)
{
    if (!json_is_array(shape) || json_array_size(shape) > LD_MAX_DIMS) {
        err_set(e, "%s: tensor '%s': \"shape\" must be a list of at most %d integers", file,
                name, LD_MAX_DIMS);
        return -1;
    }
    uint64_t n = 1;
    t->n_dims = (int)json_array_size(shape);
    for (int d = 0; d < t->n_dims; d++) {
        json_t *v = json_array_get(shape, (size_t)d);
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            err_set(e, "%s: tensor '%s': shape entries must be non-negative integers", file,
                    name);
            return -1;
        }
        uint64_t dim = (uint64_t)json_integer_value(v);
        if (dim != 0 && n > UINT64_MAX / dim) {
            err_set(e, "%s: tensor '%s': shape overflows", file, name);
            return -1;
        }
        n *= dim;
        t->shape[d] = (int64_t)dim;
    }
    *n_elems = n;
    return 0;
}

int ldi_map(ld_weights *w, const char *path, const uint8_t **base, size_t *size,
            inferd_error *e)
{
    mapping *maps = realloc(w->maps, (w->n_maps + 1) * sizeof *maps);
    if (!maps) {
        err_set(e, "out of memory");
        return -1;
    }
    w->maps = maps;
    mapping *m = &w->maps[w->n_maps];
    memset(m, 0, sizeof *m);
    if (map_file(path, m, e)) {
        free(m->path);
        if (m->base)
            munmap(m->base, m->size);
        return -1;
    }
    w->n_maps++;
    *base = m->base;
    *size = m->size;
    return 0;
}

/* Parses one file's header and appends its tensors to w. The tensor names are
 * owned by w (strdup). */
static int add_file(ld_weights *w, const char *path, inferd_error *e)
{
    const uint8_t *base;
    size_t size;
    if (ldi_map(w, path, &base, &size, e))
        return -1;
    if (size < 8) {
        err_set(e, "%s: file is too small to be safetensors (%zu bytes)", path, size);
        return -1;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | base[i];
    if (hlen > MAX_HEADER_BYTES) {
        err_set(e, "%s: header length %llu exceeds the 100 MB limit (not a safetensors file?)",
                path, (unsigned long long)hlen);
        return -1;
    }
    if (hlen > size - 8) {
        err_set(e, "%s: header length %llu runs past the end of the file (%zu bytes); "
                   "the file is truncated or not safetensors",
                path, (unsigned long long)hlen, size);
        return -1;
    }
    json_error_t je;
    json_t *root = json_loadb((const char *)base + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        err_set(e, "%s: header is not valid JSON: %s (at byte %d)", path, je.text, je.position);
        return -1;
    }
    int rc = -1;
    span *spans = NULL;
    size_t n_spans = 0;
    if (!json_is_object(root)) {
        err_set(e, "%s: header must be a JSON object", path);
        goto out;
    }
    const uint8_t *data = base + 8 + hlen;
    uint64_t data_size = size - 8 - hlen;
    spans = calloc(json_object_size(root) + 1, sizeof *spans);
    if (!spans) {
        err_set(e, "out of memory");
        goto out;
    }
    const char *name;
    json_t *info;
    json_object_foreach(root, name, info) {
        if (strcmp(name, "__metadata__") == 0)
            continue;
        ld_tensor t;
        memset(&t, 0, sizeof t);
        if (!json_is_object(info)) {
            err_set(e, "%s: tensor '%s': entry must be an object", path, name);
            goto out;
        }
        json_t *dt = json_object_get(info, "dtype");
        json_t *offs = json_object_get(info, "data_offsets");
        if (!json_is_string(dt)) {
            err_set(e, "%s: tensor '%s': missing \"dtype\"", path, name);
            goto out;
        }
        if (dtype_from_name(json_string_value(dt), &t.dtype)) {
            err_set(e, "%s: tensor '%s': dtype %s is not supported (supported: BF16, F16, F32; "
                       "I32/I64 for index tensors)",
                    path, name, json_string_value(dt));
            goto out;
        }
        uint64_t n_elems;
        if (parse_shape(json_object_get(info, "shape"), &t, path, name, &n_elems, e))
            goto out;
        if (!json_is_array(offs) || json_array_size(offs) != 2 ||
            !json_is_integer(json_array_get(offs, 0)) ||
            !json_is_integer(json_array_get(offs, 1)) ||
            json_integer_value(json_array_get(offs, 0)) < 0 ||
            json_integer_value(json_array_get(offs, 1)) < 0) {
            err_set(e, "%s: tensor '%s': \"data_offsets\" must be [begin, end] non-negative "
                       "integers",
                    path, name);
            goto out;
        }
        uint64_t begin = (uint64_t)json_integer_value(json_array_get(offs, 0));
        uint64_t end = (uint64_t)json_integer_value(json_array_get(offs, 1));
        if (begin > end || end > data_size) {
            err_set(e, "%s: tensor '%s': data_offsets [%llu, %llu] lie outside the data "
                       "section (%llu bytes); the file is truncated or corrupt",
                    path, name, (unsigned long long)begin, (unsigned long long)end,
                    (unsigned long long)data_size);
            goto out;
        }
        size_t esz = dtype_size(t.dtype);
        if (n_elems > UINT64_MAX / esz || n_elems * esz != end - begin) {
            err_set(e, "%s: tensor '%s': shape holds %llu elements of %s (%llu bytes) but "
                       "data_offsets span %llu bytes",
                    path, name, (unsigned long long)n_elems, dtype_name(t.dtype),
                    (unsigned long long)(n_elems * esz), (unsigned long long)(end - begin));
            goto out;
        }
        t.nbytes = (size_t)(end - begin);
        t.data = ldi_aligned_data(w, data + begin, t.nbytes, esz, e);
        if (!t.data)
            goto out;
        t.name = strdup(name);
        if (!t.name) {
            err_set(e, "out of memory");
            goto out;
        }
        if (ldi_push_tensor(w, &t, e))
            goto out;
        spans[n_spans++] = (span){begin, end, w->tensors[w->n_tensors - 1].name};
    }
    qsort(spans, n_spans, sizeof *spans, cmp_span);
    for (size_t i = 1; i < n_spans; i++)
        if (spans[i].begin < spans[i - 1].end) {
            err_set(e, "%s: tensors '%s' and '%s' overlap in the file", path, spans[i - 1].name,
                    spans[i].name);
            goto out;
        }
    rc = 0;
out:
    free(spans);
    json_decref(root);
    return rc;
}

/* Sorts the table and refuses a name present twice (two shards claiming the
 * same tensor would make the model depend on file order). */
int ldi_finish(ld_weights *w, inferd_error *e)
{
    qsort(w->tensors, w->n_tensors, sizeof *w->tensors, cmp_tensor_name);
    for (size_t i = 1; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, w->tensors[i - 1].name) == 0) {
            err_set(e, "tensor '%s' appears in more than one file", w->tensors[i].name);
            return -1;
        }
    return 0;
}

int ld_weights_open_file(const char *path, ld_weights **out, inferd_error *e)
{
    ld_weights *w = calloc(1, sizeof *w);
    if (!w) {
        err_set(e, "out of memory");
        return -1;
    }
    if (add_file(w, path, e) || ldi_finish(w, e)) {
        ld_weights_close(w);
        return -1;
    }
    *out = w;
    return 0;
}

static int valid_shard_name(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n < 256 && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

typedef int (*add_fn)(ld_weights *w, const char *path, inferd_error *e);

static int open_sharded(ld_weights *w, const char *dir, const char *index_path, add_fn add,
                        inferd_error *e)
{
    char *text = NULL;
    size_t len = 0;
    if (file_read_all(index_path, 64u << 20, &text, &len, e))
        return -1;
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    free(text);
    if (!root) {
        err_set(e, "%s: not valid JSON: %s (line %d)", index_path, je.text, je.line);
        return -1;
    }
    int rc = -1;
    json_t *map = json_object_get(root, "weight_map");
    json_t *files = json_object();
    if (!files) {
        err_set(e, "out of memory");
        goto out;
    }
    if (!json_is_object(map)) {
        err_set(e, "%s: missing \"weight_map\" object", index_path);
        goto out;
    }
    const char *name;
    json_t *v;
    json_object_foreach(map, name, v) {
        if (!json_is_string(v) || !valid_shard_name(json_string_value(v))) {
            err_set(e, "%s: weight_map['%s'] must be a file name in the model folder",
                    index_path, name);
            goto out;
        }
        if (!json_object_get(files, json_string_value(v))) {
            if (json_object_size(files) >= MAX_SHARDS) {
                err_set(e, "%s: more than %d shards", index_path, MAX_SHARDS);
                goto out;
            }
            json_object_set_new(files, json_string_value(v), json_true());
        }
    }
    json_object_foreach(files, name, v) {
        char path[4096];
        if (path_join(path, sizeof path, dir, name)) {
            err_set(e, "%s: path too long", dir);
            goto out;
        }
        if (add(w, path, e))
            goto out;
    }
    if (ldi_finish(w, e))
        goto out;
    json_object_foreach(map, name, v) {
        if (!ld_weights_find(w, name)) {
            err_set(e, "%s: tensor '%s' is listed for %s but that file does not contain it",
                    index_path, name, json_string_value(v));
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(files);
    json_decref(root);
    return rc;
}

/* safetensors first; PyTorch's pytorch_model.bin (single or sharded) only
 * when a folder has no safetensors, as transformers decides. */
int ld_weights_open_dir(const char *dir, ld_weights **out, inferd_error *e)
{
    char single[4096], index[4096], bin[4096], bin_index[4096];
    if (path_join(single, sizeof single, dir, "model.safetensors") ||
        path_join(index, sizeof index, dir, "model.safetensors.index.json") ||
        path_join(bin, sizeof bin, dir, "pytorch_model.bin") ||
        path_join(bin_index, sizeof bin_index, dir, "pytorch_model.bin.index.json")) {
        err_set(e, "%s: path too long", dir);
        return -1;
    }
    ld_weights *w = calloc(1, sizeof *w);
    if (!w) {
        err_set(e, "out of memory");
        return -1;
    }
    int rc;
    if (file_exists(index))
        rc = open_sharded(w, dir, index, add_file, e);
    else if (file_exists(single))
        rc = add_file(w, single, e) || ldi_finish(w, e) ? -1 : 0;
    else if (file_exists(bin_index))
        rc = open_sharded(w, dir, bin_index, ldi_add_pytorch, e);
    else if (file_exists(bin))
        rc = ldi_add_pytorch(w, bin, e) || ldi_finish(w, e) ? -1 : 0;
    else {
        err_set(e, "%s: no model.safetensors or model.safetensors.index.json (nor "
                   "pytorch_model.bin or pytorch_model.bin.index.json)",
                dir);
        rc = -1;
    }
    if (rc) {
        ld_weights_close(w);
        return -1;
    }
    *out = w;
    return 0;
}

int ld_weights_open_pytorch(const char *path, ld_weights **out, inferd_error *e)
{
    ld_weights *w = calloc(1, sizeof *w);
    if (!w) {
        err_set(e, "out of memory");
        return -1;
    }
    if (ldi_add_pytorch(w, path, e) || ldi_finish(w, e)) {
        ld_weights_close(w);
        return -1;
    }
    *out = w;
    return 0;
}

size_t ld_weights_count(const ld_weights *w) { return w->n_tensors; }

const ld_tensor *ld_weights_at(const ld_weights *w, size_t i)
{
    return i < w->n_tensors ? &w->tensors[i] : NULL;
}

const ld_tensor *ld_weights_find(const ld_weights *w, const char *name)
{
    ld_tensor key = {.name = name};
    return bsearch(&key, w->tensors, w->n_tensors, sizeof key, cmp_tensor_name);
}

void ld_weights_close(ld_weights *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_tensors; i++)
        free((char *)w->tensors[i].name);
    free(w->tensors);
    for (size_t i = 0; i < w->n_maps; i++) {
        if (w->maps[i].base)
            munmap(w->maps[i].base, w->maps[i].size);
        free(w->maps[i].path);
    }
    free(w->maps);
    for (size_t i = 0; i < w->n_owned; i++)
        free(w->owned[i]);
    free(w->owned);
    free(w);
}
