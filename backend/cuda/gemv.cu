/* backend/cuda/gemv.cu: matrix products of up to GEMV_MAX_N input rows,
 * which stream the weights once with float32 accumulation (decode is bound
 * by that stream): gemv2_kernel for 1 to 8 rows, gemv1_kernel (one block per
 * multiprocessor, launched early on sm_90+) for one row of bf16/f16
 * weights. Both take up to GEMV_SET matrices that share their input in one
 * launch, and gate/up with the SiLU product (GLU); gemv1_kernel also folds
 * the RMSNorm before it and the residual add after it (tape.cu). */
#include "backend/cuda/common.cuh"
#include "backend/cuda/gemv.cuh"

/* 8 bf16 / f16 weights of a 16-byte load as floats (the pointer picks the type). */
__device__ __forceinline__ void cvt8(uint4 u, const __nv_bfloat16 *, float *o)
{
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 f = __bfloat1622float2(h[i]);
        o[2 * i] = f.x;
        o[2 * i + 1] = f.y;
    }
}
__device__ __forceinline__ void cvt8(uint4 u, const __half *, float *o)
{
    const __half2 *h = (const __half2 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 f = __half22float2(h[i]);
        o[2 * i] = f.x;
        o[2 * i + 1] = f.y;
    }
}

/* 8 weights as floats, loaded with the streaming hint (read once: no L1
 * allocation, evict first from L2) so they do not push x out of the caches. */
__device__ __forceinline__ void load8s(const __nv_bfloat16 *p, float *o)
{
    cvt8(__ldcs((const uint4 *)p), p, o);
}
__device__ __forceinline__ void load8s(const __half *p, float *o)
{
    cvt8(__ldcs((const uint4 *)p), p, o);
}
__device__ __forceinline__ void load8s(const float *p, float *o)
{
    float4 a = __ldcs((const float4 *)p), c = __ldcs((const float4 *)p + 1);
    o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w;
    o[4] = c.x; o[5] = c.y; o[6] = c.z; o[7] = c.w;
}

/* GEMV, second version: blocks of 4 warps, WPR warps per output row (split
 * K inside the block, partial sums merged in shared memory), so that small
 * matrices still put enough loads in flight and large ones finish in about
 * one wave of small blocks instead of a long tail. Warp `part` of a row
 * takes the 1024-element chunks part, part + WPR, ...; each chunk is 4
 * loads of 16 bytes per lane issued before the first use. */
#define GEMV2_WARPS 4
typedef struct gemv_set {
    const void *w[GEMV_SET], *bias[GEMV_SET];
    float *y[GEMV_SET];
    int64_t rows[GEMV_SET];
    int bdt[GEMV_SET], wpr[GEMV_SET];
    unsigned first[GEMV_SET + 1]; /* first block of each matrix; first[n_mat]: the grid */
    unsigned first_row[GEMV_SET + 1]; /* gemv1_kernel: rows numbered across the matrices */
    int n_mat;
    /* gemv1_kernel's folds (run_norm_gemv, run_gemv_add; INFERD_CUDA_GEMV_NORM=0 off): x
     * is first RMS-normalised with norm_w as norm_threads threads of rmsnorm_kernel
     * would (norm_out, when not NULL, gets the result), and res[r] += the
     * product replaces y[r] = it (one matrix, no GLU). */
    const void *norm_w;
    float *norm_out, *res;
    float norm_eps;
    int norm_dt, norm_threads;
} gemv_set;

/* A parameter array element by a run-time index without a local copy. */
template <typename V> __device__ __forceinline__ V pick(const V *a, int m)
{
    return m == 0 ? a[0] : m == 1 ? a[1] : a[2];
}

/* The matrix of the set that v (a block, or a row numbered across the
 * matrices) falls in: the last m with first[m] <= v. */
template <typename V> __device__ __forceinline__ int mat_of(const unsigned *first, int n_mat, V v)
{
    int m = 0;
    while (m + 1 < n_mat && v >= pick(first, m + 1))
        m++;
    return m;
}

