/* The decode step's matrix products alone: times the CUDA backend's matmul
 * op (the GEMV kernel up to 8 rows) on each Llama-3.1-8B weight shape with
 * random bf16 weights, back to back, and prints the weight-read rate — what
 * batch-1 decode can reach against the device copy bandwidth (~4.3 TB/s on
 * an H200, counting read and write).
 *   make build/tools/gpu/gemv_probe, then on the GPU machine: gemv_probe [ROWS 1..8] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "backend/backend.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
    const int n = argc > 1 ? atoi(argv[1]) : 1;
    if (n < 1 || n > 8) {
        fprintf(stderr, "usage: gemv_probe [ROWS 1..8]\n");
        return 2;
    }
    inferd_error e = {{0}};
    be_backend *b = be_cuda_new(0, &e);
    if (!b) {
        fprintf(stderr, "gemv_probe: %s\n", e.msg);
        return 1;
    }
    static const struct {
        const char *name;
        int64_t rows, cols;
    } shape[] = {{"q, o", 4096, 4096},        {"k, v", 1024, 4096},
                 {"gate, up", 14336, 4096},   {"down", 4096, 14336},
                 {"lm_head", 128256, 4096}};
    printf("rows %d\n%-10s %8s %10s %8s\n", n, "matrix", "MB", "us", "GB/s");
    uint64_t r = 88172645463325252ull;
    for (size_t s = 0; s < sizeof shape / sizeof *shape; s++) {
        const size_t nw = (size_t)shape[s].rows * (size_t)shape[s].cols;
        uint16_t *host = malloc(nw * 2);
        if (!host)
            return 1;
        for (size_t i = 0; i < nw; i++) { /* bf16 in [-1, 1): sign, exponent 2^-1..2^-8 */
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            host[i] = (uint16_t)((r & 0x8000) | (0x3780 + (r >> 20) % 0x780));
        }
        be_weight w;
        if (be_weight_init(b, host, DT_BF16, shape[s].rows, shape[s].cols, &w, &e)) {
            fprintf(stderr, "gemv_probe: %s\n", e.msg);
            return 1;
        }
        free(host);
        float *x = be_alloc(b, (size_t)n * (size_t)shape[s].cols * sizeof(float));
        float *y = be_alloc(b, (size_t)n * (size_t)shape[s].rows * sizeof(float));
        float sink;
        const int iters = shape[s].rows > 100000 ? 50 : 400;
        for (int i = 0; i < 20; i++)
            be_matmul(b, x, &w, NULL, n, y);
        if (be_to_host(b, &sink, y, sizeof sink, &e))
            return fprintf(stderr, "gemv_probe: %s\n", e.msg), 1;
        double t0 = now();
        for (int i = 0; i < iters; i++)
            be_matmul(b, x, &w, NULL, n, y);
        if (be_to_host(b, &sink, y, sizeof sink, &e))
            return fprintf(stderr, "gemv_probe: %s\n", e.msg), 1;
        const double us = (now() - t0) / iters * 1e6;
        printf("%-10s %8.1f %10.1f %8.0f\n", shape[s].name, nw * 2 / 1e6, us, nw * 2 / us / 1e3);
        be_dealloc(b, x);
        be_dealloc(b, y);
    }
    be_free(b);
    return 0;
}
