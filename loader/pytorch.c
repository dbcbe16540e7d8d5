/* PyTorch checkpoint reader (pytorch_model.bin). torch.save writes either a
 * zip archive (torch >= 1.6: PREFIX/data.pkl + PREFIX/data/<key> storages,
 * stored uncompressed) or, with _use_new_zipfile_serialization=False, a
 * stream of five pickles followed by the raw storages. Both describe the
 * state dict with a pickle, which in Python can run arbitrary code; here it
 * is interpreted by a small machine that knows only the opcodes and the few
 * globals a state dict needs, builds plain values, and refuses everything
 * else by name. Nothing is ever imported or called. Every offset and size in
 * the zip directory, the pickle and the tensor views is checked before a
 * pointer into the mapping is handed out. */
#include "loader/loader.h"
#include "loader/loader_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bounds on what a hostile pickle can make us allocate; a real state dict is
 * far below them (memo ids grow by one per object). */
#define PK_MAX_STACK (1u << 20)
#define PK_MAX_MEMO (1u << 26)
#define PK_MAX_KEY 1024

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)rd16(p) | (uint32_t)rd16(p + 2) << 16; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* ---- zip (only what torch.save writes: stored entries, maybe zip64) ---- */

typedef struct zip_entry {
    const char *name;
    size_t name_len;
    const uint8_t *data;
    uint64_t size;
} zip_entry;

typedef struct zip {
    zip_entry *ent;
    size_t n;
} zip;

/* Finds the end-of-central-directory record; the zip64 one when the classic
 * fields overflowed (checkpoints over 4 GB). */
static int zip_directory(const uint8_t *b, size_t size, const char *path, uint64_t *n_ent,
                         uint64_t *cd_off, uint64_t *cd_size, inferd_error *e)
{
    size_t lo = size > 22 + 65535 ? size - 22 - 65535 : 0, eocd = SIZE_MAX;
    for (size_t i = size >= 22 ? size - 22 + 1 : 0; i-- > lo;)
        if (rd32(b + i) == 0x06054b50 && i + 22 + rd16(b + i + 20) <= size) {
            eocd = i;
            break;
        }
    if (eocd == SIZE_MAX) {
        err_set(e, "%s: no zip end-of-central-directory record: the file is truncated or "
                   "not a torch.save checkpoint", path);
        return -1;
    }
    *n_ent = rd16(b + eocd + 10);
    *cd_size = rd32(b + eocd + 12);
    *cd_off = rd32(b + eocd + 16);
    if (*n_ent == 0xFFFF || *cd_size == 0xFFFFFFFF || *cd_off == 0xFFFFFFFF) {
        if (eocd < 20 || rd32(b + eocd - 20) != 0x07064b50) {
            err_set(e, "%s: zip64 end-of-central-directory locator missing", path);
            return -1;
        }
        uint64_t z = rd64(b + eocd - 20 + 8);
        if (z > eocd - 20 || eocd - 20 - z < 56 || rd32(b + z) != 0x06064b50) {
            err_set(e, "%s: zip64 end-of-central-directory record out of bounds", path);
            return -1;
        }
        *n_ent = rd64(b + z + 32);
        *cd_size = rd64(b + z + 40);
        *cd_off = rd64(b + z + 48);
    }
    if (*cd_off > size || *cd_size > size - *cd_off || *n_ent > *cd_size / 46) {
        err_set(e, "%s: zip central directory (%llu entries at %llu, %llu bytes) lies outside "
                   "the file (%zu bytes): truncated or corrupt",
                path, (unsigned long long)*n_ent, (unsigned long long)*cd_off,
                (unsigned long long)*cd_size, size);
        return -1;
    }
    return 0;
}

/* Applies the zip64 "extended information" extra field to the fields that
 * hold 0xFFFFFFFF, in the order the format defines. */
static int zip64_extra(const uint8_t *x, size_t n, uint64_t *usize, uint64_t *csize,
                       uint64_t *loff)
{
    while (n >= 4) {
        uint16_t id = rd16(x), len = rd16(x + 2);
        if ((size_t)len + 4 > n)
            return -1;
        if (id == 1) {
            const uint8_t *q = x + 4, *end = x + 4 + len;
            uint64_t *f[3] = {usize, csize, loff};
            for (int i = 0; i < 3; i++)
                if (*f[i] == 0xFFFFFFFF) {
                    if (end - q < 8)
                        return -1;
                    *f[i] = rd64(q);
                    q += 8;
                }
        }
        x += 4 + len;
        n -= 4 + (size_t)len;
    }
    return 0;
}

