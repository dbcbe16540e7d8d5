#!/bin/bash
# Compares the machine code of backend/cuda between two source trees, kernel
# by kernel, wherever the kernels live: every backend/cuda/*.cu of each tree
# is compiled to a cubin for one GPU (the Makefile's nvcc flags), and each
# function's code (.text.<name>: the SASS as bytes), relocations, registers,
# shared and constant memory and attribute table (.nv.info.<name>) are set
# side by side. Needs nvcc only (no cuobjdump); where cuobjdump is on PATH,
# the SASS of each function that differs is printed as a diff.
#   tools/gpu/sass_diff.sh OLD NEW [ARCH]
# OLD, NEW: a source tree (a folder holding backend/cuda/) or a git revision
# of this repository (exported with git archive). ARCH: 90a unless given.
# Prints one line per function that differs or exists on one side only (and
# those whose static shared section alone differs, see below), then the
# counts; exits 1 when any function differs.
set -euo pipefail

[ $# -ge 2 ] || { sed -n "2,14p" "$0"; exit 2; }
ARCH=${3:-90a}
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

tree_of() { # $1: folder or revision, $2: name -> prints the folder
    if [ -d "$1/backend/cuda" ]; then
        (cd "$1" && pwd)
    else
        mkdir -p "$WORK/$2-src"
        git -C "$ROOT" archive "$1" backend common | tar -x -C "$WORK/$2-src"
        echo "$WORK/$2-src"
    fi
}

build() { # $1: tree, $2: name
    mkdir -p "$WORK/$2"
    local jobs
    jobs=$(nproc 2>/dev/null || echo 2)
    printf '%s\n' "$1"/backend/cuda/*.cu | xargs -P "$jobs" -I{} sh -c \
        '"$0" -std=c++17 -O3 -I"$1" -DINFERD_CUDA -gencode=arch=compute_$2,code=sm_$2 \
             -cubin -o "$3/$(basename "{}" .cu).cubin" "{}"' "$NVCC" "$1" "$ARCH" "$WORK/$2"
}

OLD=$(tree_of "$1" old)
NEW=$(tree_of "$2" new)
build "$OLD" old
build "$NEW" new

python3 - "$WORK/old" "$WORK/new" <<'EOF'
import glob, hashlib, os, shutil, struct, subprocess, sys

def info_entries(b, syms):
    """A function's attribute table, with symbol indices (EIATTR_PARAM_CBANK,
    0x0a) given as names: the indices differ between modules."""
    out, p = [], 0
    while p + 2 <= len(b):
        fmt, attr = b[p], b[p + 1]
        if fmt == 0x04:
            size, = struct.unpack_from('<H', b, p + 2)
            data = b[p + 4:p + 4 + size]
            if attr == 0x0a and size >= 4:
                sym, = struct.unpack_from('<I', data, 0)
                data = syms[sym].encode() + data[4:]
            out.append((attr, data.hex()))
            p += 4 + size
        elif fmt == 0x03:
            out.append((attr, b[p + 2:p + 4].hex()))
            p += 4
        else:
            out.append((attr, fmt))
            p += 2
    return tuple(out)

def functions(cubin):
    """name -> (code hash, relocations, resources, info hash, code size)"""
    d = open(cubin, 'rb').read()
    shoff, = struct.unpack_from('<Q', d, 0x28)
    shnum, shstrndx = struct.unpack_from('<HH', d, 0x3c)
    secs = []
    for i in range(shnum):
        name, typ, flags, _, off, size, link, info, _, _ = struct.unpack_from(
            '<IIQQQQIIQQ', d, shoff + 64 * i)
        secs.append(dict(name=name, type=typ, flags=flags, off=off, size=size, link=link,
                         info=info))
    strtab = lambda s, o: d[secs[s]['off'] + o:d.index(b'\0', secs[s]['off'] + o)].decode()
    for s in secs:
        s['name'] = strtab(shstrndx, s['name'])
    by_name = {s['name']: s for s in secs}
    body = lambda s: d[s['off']:s['off'] + s['size']]
    symtab = next(s for s in secs if s['type'] == 2)
    syms = []
    for k in range(symtab['size'] // 24):
        nm, inf, oth, shndx, val, sz = struct.unpack_from('<IBBHQQ', d, symtab['off'] + 24 * k)
        n = strtab(symtab['link'], nm) if nm else (secs[shndx]['name'] if shndx < len(secs) else '')
        syms.append(n)
    # per-function register counts and stack sizes live in the module's .nv.info,
    # keyed by symbol index: EIATTR entries (format 0x04: u16 size, then data)
    attrs = {}
    if '.nv.info' in by_name:
        b, p = body(by_name['.nv.info']), 0
        while p + 2 <= len(b):
            fmt, attr = b[p], b[p + 1]
            if fmt == 0x04:
                size, = struct.unpack_from('<H', b, p + 2)
                data = b[p + 4:p + 4 + size]
                if size >= 8:
                    sym, val = struct.unpack_from('<II', data, 0)
                    if sym < len(syms):
                        attrs.setdefault(syms[sym], []).append((attr, val))
                p += 4 + size
            elif fmt == 0x03:
                p += 4
            elif fmt == 0x02:
                p += 3
            else:
                p += 2
    out = {}
    for s in secs:
        if not s['name'].startswith('.text.'):
            continue
        f = s['name'][6:]
        rel = []
        for rname, ent in (('.rela.text.' + f, 24), ('.rel.text.' + f, 16)):
            if rname in by_name:
                r = by_name[rname]
                for k in range(r['size'] // ent):
                    o, inf = struct.unpack_from('<QQ', d, r['off'] + ent * k)
                    add = struct.unpack_from('<q', d, r['off'] + ent * k + 16)[0] if ent == 24 else 0
                    rel.append((o, inf & 0xffffffff, syms[inf >> 32], add))
        res = (('flags', s['flags']), ('info>>24', s['info'] >> 24),
               ('constant0', by_name.get('.nv.constant0.' + f, {}).get('size', 0)),
               ('local', by_name.get('.nv.local.' + f, {}).get('size', 0)),
               ('regs/stack', tuple(sorted(attrs.get(f, [])))))
        shared = by_name.get('.nv.shared.' + f, {}).get('size', 0)
        info = body(by_name['.nv.info.' + f]) if '.nv.info.' + f in by_name else b''
        out[f] = (hashlib.sha256(body(s)).hexdigest(), tuple(sorted(rel)), res,
                  info_entries(info, syms), shared, s['size'], os.path.basename(cubin))
    return out

def load(folder):
    allf = {}
    for c in sorted(glob.glob(folder + '/*.cubin')):
        for f, v in functions(c).items():
            assert f not in allf, f + ' defined twice'
            allf[f] = v
    return allf

def demangle(names):
    if not shutil.which('c++filt'):
        return names
    r = subprocess.run(['c++filt'], input='\n'.join(names), capture_output=True, text=True)
    return r.stdout.split('\n')[:len(names)]

old, new = load(sys.argv[1]), load(sys.argv[2])
same, diff, gone, added, shared = [], [], [], [], []
for f in sorted(set(old) | set(new)):
    if f not in new:
        gone.append(f)
    elif f not in old:
        added.append(f)
    elif old[f][:4] == new[f][:4]:
        same.append(f)
        if old[f][4] != new[f][4]:
            shared.append(f)
    else:
        o, n = old[f], new[f]
        what = [w for w, i in (('code', 0), ('relocations', 1), ('resources', 2), ('info', 3))
                if o[i] != n[i]]
        diff.append((f, what, o, n))
cuobjdump = shutil.which('cuobjdump')
for f, what, o, n in diff:
    print(f'DIFFERS  {demangle([f])[0]}: {", ".join(what)} (code {o[5]} -> {n[5]} bytes; '
          f'{o[6]} -> {n[6]})')
    if 'resources' in what:
        print(f'         resources {o[2]} -> {n[2]}')
    if 'info' in what:
        print('         attributes that differ (EIATTR codes): ' +
              ', '.join(hex(a) for a in sorted({a for a, _ in set(o[3]) ^ set(n[3])})))
    if cuobjdump:
        dis = []
        for side, c in ((sys.argv[1], o[6]), (sys.argv[2], n[6])):
            t = subprocess.run([cuobjdump, '-sass', '-fun', f, os.path.join(side, c)],
                               capture_output=True, text=True).stdout
            dis.append([l.split('/*', 2)[1] if l.count('/*') >= 2 else l
                        for l in t.split('\n') if '/*' in l])
        import difflib
        for l in list(difflib.unified_diff(dis[0], dis[1], 'old', 'new', lineterm=''))[:80]:
            print('         ' + l)
for f in gone:
    print(f'ONLY OLD {demangle([f])[0]} ({old[f][6]})')
for f in added:
    print(f'ONLY NEW {demangle([f])[0]} ({new[f][6]})')
# Static shared memory as the module lays it out: a module with a kernel of
# dynamic shared memory (extern __shared__) gives every kernel the 1 KiB the
# hardware reserves and rounds sizes to 16 bytes, one without does not. The
# code and its shared offsets are compared above; this is only the section.
for f in shared:
    print(f'SHARED   {demangle([f])[0]}: static shared section {old[f][4]} -> {new[f][4]} bytes '
          f'(same code)')
print(f'{len(same)} functions identical in code, relocations, registers and attributes '
      f'({len(shared)} of them with another shared-section size), {len(diff)} differ, '
      f'{len(gone)} only in OLD, {len(added)} only in NEW')
sys.exit(1 if diff else 0)
EOF
