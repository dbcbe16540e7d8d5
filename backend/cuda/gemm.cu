/* backend/cuda/gemm.cu: the matmul op — up to GEMV_MAX_N input rows (or
 * every product with INFERD_CUDA_MATMUL=f32) through gemv.cu, above it
 * cuBLAS with float32 accumulation. cuBLAS wants both operands in the
 * weights' dtype, and rounding the float32 activations to bf16 moves
 * logprobs visibly on the golden fixtures; so by default each activation is
 * split into a bf16 high part and a bf16 remainder and multiplied twice (16
 * mantissa bits, 2x the GEMM work). --matmul-precision bfloat16 (or
 * INFERD_CUDA_GEMM=bf16) does one bf16 pass instead (vLLM's precision). */
#include "backend/cuda/backend.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/gemm.cuh"
#include "backend/cuda/gemv.cuh"
#include "backend/cuda/tape.cuh"

#define SPLIT_ONE_GEMM_N 256 /* see cu_matmul */

/* ---- conversions around the GEMMs ---- */

template <typename T>
__global__ void to_half_kernel(const float *x, size_t n, T *out)
{
    dep_open();
    dep_wait();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = from_f<T>(x[i]);
}

/* x = hi + lo, both in T: the remainder keeps the bits hi rounds away. */
template <typename T>
__global__ void split_kernel(const float *x, size_t n, T *hi, T *lo)
{
    dep_open();
    dep_wait();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        T h = from_f<T>(x[i]);
        hi[i] = h;
        lo[i] = from_f<T>(x[i] - to_f(h));
    }
}

/* y[i] = y2[i] + y2[n + i] (+ bias): the two halves of a split product
 * done as one GEMM over 2n columns. */
__global__ void sum_halves_kernel(float *y, const float *y2, const void *bias, int dt,
                                  int64_t rows, size_t n)
{
    dep_open();
    dep_wait();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = y2[i] + y2[n + i] + (bias ? ldw(bias, dt, (int64_t)(i % (size_t)rows)) : 0.0f);
}

/* y[i][r] += bias[r] */
__global__ void bias_kernel(float *y, const void *bias, int dt, int64_t rows, size_t n)
{
    dep_open();
    dep_wait();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] += ldw(bias, dt, (int64_t)(i % (size_t)rows));
}

/* cuBLAS's type for a bf16 or f16 dtype. */
static cudaDataType_t half_type(int dt)
{
    return dt == DT_BF16 ? CUDA_R_16BF : CUDA_R_16F;
}

int cu_half_pass(const cu_backend *b, int dt)
{
    return dt != DT_F32 && (b->gemm_one_pass || cu_matmul_bf16(b));
}

/* ---- cuBLAS ---- */

/* y[n][rows] = xb[n][cols] * w^T + beta * y, xb of type ty (w's, or float):
 * row-major is, column-major, y^T = w^T(as stored) * xb^T, so op(A) = T on
 * the weights and op(B) = N. cuBLAS's default algorithm; 0 or -1 (kept). */
static int gemm_rows(cu_backend *b, const be_weight *w, const void *xb, cudaDataType_t ty, int n,
                     float beta, float *y)
{
    const float one = 1.0f;
    return CKB(b, cublasGemmEx(b->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)w->rows, n, (int)w->cols,
                               &one, w->data, ty, (int)w->cols, xb, ty, (int)w->cols, &beta, y,
                               CUDA_R_32F, (int)w->rows, CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT));
}

/* y[n][rows] += bias, where there is one. */
static void add_bias(cu_backend *b, float *y, const be_weight *bias, int64_t rows, size_t ny)
{
    if (!bias)
        return;
    launch(b, bias_kernel, grid_for(ny, 256), 256, 0, y, bias->data, bias->dtype, rows, ny);
    LAUNCHED(b, "bias_kernel");
}

/* x[nx] rounded to dt (bf16 or f16) into dst; returns dst's cuBLAS type. */
static cudaDataType_t to_half(cu_backend *b, const float *x, size_t nx, int dt, void *dst)
{
    if (dt == DT_BF16)
        launch(b, to_half_kernel<__nv_bfloat16>, grid_for(nx, 256), 256, 0, x, nx,
               (__nv_bfloat16 *)dst);
    else
        launch(b, to_half_kernel<__half>, grid_for(nx, 256), 256, 0, x, nx, (__half *)dst);
    LAUNCHED(b, "to_half_kernel");
    return half_type(dt);
}

