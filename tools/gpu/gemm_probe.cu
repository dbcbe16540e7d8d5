/* tools/gpu/gemm_probe: times cuBLAS on the matrix products of a Llama-3.1-8B
 * layer (bf16 weights, float32 accumulation) the ways backend/cuda can issue
 * them, to tell the GEMM's own speed from everything around it in a profile.
 *   nvcc -O2 -gencode=arch=compute_90a,code=sm_90a gemm_probe.cu -lcublas -lcublasLt
 *   ./gemm_probe [n ...]          (token counts; default 64 1024 8192)
 *   ./gemm_probe sep [n ...]      each product of a layer on its own weights, as the
 *                                 serving steps issue them, against cublasLt's best
 *                                 of 16 heuristic candidates */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define CK(x) do { int rc_ = (int)(x); if (rc_) { fprintf(stderr, "%s: %d\n", #x, rc_); exit(1); } } while (0)

static const struct { const char *name; int rows, cols; } shapes[] = {
    {"qkv", 6144, 4096}, {"o", 4096, 4096}, {"gate_up", 28672, 4096}, {"down", 4096, 14336},
};

/* Times stmt over 20 runs after 3 warm-ups (events ea, eb); microseconds per run. */
#define TIME_US(out, stmt)                                                                    \
    do {                                                                                      \
        for (int w_ = 0; w_ < 3; w_++) { stmt; }                                              \
        cudaEventRecord(ea);                                                                  \
        for (int r_ = 0; r_ < 20; r_++) { stmt; }                                             \
        cudaEventRecord(eb);                                                                  \
        CK(cudaEventSynchronize(eb));                                                         \
        float ms_;                                                                            \
        cudaEventElapsedTime(&ms_, ea, eb);                                                   \
        out = ms_ * 1e3f / 20;                                                                \
    } while (0)

static int sep_main(int argc, char **argv)
{
    static const struct { const char *name; int rows, cols; } m[] = {
        {"q", 4096, 4096}, {"k", 1024, 4096}, {"v", 1024, 4096}, {"o", 4096, 4096},
        {"gate", 14336, 4096}, {"up", 14336, 4096}, {"down", 4096, 14336}, {"lm_head", 128256, 4096},
    };
    enum { NM = 8 };
    int ns[16] = {16, 62, 128, 256}, nn = 4;
    if (argc > 2) {
        nn = 0;
        for (int i = 2; i < argc && nn < 16; i++)
            ns[nn++] = atoi(argv[i]);
    }
    cublasHandle_t h;
    cublasLtHandle_t lt;
    CK(cublasCreate(&h));
    CK(cublasLtCreate(&lt));
    void *w[NM], *x, *y[NM], *ws;
    size_t wsb = 32 << 20;
    for (int i = 0; i < NM; i++) {
        CK(cudaMalloc(&w[i], (size_t)m[i].rows * m[i].cols * 2));
        CK(cudaMemset(w[i], 0x3c, (size_t)m[i].rows * m[i].cols * 2));
        CK(cudaMalloc(&y[i], (size_t)m[i].rows * 2048 * 4));
    }
    CK(cudaMalloc(&x, (size_t)2048 * 14336 * 2));
    CK(cudaMemset(x, 0x3c, (size_t)2048 * 14336 * 2));
    CK(cudaMalloc(&ws, wsb));
    cudaEvent_t ea, eb;
    cudaEventCreate(&ea);
    cudaEventCreate(&eb);
    const float one = 1, zero = 0;
    printf("%-8s %6s %10s %10s %10s %5s %8s\n", "matrix", "n", "GemmEx us", "Lt 1st us",
           "Lt best us", "#best", "GB/s");
    for (int in = 0; in < nn; in++) {
        const int n = ns[in];
        float tot = 0, tot_lt = 0;
        for (int i = 0; i < NM; i++) {
            const int R = m[i].rows, K = m[i].cols;
            float us, best = 1e30f, first = 0;
            int best_at = -1;
            TIME_US(us, CK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, R, n, K, &one, w[i],
                                        CUDA_R_16BF, K, x, CUDA_R_16BF, K, &zero, y[i],
                                        CUDA_R_32F, R, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)));
            cublasLtMatmulDesc_t d;
            cublasLtMatrixLayout_t la, lb, lc;
            cublasOperation_t tA = CUBLAS_OP_T;
            CK(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
            CK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof tA));
            CK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, K, R, K));
            CK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, K, n, K));
            CK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, R, n, R));
            cublasLtMatmulPreference_t pref;
            CK(cublasLtMatmulPreferenceCreate(&pref));
            CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &wsb, sizeof wsb));
            cublasLtMatmulHeuristicResult_t hr[16];
            int nr = 0;
            CK(cublasLtMatmulAlgoGetHeuristic(lt, d, la, lb, lc, lc, pref, 16, hr, &nr));
            for (int a = 0; a < nr; a++) {
                float ua;
                TIME_US(ua, CK(cublasLtMatmul(lt, d, &one, w[i], la, x, lb, &zero, y[i], lc,
                                              y[i], lc, &hr[a].algo, ws, wsb, 0)));
                if (a == 0)
                    first = ua;
                if (ua < best) {
                    best = ua;
                    best_at = a;
                }
            }
            cublasLtMatmulPreferenceDestroy(pref);
            cublasLtMatrixLayoutDestroy(la);
            cublasLtMatrixLayoutDestroy(lb);
            cublasLtMatrixLayoutDestroy(lc);
            cublasLtMatmulDescDestroy(d);
            if (i < NM - 1) {
                tot += us;
                tot_lt += best;
            }
            /* #best: which of the heuristic's candidates (0 = its first choice) was best */
            printf("%-8s %6d %10.1f %10.1f %10.1f %5d %8.0f\n", m[i].name, n, us, first, best,
                   best_at, (double)R * K * 2 / (us * 1e-6) / 1e9);
        }
        printf("n %d: layer (q k v o gate up down) GemmEx %.1f us, Lt best %.1f us; "
               "x32 layers %.2f ms\n", n, tot, tot_lt, tot * 32 / 1e3);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && argv[1][0] == 's')
        return sep_main(argc, argv);
    int ns[16] = {64, 1024, 8192}, nn = 3;
    if (argc > 1) {
        nn = 0;
        for (int i = 1; i < argc && nn < 16; i++)
            ns[nn++] = atoi(argv[i]);
    }
    cublasHandle_t h;
    CK(cublasCreate(&h));
    size_t maxw = (size_t)28672 * 14336, maxx = (size_t)2 * 8192 * 14336, maxy = (size_t)2 * 8192 * 28672;
    void *w, *x, *y;
    CK(cudaMalloc(&w, maxw * 2));
    CK(cudaMalloc(&x, maxx * 2));
    CK(cudaMalloc(&y, maxy * 4));
    CK(cudaMemset(w, 0x3c, maxw * 2));
    CK(cudaMemset(x, 0x3c, maxx * 2));
    cudaEvent_t ea, eb;
    cudaEventCreate(&ea);
    cudaEventCreate(&eb);
    const float one = 1, zero = 0;
    printf("%-8s %6s %-22s %9s %9s\n", "matrix", "n", "variant", "us", "TFLOP/s");
    for (int in = 0; in < nn; in++) {
        int n = ns[in];
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
            int R = shapes[s].rows, K = shapes[s].cols;
            for (int v = 0; v < 4; v++) {
                /* 0: one pass f32 out; 1: split as two GEMMs; 2: split as one
                 * GEMM over 2n columns; 3: one pass bf16 out */
                int cols = v == 2 ? 2 * n : n;
                cudaDataType_t ct = v == 3 ? CUDA_R_16BF : CUDA_R_32F;
                auto product = [&] {
                    CK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, R, cols, K, &one, w, CUDA_R_16BF, K,
                                    x, CUDA_R_16BF, K, &zero, y, ct, R, CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT));
                    if (v == 1)
                        CK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, R, n, K, &one, w, CUDA_R_16BF,
                                        K, (char *)x + (size_t)n * K * 2, CUDA_R_16BF, K, &one, y,
                                        CUDA_R_32F, R, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
                };
                float us;
                TIME_US(us, product());
                static const char *vn[] = {"one-pass f32-out", "split two GEMMs", "split one 2n GEMM",
                                           "one-pass bf16-out"};
                double fl = 2.0 * R * K * (double)n * (v == 1 || v == 2 ? 2 : 1);
                printf("%-8s %6d %-22s %9.1f %9.1f\n", shapes[s].name, n, vn[v], us,
                       fl / (us * 1e-6) / 1e12);
            }
        }
    }
    return 0;
}