static int zip_open(const uint8_t *b, size_t size, const char *path, zip *z, inferd_error *e)
{
    uint64_t n_ent, cd_off, cd_size;
    if (zip_directory(b, size, path, &n_ent, &cd_off, &cd_size, e))
        return -1;
    z->ent = calloc(n_ent ? n_ent : 1, sizeof *z->ent);
    if (!z->ent) {
        err_set(e, "out of memory");
        return -1;
    }
    const uint8_t *p = b + cd_off, *end = b + cd_off + cd_size;
    for (uint64_t i = 0; i < n_ent; i++) {
        if (end - p < 46 || rd32(p) != 0x02014b50) {
            err_set(e, "%s: zip central directory entry %llu is corrupt", path,
                    (unsigned long long)i);
            return -1;
        }
        uint16_t flags = rd16(p + 8), method = rd16(p + 10);
        uint64_t csize = rd32(p + 20), usize = rd32(p + 24), loff = rd32(p + 42);
        size_t nlen = rd16(p + 28), xlen = rd16(p + 30), clen = rd16(p + 32);
        if ((size_t)(end - p) < 46 + nlen + xlen + clen ||
            zip64_extra(p + 46 + nlen, xlen, &usize, &csize, &loff)) {
            err_set(e, "%s: zip central directory entry %llu is corrupt", path,
                    (unsigned long long)i);
            return -1;
        }
        const char *name = (const char *)p + 46;
        if (flags & 1) {
            err_set(e, "%s: zip entry '%.*s' is encrypted", path, (int)nlen, name);
            return -1;
        }
        if (method != 0) {
            err_set(e, "%s: zip entry '%.*s' is compressed (method %u); torch.save writes "
                       "uncompressed entries: re-save the checkpoint with torch.save or "
                       "convert it to safetensors",
                    path, (int)nlen, name, method);
            return -1;
        }
        if (csize != usize || loff > size || size - loff < 30 || rd32(b + loff) != 0x04034b50) {
            err_set(e, "%s: zip entry '%.*s' has a bad local header or sizes (truncated or "
                       "corrupt file)", path, (int)nlen, name);
            return -1;
        }
        uint64_t data = loff + 30 + rd16(b + loff + 26) + rd16(b + loff + 28);
        if (data > cd_off || usize > cd_off - data) {
            err_set(e, "%s: zip entry '%.*s' (%llu bytes at %llu) runs past the data area "
                       "(truncated or corrupt file)",
                    path, (int)nlen, name, (unsigned long long)usize, (unsigned long long)data);
            return -1;
        }
        z->ent[i] = (zip_entry){name, nlen, b + data, usize};
        p += 46 + nlen + xlen + clen;
    }
    z->n = n_ent;
    return 0;
}

/* The entry named prefix + mid + suffix, or NULL. */
static const zip_entry *zip_find(const zip *z, const char *prefix, size_t plen, const char *mid,
                                 const char *key, size_t klen)
{
    size_t mlen = strlen(mid);
    for (size_t i = 0; i < z->n; i++) {
        const zip_entry *x = &z->ent[i];
        if (x->name_len == plen + mlen + klen && !memcmp(x->name, prefix, plen) &&
            !memcmp(x->name + plen, mid, mlen) && !memcmp(x->name + plen + mlen, key, klen))
            return x;
    }
    return NULL;
}

/* ---- the pickle machine ---- */

typedef enum pk_kind {
    PK_NONE, PK_BOOL, PK_INT, PK_FLOAT, PK_STR, PK_TUPLE, PK_LIST, PK_DICT,
    PK_GLOBAL, PK_STORAGE, PK_TENSOR, PK_MARK,
} pk_kind;

typedef enum pk_global {
    G_ORDERED_DICT, G_REBUILD_TENSOR, G_REBUILD_PARAMETER, G_STORAGE_TYPE,
} pk_global;

/* Storage classes torch writes. Types inferd has no use for are still
 * understood (their sizes matter for bounds), and their tensors skipped. */
static const struct storage_type {
    const char *name;
    int dtype;          /* inferd_dtype, or -1: skipped */
    size_t esize;
} STORAGE_TYPES[] = {
    {"FloatStorage", DT_F32, 4}, {"HalfStorage", DT_F16, 2}, {"BFloat16Storage", DT_BF16, 2},
    {"LongStorage", DT_I64, 8},  {"IntStorage", DT_I32, 4},  {"DoubleStorage", -1, 8},
    {"ShortStorage", -1, 2},     {"CharStorage", -1, 1},     {"ByteStorage", -1, 1},
    {"BoolStorage", -1, 1},
};

typedef struct pk_obj pk_obj;
struct pk_obj {
    pk_kind kind;
    int64_t i;               /* BOOL, INT; GLOBAL: pk_global; STORAGE: storage index */
    double f;
    const char *s;           /* STR: bytes inside the mapping, not NUL-terminated */
    size_t n;
    pk_obj **items;          /* TUPLE, LIST; DICT: key, value, key, value... */
    size_t n_items, cap;
    const struct storage_type *st; /* GLOBAL G_STORAGE_TYPE */
    /* TENSOR: a view of a storage, sizes and strides in elements */
    int storage;
    int64_t offset;
    int ndim;
    int64_t shape[LD_MAX_DIMS], stride[LD_MAX_DIMS];
};

typedef struct pk_storage {
    const char *key;
    size_t key_len;
    const struct storage_type *st;
    uint64_t numel;
    const uint8_t *data;     /* NULL until resolved from the zip or the stream */
} pk_storage;

typedef struct pk_vm {
    const char *path;
    const uint8_t *start, *p, *end;
    pk_obj **stack;
    size_t sp, stack_cap;
    size_t *marks;
    size_t n_marks, marks_cap;
    pk_obj **memo;
    size_t memo_cap, memo_count;
    pk_obj **all;            /* every object, freed together */
    size_t n_all, all_cap;
    pk_storage *storages;
    size_t n_storages, storages_cap;
    inferd_error *e;
} pk_vm;