/* GLU: S holds gate and up (n_mat 1 for the grid, w[1] and bias[1] the up
 * matrix); each warp reads row r of both and writes silu(gate) * up to
 * y[0], so the activation needs no launch of its own. */
template <typename TW, int NR, bool GLU>
__global__ void __launch_bounds__(GEMV2_WARPS * 32, NR == 1 && !GLU ? 6 : 4)
gemv2_kernel(const float *x, const gemv_set S, int n, int64_t cols, int vec)
{
    dep_open();
    dep_wait();
    constexpr int NM = GLU ? 2 : 1; /* weight rows a warp reads */
    __shared__ float red[NM][GEMV2_WARPS][NR];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int m = mat_of(S.first, S.n_mat, blockIdx.x);
    const void *bias = pick(S.bias, m);
    float *y = pick(S.y, m);
    const int64_t rows = pick(S.rows, m);
    const int bdt = pick(S.bdt, m), wpr = pick(S.wpr, m);
    const int rpb = GEMV2_WARPS / wpr, part = warp % wpr;
    const int64_t r = (int64_t)(blockIdx.x - pick(S.first, m)) * rpb + warp / wpr;
    const bool live = r < rows;
    const TW *wr[NM];
    wr[0] = (const TW *)pick(S.w, m) + (live ? r : 0) * cols;
    if (GLU)
        wr[NM - 1] = (const TW *)S.w[1] + (live ? r : 0) * cols;
    for (int i0 = 0; i0 < n; i0 += NR) {
        int nr = n - i0 < NR ? n - i0 : NR;
        float acc[NM][NR];
#pragma unroll
        for (int j = 0; j < NM; j++)
#pragma unroll
            for (int i = 0; i < NR; i++)
                acc[j][i] = 0.0f;
        if (live && vec) {
            for (int64_t kc = (int64_t)part * 1024; kc < cols; kc += (int64_t)wpr * 1024) {
                float wf[NM][4][8];
#pragma unroll
                for (int j = 0; j < NM; j++)
#pragma unroll
                    for (int u = 0; u < 4; u++) {
                        const int64_t k = kc + 256 * u + lane * 8;
                        if (k < cols)
                            load8s(wr[j] + k, wf[j][u]);
                    }
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    const int64_t k = kc + 256 * u + lane * 8;
                    if (k >= cols)
                        break;
#pragma unroll
                    for (int i = 0; i < NR; i++) {
                        if (i < nr) {
                            const float *xr = x + (int64_t)(i0 + i) * cols + k;
                            float4 a = ((const float4 *)xr)[0], c = ((const float4 *)xr)[1];
#pragma unroll
                            for (int j = 0; j < NM; j++)
                                acc[j][i] += a.x * wf[j][u][0] + a.y * wf[j][u][1] +
                                             a.z * wf[j][u][2] + a.w * wf[j][u][3] +
                                             c.x * wf[j][u][4] + c.y * wf[j][u][5] +
                                             c.z * wf[j][u][6] + c.w * wf[j][u][7];
                        }
                    }
                }
            }
        } else if (live) {
            for (int64_t k = (int64_t)part * 32 + lane; k < cols; k += (int64_t)wpr * 32) {
#pragma unroll
                for (int j = 0; j < NM; j++) {
                    float wv = to_f(wr[j][k]);
#pragma unroll
                    for (int i = 0; i < NR; i++)
                        if (i < nr)
                            acc[j][i] += x[(int64_t)(i0 + i) * cols + k] * wv;
                }
            }
        }
#pragma unroll
        for (int j = 0; j < NM; j++)
#pragma unroll
            for (int i = 0; i < NR; i++) {
                float s = warp_sum(acc[j][i]);
                if (lane == 0)
                    red[j][warp][i] = s;
            }
        __syncthreads();
        if (live && part == 0 && lane < nr) {
            float s = 0.0f;
            for (int p = 0; p < wpr; p++)
                s += red[0][warp + p][lane];
            s += bias ? ldw(bias, bdt, r) : 0.0f;
            if (GLU) {
                float u = 0.0f;
                for (int p = 0; p < wpr; p++)
                    u += red[NM - 1][warp + p][lane];
                u += S.bias[1] ? ldw(S.bias[1], S.bdt[1], r) : 0.0f;
                s = silu_mul(s, u);
            }
            y[(int64_t)(i0 + lane) * rows + r] = s;
        }
        __syncthreads(); /* red is reused by the next group of input rows */
    }
}

