# Sourced by the GPU bench scripts: unpacks a `make dist` bundle into $1 and
# sets INFERD; a bundle made with DIST_EXCLUDE=libcublas (to fit the device
# tool's 64 MiB) gets the machine's own CUDA 13 cuBLAS on LD_LIBRARY_PATH.
mkdir -p "$1" && tar -C "$1" -xf "$BUNDLE" # .tar.gz or .tar.xz
export INFERD="$1/inferd/inferd"
if ldd "$INFERD" | grep -q 'libcublas.*not found'; then
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
        $(python3 -c 'import nvidia; print(" ".join(nvidia.__path__))' 2>/dev/null); do
        f=$(find "$d" -name 'libcublasLt.so.13*' 2>/dev/null | head -1)
        [ -n "$f" ] && { export LD_LIBRARY_PATH=$(dirname "$f"); break; }
    done
fi