static int vm_fail(pk_vm *vm, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int vm_fail(pk_vm *vm, const char *fmt, ...)
{
    char msg[INFERD_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    err_set(vm->e, "%s: %s (pickle byte %zu)", vm->path, msg, (size_t)(vm->p - vm->start));
    return -1;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return -1;
    *p = q;
    *cap = n;
    return 0;
}

static pk_obj *vm_new(pk_vm *vm, pk_kind k)
{
    if (grow((void **)&vm->all, &vm->all_cap, vm->n_all + 1, sizeof *vm->all))
        return NULL;
    pk_obj *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    o->kind = k;
    vm->all[vm->n_all++] = o;
    return o;
}

static int obj_add(pk_obj *o, pk_obj *item)
{
    if (grow((void **)&o->items, &o->cap, o->n_items + 1, sizeof *o->items))
        return -1;
    o->items[o->n_items++] = item;
    return 0;
}

static int vm_push(pk_vm *vm, pk_obj *o)
{
    if (!o)
        return vm_fail(vm, "out of memory");
    if (vm->sp >= PK_MAX_STACK)
        return vm_fail(vm, "pickle stack deeper than %u", PK_MAX_STACK);
    if (grow((void **)&vm->stack, &vm->stack_cap, vm->sp + 1, sizeof *vm->stack))
        return vm_fail(vm, "out of memory");
    vm->stack[vm->sp++] = o;
    return 0;
}

static pk_obj *vm_pop(pk_vm *vm)
{
    if (vm->sp == 0 || (vm->n_marks && vm->marks[vm->n_marks - 1] == vm->sp)) {
        vm_fail(vm, "pickle stack underflow");
        return NULL;
    }
    return vm->stack[--vm->sp];
}

static pk_obj *vm_top(pk_vm *vm)
{
    if (vm->sp == 0 || (vm->n_marks && vm->marks[vm->n_marks - 1] == vm->sp)) {
        vm_fail(vm, "pickle stack underflow");
        return NULL;
    }
    return vm->stack[vm->sp - 1];
}

/* Pops the objects above the last MARK into a new object of kind k. */
static pk_obj *vm_pop_mark(pk_vm *vm, pk_kind k)
{
    if (!vm->n_marks) {
        vm_fail(vm, "pickle MARK missing");
        return NULL;
    }
    size_t m = vm->marks[--vm->n_marks];
    pk_obj *o = vm_new(vm, k);
    if (!o) {
        vm_fail(vm, "out of memory");
        return NULL;
    }
    for (size_t i = m; i < vm->sp; i++)
        if (obj_add(o, vm->stack[i])) {
            vm_fail(vm, "out of memory");
            return NULL;
        }
    vm->sp = m;
    return o;
}

static const uint8_t *vm_take(pk_vm *vm, uint64_t n)
{
    if ((uint64_t)(vm->end - vm->p) < n) {
        vm_fail(vm, "pickle ends in the middle of an opcode (truncated file)");
        return NULL;
    }
    const uint8_t *q = vm->p;
    vm->p += n;
    return q;
}

static int vm_memo_put(pk_vm *vm, uint64_t idx)
{
    pk_obj *o = vm_top(vm);
    if (!o)
        return -1;
    /* Every memoized object took at least one byte of pickle to make, so an
     * index past the pickle's length is a lie meant to make us allocate. */
    if (idx >= PK_MAX_MEMO || idx > (uint64_t)(vm->end - vm->start))
        return vm_fail(vm, "pickle memo index %llu too large", (unsigned long long)idx);
    size_t old = vm->memo_cap;
    if (grow((void **)&vm->memo, &vm->memo_cap, idx + 1, sizeof *vm->memo))
        return vm_fail(vm, "out of memory");
    if (vm->memo_cap > old)
        memset(vm->memo + old, 0, (vm->memo_cap - old) * sizeof *vm->memo);
    if (!vm->memo[idx])
        vm->memo_count++;
    vm->memo[idx] = o;
    return 0;
}

static int vm_memo_get(pk_vm *vm, uint64_t idx)
{
    if (idx >= vm->memo_cap || !vm->memo[idx])
        return vm_fail(vm, "pickle refers to memo entry %llu that was never stored",
                       (unsigned long long)idx);
    return vm_push(vm, vm->memo[idx]);
}

static int str_is(const pk_obj *o, const char *s)
{
    return o && o->kind == PK_STR && o->n == strlen(s) && !memcmp(o->s, s, o->n);
}

/* The allow-list. A module/name pair outside it is refused before anything
 * else happens: this is where a pickle calling os.system stops. */
static int vm_global(pk_vm *vm, const char *mod, size_t ml, const char *name, size_t nl)
{
#define IS(s, l, lit) ((l) == sizeof(lit) - 1 && !memcmp((s), (lit), (l)))
    pk_obj *o = vm_new(vm, PK_GLOBAL);
    if (!o)
        return vm_fail(vm, "out of memory");
    if (IS(mod, ml, "collections") && IS(name, nl, "OrderedDict"))
        o->i = G_ORDERED_DICT;
    else if (IS(mod, ml, "torch._utils") && IS(name, nl, "_rebuild_tensor_v2"))
        o->i = G_REBUILD_TENSOR;
    else if (IS(mod, ml, "torch._utils") && IS(name, nl, "_rebuild_parameter"))
        o->i = G_REBUILD_PARAMETER;
    else {
        o->i = G_STORAGE_TYPE;
        for (size_t i = 0; i < sizeof STORAGE_TYPES / sizeof STORAGE_TYPES[0]; i++)
            if (IS(mod, ml, "torch") && nl == strlen(STORAGE_TYPES[i].name) &&
                !memcmp(name, STORAGE_TYPES[i].name, nl))
                o->st = &STORAGE_TYPES[i];
        if (!o->st)
            return vm_fail(vm,
                           "refusing pickle global '%.*s.%.*s': a checkpoint may only hold a "
                           "state dict of tensors (allowed: collections.OrderedDict, "
                           "torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter, "
                           "torch.*Storage); inferd never runs code from pickles",
                           (int)(ml > 100 ? 100 : ml), mod, (int)(nl > 100 ? 100 : nl), name);
    }
#undef IS
    return vm_push(vm, o);
}

/* BINPERSID: ('storage', torch.XStorage, key, location, numel[, None]). The
 * same key may appear many times (views share storages); it must always
 * name the same type and size. */
static int vm_persistent(pk_vm *vm)
{
    pk_obj *pid = vm_pop(vm);
    if (!pid)
        return -1;
    pk_obj **it = pid->items;
    if (pid->kind != PK_TUPLE || (pid->n_items != 5 && pid->n_items != 6) ||
        !str_is(it[0], "storage") || it[1]->kind != PK_GLOBAL || it[1]->i != G_STORAGE_TYPE ||
        it[2]->kind != PK_STR || it[3]->kind != PK_STR || it[4]->kind != PK_INT ||
        it[4]->i < 0 || (pid->n_items == 6 && it[5]->kind != PK_NONE))
        return vm_fail(vm, "persistent id is not ('storage', torch.XStorage, key, location, "
                           "size); storage views of torch < 1.0 files are not supported");
    if (it[2]->n == 0 || it[2]->n > 64)
        return vm_fail(vm, "storage key of %zu bytes", it[2]->n);
    size_t k;
    for (k = 0; k < vm->n_storages; k++)
        if (vm->storages[k].key_len == it[2]->n && !memcmp(vm->storages[k].key, it[2]->s, it[2]->n))
            break;
    if (k == vm->n_storages) {
        if (grow((void **)&vm->storages, &vm->storages_cap, k + 1, sizeof *vm->storages))
            return vm_fail(vm, "out of memory");
        vm->storages[k] = (pk_storage){it[2]->s, it[2]->n, it[1]->st, (uint64_t)it[4]->i, NULL};
        vm->n_storages++;
    } else if (vm->storages[k].st != it[1]->st || vm->storages[k].numel != (uint64_t)it[4]->i)
        return vm_fail(vm, "storage '%.*s' is declared twice with different types or sizes",
                       (int)it[2]->n, it[2]->s);
    pk_obj *o = vm_new(vm, PK_STORAGE);
    if (!o)
        return vm_fail(vm, "out of memory");
    o->i = (int64_t)k;
    return vm_push(vm, o);
}

static int int_tuple(const pk_obj *t, int64_t *out, int *n)
{
    if (t->kind != PK_TUPLE || t->n_items > LD_MAX_DIMS)
        return -1;
    for (size_t i = 0; i < t->n_items; i++) {
        if (t->items[i]->kind != PK_INT || t->items[i]->i < 0)
            return -1;
        out[i] = t->items[i]->i;
    }
    *n = (int)t->n_items;
    return 0;
}

/* REDUCE: calls one of the allowed globals, by building the value it would
 * return; nothing is executed. */
static int vm_reduce(pk_vm *vm)
{
    pk_obj *args = vm_pop(vm), *fn = args ? vm_pop(vm) : NULL;
    if (!fn)
        return -1;
    if (fn->kind != PK_GLOBAL || args->kind != PK_TUPLE)
        return vm_fail(vm, "REDUCE of something that is not an allowed global");
    pk_obj **a = args->items;
    size_t n = args->n_items;
    switch ((pk_global)fn->i) {
    case G_ORDERED_DICT:
        if (n != 0)
            return vm_fail(vm, "OrderedDict built with arguments");
        return vm_push(vm, vm_new(vm, PK_DICT));
    case G_REBUILD_PARAMETER:
        if (n < 1 || a[0]->kind != PK_TENSOR)
            return vm_fail(vm, "_rebuild_parameter without a tensor");
        return vm_push(vm, a[0]);
    case G_REBUILD_TENSOR: {
        pk_obj *t = vm_new(vm, PK_TENSOR);
        if (!t)
            return vm_fail(vm, "out of memory");
        int nd_stride;
        if ((n != 6 && n != 7) || a[0]->kind != PK_STORAGE || a[1]->kind != PK_INT ||
            a[1]->i < 0 || int_tuple(a[2], t->shape, &t->ndim) ||
            int_tuple(a[3], t->stride, &nd_stride) || nd_stride != t->ndim ||
            a[4]->kind != PK_BOOL)
            return vm_fail(vm, "_rebuild_tensor_v2 arguments are not (storage, offset, size, "
                               "stride, requires_grad, hooks) with at most %d non-negative "
                               "dimensions", LD_MAX_DIMS);
        t->storage = (int)a[0]->i;
        t->offset = a[1]->i;
        return vm_push(vm, t);
    }
    case G_STORAGE_TYPE:
        break;
    }
    return vm_fail(vm, "a storage class is called directly; only storages by persistent id "
                       "are supported");
}

static int64_t vm_long(const uint8_t *q, size_t n)
{
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;)
        v = v << 8 | q[i];
    if (n < 8 && n > 0 && (q[n - 1] & 0x80))
        v |= ~(uint64_t)0 << (8 * n);
    return (int64_t)v;
}

/* Runs one pickle from vm->p to its STOP and returns its value. */
static pk_obj *vm_run(pk_vm *vm)
{
    vm->sp = 0;
    vm->n_marks = 0;
    for (;;) {
        const uint8_t *q = vm_take(vm, 1);
        if (!q)
            return NULL;
        uint8_t op = *q;
        pk_obj *o = NULL, *x, *y;
        int rc = 0;
        switch (op) {
        case 0x80: /* PROTO */
            if (!(q = vm_take(vm, 1)))
                return NULL;
            if (*q > 5) {
                vm_fail(vm, "pickle protocol %u is not supported", *q);
                return NULL;
            }
            break;
        case 0x95: /* FRAME: a length hint only */
            if (!vm_take(vm, 8))
                return NULL;
            break;
        case '.': /* STOP */
            if (vm->sp != 1 || vm->n_marks) {
                vm_fail(vm, "pickle stops with %zu values on the stack", vm->sp);
                return NULL;
            }
            return vm->stack[0];
        case '(': /* MARK */
            if (grow((void **)&vm->marks, &vm->marks_cap, vm->n_marks + 1, sizeof *vm->marks) ||
                vm->n_marks >= PK_MAX_STACK) {
                vm_fail(vm, "too many pickle MARKs");
                return NULL;
            }
            vm->marks[vm->n_marks++] = vm->sp;
            break;
        case ')': rc = vm_push(vm, vm_new(vm, PK_TUPLE)); break;
        case ']': rc = vm_push(vm, vm_new(vm, PK_LIST)); break;
        case '}': rc = vm_push(vm, vm_new(vm, PK_DICT)); break;
        case 'N': rc = vm_push(vm, vm_new(vm, PK_NONE)); break;
        case 't': /* TUPLE */
        case 'l': /* LIST */
            o = vm_pop_mark(vm, op == 't' ? PK_TUPLE : PK_LIST);
            rc = o ? vm_push(vm, o) : -1;
            break;
        case 'd': /* DICT */
            o = vm_pop_mark(vm, PK_DICT);
            if (o && o->n_items % 2) {
                vm_fail(vm, "DICT with an odd number of items");
                return NULL;
            }
            rc = o ? vm_push(vm, o) : -1;
            break;
        case 0x85: case 0x86: case 0x87: { /* TUPLE1..3 */
            int k = op - 0x84;
            if (!(o = vm_new(vm, PK_TUPLE)) || grow((void **)&o->items, &o->cap, (size_t)k,
                                                    sizeof *o->items)) {
                vm_fail(vm, "out of memory");
                return NULL;
            }
            for (int i = k - 1; i >= 0; i--)
                if (!(o->items[i] = vm_pop(vm)))
                    return NULL;
            o->n_items = (size_t)k;
            rc = vm_push(vm, o);
            break;
        }
        case 0x88: case 0x89: /* NEWTRUE, NEWFALSE */
            if ((o = vm_new(vm, PK_BOOL)))
                o->i = op == 0x88;
            rc = vm_push(vm, o);
            break;
        case 'K': case 'M': case 'J': { /* BININT1, BININT2, BININT */
            size_t n = op == 'K' ? 1 : op == 'M' ? 2 : 4;
            if (!(q = vm_take(vm, n)))
                return NULL;
            if ((o = vm_new(vm, PK_INT)))
                o->i = op == 'J' ? (int32_t)rd32(q) : op == 'M' ? rd16(q) : q[0];
            rc = vm_push(vm, o);
            break;
        }
        case 0x8a: /* LONG1 */
            if (!(q = vm_take(vm, 1)))
                return NULL;
            if (*q > 8) {
                vm_fail(vm, "integer of %u bytes is too large", *q);
                return NULL;
            }
            {
                size_t n = *q;
                if (!(q = vm_take(vm, n)))
                    return NULL;
                if ((o = vm_new(vm, PK_INT)))
                    o->i = vm_long(q, n);
            }
            rc = vm_push(vm, o);
            break;
        case 'G': /* BINFLOAT, big-endian */
            if (!(q = vm_take(vm, 8)))
                return NULL;
            if ((o = vm_new(vm, PK_FLOAT))) {
                uint64_t bits = 0;
                for (int i = 0; i < 8; i++)
                    bits = bits << 8 | q[i];
                memcpy(&o->f, &bits, 8);
            }
            rc = vm_push(vm, o);
            break;
        case 'X': case 0x8c: case 0x8d: /* BINUNICODE, SHORT_BINUNICODE, BINUNICODE8 */
        case 'T': case 'U': case 'B': case 'C': { /* BINSTRING, SHORT_BINSTRING, (SHORT_)BINBYTES */
            size_t w = (op == 0x8c || op == 'U' || op == 'C') ? 1 : op == 0x8d ? 8 : 4;
            if (!(q = vm_take(vm, w)))
                return NULL;
            uint64_t n = w == 1 ? q[0] : w == 4 ? rd32(q) : rd64(q);
            if (!(q = vm_take(vm, n)))
                return NULL;
            if ((o = vm_new(vm, PK_STR))) {
                o->s = (const char *)q;
                o->n = (size_t)n;
            }
            rc = vm_push(vm, o);
            break;
        }
        case 'q': case 'r': case 0x94: /* BINPUT, LONG_BINPUT, MEMOIZE */
            if (op == 0x94)
                rc = vm_memo_put(vm, vm->memo_count);
            else if ((q = vm_take(vm, op == 'q' ? 1 : 4)))
                rc = vm_memo_put(vm, op == 'q' ? q[0] : rd32(q));
            else
                return NULL;
            break;
        case 'h': case 'j': /* BINGET, LONG_BINGET */
            if (!(q = vm_take(vm, op == 'h' ? 1 : 4)))
                return NULL;
            rc = vm_memo_get(vm, op == 'h' ? q[0] : rd32(q));
            break;
        case 'c': { /* GLOBAL "module\nname\n" */
            const uint8_t *nl1 = memchr(vm->p, '\n', (size_t)(vm->end - vm->p));
            const uint8_t *nl2 = nl1 ? memchr(nl1 + 1, '\n', (size_t)(vm->end - nl1 - 1)) : NULL;
            if (!nl2) {
                vm_fail(vm, "GLOBAL without its two lines");
                return NULL;
            }
            const uint8_t *mod = vm->p;
            vm->p = nl2 + 1;
            rc = vm_global(vm, (const char *)mod, (size_t)(nl1 - mod), (const char *)nl1 + 1,
                           (size_t)(nl2 - nl1 - 1));
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            if (!(y = vm_pop(vm)) || !(x = vm_pop(vm)))
                return NULL;
            if (x->kind != PK_STR || y->kind != PK_STR) {
                vm_fail(vm, "STACK_GLOBAL of non-strings");
                return NULL;
            }
            rc = vm_global(vm, x->s, x->n, y->s, y->n);
            break;
        case 'R': rc = vm_reduce(vm); break;
        case 'Q': rc = vm_persistent(vm); break;
        case 'a': /* APPEND */
            if (!(y = vm_pop(vm)) || !(x = vm_top(vm)))
                return NULL;
            if (x->kind != PK_LIST) {
                vm_fail(vm, "APPEND to a non-list");
                return NULL;
            }
            rc = obj_add(x, y) ? vm_fail(vm, "out of memory") : 0;
            break;
        case 'e': case 'u': /* APPENDS, SETITEMS */
            if (!(o = vm_pop_mark(vm, PK_TUPLE)) || !(x = vm_top(vm)))
                return NULL;
            if (x->kind != (op == 'e' ? PK_LIST : PK_DICT) || (op == 'u' && o->n_items % 2)) {
                vm_fail(vm, op == 'e' ? "APPENDS to a non-list" : "SETITEMS on a non-dict");
                return NULL;
            }
            for (size_t i = 0; i < o->n_items && !rc; i++)
                rc = obj_add(x, o->items[i]) ? vm_fail(vm, "out of memory") : 0;
            break;
        case 's': /* SETITEM */
            if (!(y = vm_pop(vm)) || !(o = vm_pop(vm)) || !(x = vm_top(vm)))
                return NULL;
            if (x->kind != PK_DICT) {
                vm_fail(vm, "SETITEM on a non-dict");
                return NULL;
            }
            rc = obj_add(x, o) || obj_add(x, y) ? vm_fail(vm, "out of memory") : 0;
            break;
        case 'b': /* BUILD: a state dict's _metadata attribute; not needed */
            if (!(y = vm_pop(vm)) || !(x = vm_top(vm)))
                return NULL;
            if (x->kind != PK_DICT || (y->kind != PK_DICT && y->kind != PK_NONE &&
                                       y->kind != PK_TUPLE)) {
                vm_fail(vm, "BUILD on something that is not an OrderedDict");
                return NULL;
            }
            break;
        default:
            vm_fail(vm, "pickle opcode 0x%02x ('%c') is not used by state dicts and is refused",
                    op, op >= 32 && op < 127 ? op : '?');
            return NULL;
        }
        if (rc)
            return NULL;
    }
}

static void vm_free(pk_vm *vm)
{
    for (size_t i = 0; i < vm->n_all; i++) {
        free(vm->all[i]->items);
        free(vm->all[i]);
    }
    free(vm->all);
    free(vm->stack);
    free(vm->marks);
    free(vm->memo);
    free(vm->storages);
}

/* ---- from pickled views to ld_tensors ---- */

/* Copies a strided view into contiguous memory, one element at a time
 * (checkpoints with non-contiguous tensors are rare and small). */
static void strided_copy(uint8_t *dst, const uint8_t *src, const pk_obj *t, size_t esz,
                         uint64_t numel)
{
    int64_t idx[LD_MAX_DIMS] = {0};
    for (uint64_t k = 0; k < numel; k++) {
        int64_t off = 0;
        for (int d = 0; d < t->ndim; d++)
            off += idx[d] * t->stride[d];
        memcpy(dst + k * esz, src + (size_t)off * esz, esz);
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d])
                break;
            idx[d] = 0;
        }
    }
}