/* GEMV for one input row, third version: a single wave of one large block
 * per multiprocessor. The set's rows, numbered across its matrices, are cut
 * into equal contiguous ranges, one a block, and each row into items of CH
 * columns that the block's warps take in turn: every multiprocessor streams
 * about the same bytes, and there is no later wave to trail (gemv2_kernel's
 * waves lose time to their ramp and tail). A warp loads its next item while
 * it multiplies the current one, and its first item before dep_wait(),
 * overlapping the kernel before. Each item's sum goes to shared memory and a
 * row's are added in column order, so the result does not depend on timing.
 * GLU as in gemv2_kernel. */
#define GEMV1_WARPS 16
#define GEMV1_SMEM (48 * 1024) /* per-item sums of a block, at most */

template <typename TW, int NM, int U>
__device__ __forceinline__ void gemv1_load(const gemv_set &S, int64_t cols, int64_t row, int64_t k0,
                                           uint4 (*buf)[U])
{
    const int m = mat_of(S.first_row, S.n_mat, row);
    const TW *w[NM];
    w[0] = (const TW *)pick(S.w, m) + (row - pick(S.first_row, m)) * cols;
    if (NM == 2)
        w[NM - 1] = (const TW *)S.w[1] + row * cols;
#pragma unroll
    for (int j = 0; j < NM; j++)
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int64_t k = k0 + 256 * u;
            buf[j][u] = k < cols ? __ldcs((const uint4 *)(w[j] + k)) : make_uint4(0, 0, 0, 0);
        }
}

template <typename TW, bool GLU, bool NORM>
__global__ void __launch_bounds__(GEMV1_WARPS * 32, 1)
gemv1_kernel(const float *x, const gemv_set S, int64_t cols, int64_t total, int rows_per_block)
{
    constexpr int NM = GLU ? 2 : 1; /* weight rows an item reads */
    constexpr int U = GLU ? 4 : 8;  /* 16-byte loads per lane and weight row */
    constexpr int CH = U * 256;     /* columns of an item */
    /* [NM][rows_per_block * n_ch]; with NORM then, from a multiple of 4,
     * the normalised x [cols] and the warps' sums of squares [GEMV1_WARPS] */
    extern __shared__ float part[];
    dep_open();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int n_ch = (int)((cols + CH - 1) / CH);
    const int64_t r0 = (int64_t)blockIdx.x * rows_per_block;
    const int nrow = total - r0 < rows_per_block ? (int)(total - r0) : rows_per_block;
    const int items = nrow * n_ch, stride = rows_per_block * n_ch;
    uint4 cur[NM][U], nxt[NM][U];
    int it = warp;
    if (it < items)
        gemv1_load<TW, NM, U>(S, cols, r0 + it / n_ch, (int64_t)(it % n_ch) * CH + lane * 8, cur);
    dep_wait();
    if constexpr (NORM) { /* a separate instance: x stays a global pointer in the others */
        /* norm_row's arithmetic in rmsnorm_kernel's order: the same bits */
        float *xs = part + ((NM * stride + 3) & ~3), *ws = xs + cols;
        float ss = 0.0f;
        if (threadIdx.x < S.norm_threads)
            for (int64_t i = threadIdx.x; i < cols; i += S.norm_threads)
                ss += x[i] * x[i];
        ss = warp_sum(ss);
        if (lane == 0)
            ws[warp] = ss;
        __syncthreads();
        ss = 0.0f;
        for (int i = 0; i < GEMV1_WARPS; i++)
            ss += ws[i];
        const float inv = 1.0f / sqrtf(ss / (float)cols + S.norm_eps);
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
            const float v = ldw(S.norm_w, S.norm_dt, i) * (x[i] * inv);
            xs[i] = v;
            if (S.norm_out && blockIdx.x == 0)
                S.norm_out[i] = v;
        }
        __syncthreads();
        x = xs;
    }
    for (; it < items; it += GEMV1_WARPS) {
        const int nx = it + GEMV1_WARPS;
        if (nx < items)
            gemv1_load<TW, NM, U>(S, cols, r0 + nx / n_ch, (int64_t)(nx % n_ch) * CH + lane * 8,
                                  nxt);
        const int64_t k0 = (int64_t)(it % n_ch) * CH + lane * 8;
        float acc[NM];
#pragma unroll
        for (int j = 0; j < NM; j++)
            acc[j] = 0.0f;
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int64_t k = k0 + 256 * u;
            if (k >= cols)
                break;
            const float4 a = ((const float4 *)(x + k))[0], c = ((const float4 *)(x + k))[1];
#pragma unroll
            for (int j = 0; j < NM; j++) {
                float wf[8];
                cvt8(cur[j][u], (const TW *)0, wf);
                acc[j] += a.x * wf[0] + a.y * wf[1] + a.z * wf[2] + a.w * wf[3] + c.x * wf[4] +
                          c.y * wf[5] + c.z * wf[6] + c.w * wf[7];
            }
        }
