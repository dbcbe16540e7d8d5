/* backend/cpu internals shared by cpu.c and bf16.c, and the hooks its tests
 * use (not a public header). */
#ifndef INFERD_BACKEND_CPU_INTERNAL_H
#define INFERD_BACKEND_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

/* A CPU weight's layout, which be_weight.priv records: NULL is the file's
 * row-major matrix (zero copy); cpu_weight's packed copies point priv at a
 * static record of one of the others (nothing to free per weight: the
 * copies go with the backend). */
typedef enum cpu_layout {
    CPU_ROWS = 0,
    CPU_PACKED8, /* 16-bit rows interleaved in blocks of 8 (cpu.c, packed_index) */
    CPU_PAIRS,   /* bfloat16 precision: bf16 pair panels (below) */
} cpu_layout;
cpu_layout cpu_weight_layout(const be_weight *w);

/* Tests: the allocator of the backend's scratch, with posix_memalign's
 * contract (0, or an errno and nothing allocated; freed with free). A
 * failing one shows that ops keep the error instead of aborting. NULL
 * restores posix_memalign. */
void cpu_set_scratch_alloc(be_backend *b, int (*fn)(void **p, size_t align, size_t bytes));

/* --matmul-precision bfloat16 on the CPU.
 *
 * Weights (bf16 only) are stored as "pair panels": rows padded to a multiple
 * of 16, cut into panels of 64 rows (the last one may be 16, 32 or 48 wide),
 * and inside a panel, for each pair of columns (2k, 2k+1), the panel's rows'
 * two values side by side: [panel][col pair][row in panel][2]. One 512-bit
 * load is then 16 rows x one column pair, the operand VDPBF16PS multiplies
 * with a broadcast pair of activations, and each output lane is one output
 * element. Every element is the same chain of float operations whatever the
 * tiling, batch size or thread count:
 *     acc = 0; for each pair p: acc += x[2p+1]*w[2p+1]; acc += x[2p]*w[2p];
 *     y = acc + bias
 * with x rounded to bf16 (round to nearest even), products exact, each sum
 * rounded to nearest even, denormal inputs read as zero and denormal sums
 * flushed to zero (VDPBF16PS's definition in the Intel SDM). The AVX2 path
 * computes the same chain with FMAs under MXCSR FTZ/DAZ, so both give the
 * same bits. */

/* 1 when this CPU runs AVX-512F and the environment does not disable it:
 * INFERD_CPU_NO_AVX512=1 forces the AVX2 kernels (tests, A/B timings). */
int cpu_avx512_usable(void);
/* 1 when, in addition, it runs AVX512_BF16. */
int cpu_bf16_native(void);

/* Bytes of the pair-panel copy of a rows x cols bf16 matrix. */
size_t cpu_pairs_bytes(int64_t rows, int64_t cols);
/* Fills dst (cpu_pairs_bytes(rows, cols) bytes, 64-byte aligned) from a
 * row-major bf16 matrix; the padding is zero. */
void cpu_pairs_pack(const uint16_t *src, int64_t rows, int64_t cols, uint16_t *dst,
                    int n_threads);
/* Row r of a pair-panel weight as float32 (embedding lookups). */
void cpu_pairs_row_f32(const be_weight *w, int64_t r, float *out);

/* y[n][w.rows] = bf16(x)[n][w.cols] . w^T (+ bias), the chain above.
 * xbuf: scratch of at least n * 2 * ceil(cols / 2) uint32, 64-byte aligned
 * (the AVX2 path keeps the rounded activations as float32). */
void cpu_matmul_pairs(int n_threads, int native, uint32_t *xbuf, const float *x,
                      const be_weight *w, const be_weight *bias, int n, float *y);

#endif