static int add_tensor(ld_weights *w, pk_vm *vm, const pk_obj *key, const pk_obj *t,
                      inferd_error *e)
{
    if (key->kind != PK_STR || key->n == 0 || key->n > PK_MAX_KEY || memchr(key->s, 0, key->n)) {
        err_set(e, "%s: state dict key is not a name", vm->path);
        return -1;
    }
    const pk_storage *s = &vm->storages[t->storage];
    if (s->st->dtype < 0)
        return 0; /* a bool/uint8/float64 buffer: no model reads one */
    size_t esz = s->st->esize;
    uint64_t numel = 1, last = (uint64_t)t->offset;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t dim = (uint64_t)t->shape[d], span;
        if (__builtin_mul_overflow(numel, dim, &numel) ||
            (dim && (__builtin_mul_overflow(dim - 1, (uint64_t)t->stride[d], &span) ||
                     __builtin_add_overflow(last, span, &last)))) {
            err_set(e, "%s: tensor '%.*s': shape or strides overflow", vm->path, (int)key->n,
                    key->s);
            return -1;
        }
    }
    if (numel && (last >= s->numel || numel > SIZE_MAX / esz)) {
        err_set(e, "%s: tensor '%.*s' (offset %lld) reaches element %llu of storage '%.*s', "
                   "which holds %llu: the file is corrupt",
                vm->path, (int)key->n, key->s, (long long)t->offset, (unsigned long long)last,
                (int)s->key_len, s->key, (unsigned long long)s->numel);
        return -1;
    }
    ld_tensor lt;
    memset(&lt, 0, sizeof lt);
    lt.dtype = (inferd_dtype)s->st->dtype;
    lt.n_dims = t->ndim;
    memcpy(lt.shape, t->shape, sizeof lt.shape);
    lt.nbytes = (size_t)numel * esz;
    int contiguous = 1;
    int64_t want = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && t->stride[d] != want)
            contiguous = 0;
        want *= t->shape[d];
    }
    const uint8_t *src = s->data + (numel ? (size_t)t->offset * esz : 0);
    if (numel == 0 || contiguous)
        lt.data = ldi_aligned_data(w, src, lt.nbytes, esz, e);
    else {
        uint8_t *buf = ldi_own(w, lt.nbytes, e);
        if (buf)
            strided_copy(buf, src, t, esz, numel);
        lt.data = buf;
    }
    if (!lt.data)
        return -1;
    lt.name = strndup(key->s, key->n);
    if (!lt.name) {
        err_set(e, "out of memory");
        return -1;
    }
    return ldi_push_tensor(w, &lt, e);
}