#pragma unroll
        for (int j = 0; j < NM; j++) {
            const float s = warp_sum(acc[j]);
            if (lane == 0)
                part[j * stride + it] = s;
        }
#pragma unroll
        for (int j = 0; j < NM; j++)
#pragma unroll
            for (int u = 0; u < U; u++)
                cur[j][u] = nxt[j][u];
    }
    __syncthreads();
    for (int lr = threadIdx.x; lr < nrow; lr += blockDim.x) {
        const int64_t row = r0 + lr;
        const int m = mat_of(S.first_row, S.n_mat, row);
        const int64_t r = row - pick(S.first_row, m);
        float s = 0.0f;
        for (int c = 0; c < n_ch; c++)
            s += part[lr * n_ch + c];
        const void *bias = pick(S.bias, m);
        s += bias ? ldw(bias, pick(S.bdt, m), r) : 0.0f;
        if (GLU) {
            float u = 0.0f;
            for (int c = 0; c < n_ch; c++)
                u += part[stride + lr * n_ch + c];
            u += S.bias[1] ? ldw(S.bias[1], S.bdt[1], r) : 0.0f;
            s = silu_mul(s, u);
        }
        if (S.res)
            S.res[r] = S.res[r] + s; /* add_kernel's sum */
        else
            pick(S.y, m)[r] = s;
    }
}

/* ---- launches ---- */

