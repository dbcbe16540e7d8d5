/* tools/gpu/gemm_probe: times cuBLAS on the matrix products of a Llama-3.1-8B
 * layer (bf16 weights, float32 accumulation) the ways backend/cuda can issue
 * them, to tell the GEMM's own speed from everything around it in a profile.
 *   nvcc -O2 -gencode=arch=compute_90a,code=sm_90a gemm_probe.cu -lcublas -lcublasLt
 *   ./gemm_probe [n ...]          (token counts; default 64 1024 8192) */
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

int main(int argc, char **argv)
{
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
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
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
                float ms = 0;
                for (int rep = 0; rep < 2; rep++) { /* rep 0 warms up */
                    int iters = rep ? 10 : 2;
                    cudaEventRecord(a);
                    for (int it = 0; it < iters; it++) {
                        CK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, R, cols, K, &one, w, CUDA_R_16BF, K,
                                        x, CUDA_R_16BF, K, &zero, y, ct, R, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT));
                        if (v == 1)
                            CK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, R, n, K, &one, w, CUDA_R_16BF,
                                            K, (char *)x + (size_t)n * K * 2, CUDA_R_16BF, K, &one, y,
                                            CUDA_R_32F, R, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
                    }
                    cudaEventRecord(b);
                    CK(cudaEventSynchronize(b));
                    cudaEventElapsedTime(&ms, a, b);
                    ms /= iters;
                }
                static const char *vn[] = {"one-pass f32-out", "split two GEMMs", "split one 2n GEMM",
                                           "one-pass bf16-out"};
                double fl = 2.0 * R * K * (double)n * (v == 1 || v == 2 ? 2 : 1);
                printf("%-8s %6d %-22s %9.1f %9.1f\n", shapes[s].name, n, vn[v], ms * 1e3,
                       fl / (ms * 1e-3) / 1e12);
            }
        }
    }
    return 0;
}