/* The state dict itself, or the one a training checkpoint nests under
 * "state_dict" / "model" / "module". */
static const pk_obj *state_dict(const pk_obj *d)
{
    for (size_t i = 1; i < d->n_items; i += 2)
        if (d->items[i]->kind == PK_TENSOR)
            return d;
    for (size_t i = 0; i + 1 < d->n_items; i += 2)
        if ((str_is(d->items[i], "state_dict") || str_is(d->items[i], "model") ||
             str_is(d->items[i], "module")) && d->items[i + 1]->kind == PK_DICT)
            return d->items[i + 1];
    return d;
}

static int add_state_dict(ld_weights *w, pk_vm *vm, const pk_obj *root, inferd_error *e)
{
    if (root->kind != PK_DICT) {
        err_set(e, "%s: the pickle does not hold a dict of tensors (a state dict)", vm->path);
        return -1;
    }
    root = state_dict(root);
    size_t n = 0;
    for (size_t i = 0; i + 1 < root->n_items; i += 2) {
        if (root->items[i + 1]->kind != PK_TENSOR)
            continue; /* e.g. an "epoch" counter beside the weights */
        if (add_tensor(w, vm, root->items[i], root->items[i + 1], e))
            return -1;
        n++;
    }
    if (n == 0) {
        err_set(e, "%s: the state dict holds no tensors", vm->path);
        return -1;
    }
    return 0;
}