/* cu_gemv_multi for weights of type TW (gemv.cuh). */
template <typename TW>
static int gemv_multi_t(cu_backend *b, const float *x, const be_weight *const *w,
                        const be_weight *const *bias, float *const *y, int n_mat, int n,
                        bool glu, const gemv_fold *fold)
{
    gemv_set S;
    memset(&S, 0, sizeof S);
    S.n_mat = glu ? 1 : n_mat;
    unsigned blocks = 0;
    for (int m = 0; m < n_mat; m++) {
        /* Split K until the matrix gives ~32 warps to every SM (one wave of
         * 8 blocks per SM), but keep >= 2 chunks of 1024 per warp. */
        int wpr = 1;
        while (wpr < GEMV2_WARPS && w[m]->rows * wpr < 32LL * b->n_sm &&
               w[m]->cols >= 2048LL * 2 * wpr)
            wpr *= 2;
        const int rpb = GEMV2_WARPS / wpr;
        S.w[m] = w[m]->data;
        S.bias[m] = bias[m] ? bias[m]->data : NULL;
        S.bdt[m] = bias[m] ? (int)bias[m]->dtype : 0;
        S.y[m] = y[m];
        S.rows[m] = w[m]->rows;
        S.wpr[m] = wpr;
        S.first[m] = blocks;
        if (!glu || m == 0)
            blocks += (unsigned)((w[m]->rows + rpb - 1) / rpb);
    }
    S.first[S.n_mat] = blocks;
    const int64_t cols = w[0]->cols;
    const int vec = cols % 8 == 0;
    if constexpr (sizeof(TW) == 2) {
        if (n == 1 && vec) {
            int64_t total = 0;
            for (int m = 0; m < S.n_mat; m++) {
                S.first_row[m] = (unsigned)total;
                total += w[m]->rows;
            }
            S.first_row[S.n_mat] = (unsigned)total;
            const int nm = glu ? 2 : 1, n_ch = (int)((cols + 2048 / nm - 1) / (2048 / nm));
            /* the normalised row and the warp sums after the item sums */
            const size_t extra = fold && fold->norm_w ? (size_t)(cols + 3 + GEMV1_WARPS) : 0;
            int64_t rpb = (total + b->n_sm - 1) / b->n_sm;
            while (rpb > 1 && ((size_t)rpb * n_ch * nm + extra) * sizeof(float) > GEMV1_SMEM)
                rpb = (rpb + 1) / 2;
            const size_t smem = ((size_t)rpb * n_ch * nm + extra) * sizeof(float);
            if (smem <= GEMV1_SMEM && (!fold || !fold->res || (S.n_mat == 1 && !glu))) {
                const unsigned grid = (unsigned)((total + rpb - 1) / rpb);
                if (fold && fold->norm_w) {
                    S.norm_w = fold->norm_w->data;
                    S.norm_dt = (int)fold->norm_w->dtype;
                    S.norm_eps = fold->norm_eps;
                    S.norm_out = fold->norm_out;
                    S.norm_threads = rmsnorm_threads(cols);
                }
                if (fold)
                    S.res = fold->res;
                void (*kernel)(const float *, const gemv_set, int64_t, int64_t, int) =
                    S.norm_w ? (glu ? gemv1_kernel<TW, true, true> : gemv1_kernel<TW, false, true>)
                             : (glu ? gemv1_kernel<TW, true, false> : gemv1_kernel<TW, false, false>);
                launch_ex(b, b->use_pdl, kernel, grid, GEMV1_WARPS * 32, smem, x, S, cols,
                          total, (int)rpb);
                LAUNCHED(b, "gemv1_kernel");
                return 1;
            }
        }
    }
    if (fold)
        return 0;
#define GEMV2_LAUNCH(NR)                                                                           \
    do {                                                                                           \
        if (glu)                                                                                   \
            launch(b, gemv2_kernel<TW, NR, true>, blocks, GEMV2_WARPS * 32, 0, x, S, n, cols,      \
                   vec);                                                                           \
        else                                                                                       \
            launch(b, gemv2_kernel<TW, NR, false>, blocks, GEMV2_WARPS * 32, 0, x, S, n, cols,     \
                   vec);                                                                           \
    } while (0)
    if (n == 1)
        GEMV2_LAUNCH(1);
    else if (n <= 4)
        GEMV2_LAUNCH(4);
    else
        GEMV2_LAUNCH(8);
#undef GEMV2_LAUNCH
    LAUNCHED(b, "gemv2_kernel");
    return 1;
}

int cu_gemv_multi(cu_backend *b, const float *x, const be_weight *const *w,
                  const be_weight *const *bias, float *const *y, int n_mat, int n, bool glu,
                  const gemv_fold *fold)
{
    if (w[0]->dtype == DT_BF16)
        return gemv_multi_t<__nv_bfloat16>(b, x, w, bias, y, n_mat, n, glu, fold);
    if (w[0]->dtype == DT_F16)
        return gemv_multi_t<__half>(b, x, w, bias, y, n_mat, n, glu, fold);
    return gemv_multi_t<float>(b, x, w, bias, y, n_mat, n, glu, fold);
}

/* For be_cuda_new: the attributes of the kernel PDL launches early. */
cudaError_t cu_gemv_attributes(cudaFuncAttributes *fa)
{
    return cudaFuncGetAttributes(fa, (const void *)gemv1_kernel<__nv_bfloat16, false, false>);
}
