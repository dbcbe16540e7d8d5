/* Microbenchmark of the CPU backend's matmul on the Qwen2.5-0.5B layer
 * shapes, float32 vs bfloat16 precision, random bf16 weights. Prints, per
 * precision, the wall and CPU time of one layer's seven matmuls and the
 * GFLOP/s they reach. Build after `make`:
 *   cc -O2 -march=x86-64-v3 -fopenmp -I. tools/cpu_matmul_bench.c build/libinferd.a \
 *      -lm -o build/cpu_matmul_bench
 *   build/cpu_matmul_bench [N_ROWS=256] [THREADS=2] [REPEATS=5] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "backend/backend.h"

static double now(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    const int n = argc > 1 ? atoi(argv[1]) : 256, threads = argc > 2 ? atoi(argv[2]) : 2;
    const int reps = argc > 3 ? atoi(argv[3]) : 5;
    static const int shapes[7][2] = {{896, 896}, {128, 896}, {128, 896}, {896, 896},
                                     {4864, 896}, {4864, 896}, {896, 4864}};
    srand(1);
    uint16_t *wsrc[7];
    double flop = 0;
    for (int s = 0; s < 7; s++) {
        size_t cnt = (size_t)shapes[s][0] * (size_t)shapes[s][1];
        wsrc[s] = malloc(cnt * 2);
        for (size_t i = 0; i < cnt; i++)
            wsrc[s][i] = f32_to_bf16(((float)rand() / RAND_MAX - 0.5f) * 0.1f);
        flop += 2.0 * (double)cnt * n;
    }
    float *x = malloc(sizeof(float) * (size_t)n * 4864), *y = malloc(sizeof(float) * (size_t)n * 4864);
    for (size_t i = 0; i < (size_t)n * 4864; i++)
        x[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int prec = 0; prec < 2; prec++) {
        inferd_error e = {{0}};
        be_backend *b = be_cpu_new(threads, &e);
        be_set_matmul_bf16(b, prec);
        be_weight w[7];
        for (int s = 0; s < 7; s++)
            if (be_weight_init(b, wsrc[s], DT_BF16, shapes[s][0], shapes[s][1], &w[s], &e)) {
                fprintf(stderr, "%s\n", e.msg);
                return 1;
            }
        double best = 1e9, best_cpu = 1e9;
        for (int r = 0; r < reps; r++) {
            double t0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
            for (int s = 0; s < 7; s++)
                be_matmul(b, x, &w[s], NULL, n, y);
            double t = now(CLOCK_MONOTONIC) - t0, c = now(CLOCK_PROCESS_CPUTIME_ID) - c0;
            if (t < best)
                best = t;
            if (c < best_cpu)
                best_cpu = c;
        }
        printf("%-8s n=%d threads=%d: layer %.2f ms wall (%.1f GFLOP/s), %.2f ms cpu "
               "(%.1f GFLOP/s per core)\n",
               prec ? "bfloat16" : "float32", n, threads, best * 1e3, flop / best * 1e-9,
               best_cpu * 1e3, flop / best_cpu * 1e-9);
        be_free(b);
    }
    for (int s = 0; s < 7; s++)
        free(wsrc[s]);
    free(x);
    free(y);
    return 0;
}