static int read_zip(ld_weights *w, pk_vm *vm, const uint8_t *base, size_t size,
                    inferd_error *e)
{
    zip z = {0};
    int rc = -1;
    if (zip_open(base, size, vm->path, &z, e))
        goto out;
    const zip_entry *pkl = NULL;
    size_t plen = 0;
    for (size_t i = 0; i < z.n; i++) {
        const zip_entry *x = &z.ent[i];
        size_t n = x->name_len;
        if (n < 8 || memcmp(x->name + n - 8, "data.pkl", 8) ||
            (n > 8 && x->name[n - 9] != '/') || (n > 9 && memchr(x->name, '/', n - 9)))
            continue;
        if (pkl) {
            err_set(e, "%s: the zip holds more than one data.pkl", vm->path);
            goto out;
        }
        pkl = x;
        plen = n - 8;
    }
    if (!pkl) {
        err_set(e, "%s: a zip without data.pkl is not a torch.save checkpoint", vm->path);
        goto out;
    }
    const zip_entry *bo = zip_find(&z, pkl->name, plen, "byteorder", "", 0);
    if (bo && !(bo->size == 6 && !memcmp(bo->data, "little", 6))) {
        err_set(e, "%s: checkpoint written on a big-endian machine is not supported", vm->path);
        goto out;
    }
    vm->start = vm->p = pkl->data;
    vm->end = pkl->data + pkl->size;
    pk_obj *root = vm_run(vm);
    if (!root)
        goto out;
    for (size_t k = 0; k < vm->n_storages; k++) {
        pk_storage *s = &vm->storages[k];
        const zip_entry *x = zip_find(&z, pkl->name, plen, "data/", s->key, s->key_len);
        if (!x) {
            err_set(e, "%s: storage '%.*s' named in data.pkl is missing from the zip", vm->path,
                    (int)s->key_len, s->key);
            goto out;
        }
        if (s->numel > UINT64_MAX / s->st->esize || x->size != s->numel * s->st->esize) {
            err_set(e, "%s: storage '%.*s' holds %llu bytes but data.pkl says %llu elements of "
                       "torch.%s: the file is corrupt",
                    vm->path, (int)s->key_len, s->key, (unsigned long long)x->size,
                    (unsigned long long)s->numel, s->st->name);
            goto out;
        }
        s->data = x->data;
    }
    rc = add_state_dict(w, vm, root, e);
out:
    free(z.ent);
    return rc;
}