/* The n_mat products of n rows of xb, already in the weights' half type ty. */
static void gemm_set(cu_backend *b, const void *xb, cudaDataType_t ty, const be_weight *const *w,
                     const be_weight *const *bias, float *const *y, int n_mat, int n)
{
    for (int i = 0; i < n_mat && !b->base.kept; i++)
        if (gemm_rows(b, w[i], xb, ty, n, 0.0f, y[i]) == 0)
            add_bias(b, y[i], bias[i], w[i]->rows, (size_t)n * (size_t)w[i]->rows);
}

/* x is converted once for all of them. (cuBLAS's strided-batched GEMM over
 * the separate k and v weights, strides being the distances between their
 * allocations, faulted in tools/gpu/gemm_probe: not used.) */
int cu_gemm_multi(cu_backend *b, const float *x, const be_weight *const *w,
                  const be_weight *const *bias, float *const *y, int n_mat, int n)
{
    const int dt = w[0]->dtype;
    if (!cu_half_pass(b, dt))
        return 0;
    const size_t nx = (size_t)n * (size_t)w[0]->cols;
    void *xb = cu_scratch(b, nx * 2);
    if (!xb)
        return n_mat;
    prof_begin(b);
    gemm_set(b, xb, to_half(b, x, nx, dt, xb), w, bias, y, n_mat, n);
    prof_end(b, P_GEMM);
    return n_mat;
}

void cu_matmul(be_backend *bk, const float *x, const be_weight *w, const be_weight *bias, int n,
               float *y)
{
    cu_backend *b = cu_of(bk);
    if (b->recording) {
        tape_op *o = cu_record(b, OP_MATMUL);
        if (o) {
            o->matmul.x = x;
            o->matmul.w = w;
            o->matmul.bias = bias;
            o->matmul.y = y;
            o->matmul.n = n;
        }
        return;
    }
    if (b->base.kept || n <= 0)
        return;
    if (n <= GEMV_MAX_N || b->force_gemv) {
        prof_begin(b);
        cu_gemv_multi(b, x, &w, &bias, &y, 1, n, false, NULL);
        prof_end(b, P_GEMV);
        return;
    }
    const size_t nx = (size_t)n * (size_t)w->cols, ny = (size_t)n * (size_t)w->rows;
    const void *xb = x;
    cudaDataType_t ty = CUDA_R_32F;
    int split = 0;
    float *y2 = NULL;
    prof_begin(b);
    if (w->dtype != DT_F32) {
        split = !cu_half_pass(b, w->dtype);
        /* Up to SPLIT_ONE_GEMM_N rows the product is bound by reading the
         * weights: hi and lo (adjacent in scratch, so one [2n][cols]
         * operand) go through one GEMM that reads them once, and a small
         * kernel adds the halves. Above it the GEMM is bound by arithmetic
         * either way, and two passes accumulating into y need no [2n] buffer. */
        const int one_gemm = split && n <= SPLIT_ONE_GEMM_N;
        char *s = (char *)cu_scratch(b, nx * 2 * (split ? 2 : 1) + (one_gemm ? ny * 2 * 4 : 0));
        if (!s)
            return;
        const unsigned g = grid_for(nx, 256);
        if (!split) {
            ty = to_half(b, x, nx, w->dtype, s);
        } else if (w->dtype == DT_BF16) {
            __nv_bfloat16 *hi = (__nv_bfloat16 *)s, *lo = hi + nx;
            launch(b, split_kernel<__nv_bfloat16>, g, 256, 0, x, nx, hi, lo);
            ty = half_type(w->dtype);
            LAUNCHED(b, "split_kernel");
        } else {
            __half *hi = (__half *)s, *lo = hi + nx;
            launch(b, split_kernel<__half>, g, 256, 0, x, nx, hi, lo);
            ty = half_type(w->dtype);
            LAUNCHED(b, "split_kernel");
        }
        if (b->base.kept)
            return;
        xb = s;
        if (one_gemm)
            y2 = (float *)(s + nx * 4);
    }
    if (y2) {
        if (gemm_rows(b, w, xb, ty, 2 * n, 0.0f, y2))
            return;
        launch(b, sum_halves_kernel, grid_for(ny, 256), 256, 0, y, y2, bias ? bias->data : NULL,
               bias ? bias->dtype : 0, w->rows, ny);
        LAUNCHED(b, "sum_halves_kernel");
        prof_end(b, P_GEMM);
        return;
    }
    if (gemm_rows(b, w, xb, ty, n, 0.0f, y) ||
        (split && gemm_rows(b, w, (const char *)xb + nx * 2, ty, n, 1.0f, y)))
        return;
    add_bias(b, y, bias, w->rows, ny);
    prof_end(b, P_GEMM);
}

void cu_gemm_half(cu_backend *b, const void *xb, int dt, const be_weight *const *w,
                  const be_weight *const *bias, float *const *y, int n_mat, int n)
{
    gemm_set(b, xb, half_type(dt), w, bias, y, n_mat, n);
}