/* torch.save(..., _use_new_zipfile_serialization=False): pickles of the
 * magic number, the protocol version, sys_info and the state dict, then a
 * pickled list of storage keys, then each storage as an int64 element count
 * and its bytes, in that order. */
static int read_legacy(ld_weights *w, pk_vm *vm, const uint8_t *base, size_t size,
                       inferd_error *e)
{
    vm->start = base;
    vm->p = base + 15; /* the magic number's pickle, compared byte for byte by the caller */
    vm->end = base + size;
    pk_obj *v = vm_run(vm);
    if (!v)
        return -1;
    if (v->kind != PK_INT || v->i != 1001) {
        err_set(e, "%s: legacy checkpoint protocol version is not 1001", vm->path);
        return -1;
    }
    if (!(v = vm_run(vm)))
        return -1;
    for (size_t i = 0; v->kind == PK_DICT && i + 1 < v->n_items; i += 2)
        if (str_is(v->items[i], "little_endian") && v->items[i + 1]->kind == PK_BOOL &&
            !v->items[i + 1]->i) {
            err_set(e, "%s: checkpoint written on a big-endian machine is not supported",
                    vm->path);
            return -1;
        }
    pk_obj *root = vm_run(vm), *keys = root ? vm_run(vm) : NULL;
    if (!keys)
        return -1;
    if (keys->kind != PK_LIST) {
        err_set(e, "%s: legacy checkpoint storage key list missing", vm->path);
        return -1;
    }
    for (size_t i = 0; i < keys->n_items; i++) {
        const pk_obj *k = keys->items[i];
        pk_storage *s = NULL;
        for (size_t j = 0; k->kind == PK_STR && j < vm->n_storages; j++)
            if (vm->storages[j].key_len == k->n && !memcmp(vm->storages[j].key, k->s, k->n))
                s = &vm->storages[j];
        if (!s || s->data) {
            err_set(e, "%s: legacy checkpoint lists storage %zu that data.pkl does not use "
                       "(or twice)", vm->path, i);
            return -1;
        }
        const uint8_t *q = vm_take(vm, 8);
        if (!q)
            return -1;
        uint64_t n = rd64(q);
        if (n != s->numel || n > UINT64_MAX / s->st->esize ||
            !(q = vm_take(vm, n * s->st->esize))) {
            err_set(e, "%s: storage '%.*s' holds %llu elements in the file but the pickle says "
                       "%llu of torch.%s (or the file is truncated)",
                    vm->path, (int)s->key_len, s->key, (unsigned long long)n,
                    (unsigned long long)s->numel, s->st->name);
            return -1;
        }
        s->data = q;
    }
    for (size_t j = 0; j < vm->n_storages; j++)
        if (!vm->storages[j].data) {
            err_set(e, "%s: storage '%.*s' has no data in the file", vm->path,
                    (int)vm->storages[j].key_len, vm->storages[j].key);
            return -1;
        }
    return add_state_dict(w, vm, root, e);
}

int ldi_add_pytorch(ld_weights *w, const char *path, inferd_error *e)
{
    static const uint8_t legacy_magic[15] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                             0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, '.'};
    const uint8_t *base;
    size_t size;
    if (ldi_map(w, path, &base, &size, e))
        return -1;
    pk_vm vm;
    memset(&vm, 0, sizeof vm);
    vm.path = path;
    vm.e = e;
    int rc;
    if (size >= 4 && rd32(base) == 0x04034b50)
        rc = read_zip(w, &vm, base, size, e);
    else if (size >= sizeof legacy_magic && !memcmp(base, legacy_magic, sizeof legacy_magic))
        rc = read_legacy(w, &vm, base, size, e);
    else {
        err_set(e, "%s: neither a torch.save zip archive nor a legacy torch.save file (tar "
                   "checkpoints of torch < 0.4 are not supported)", path);
        rc = -1;
    }
    vm_free(&vm);
    return rc;
}
