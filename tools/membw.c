/* Memory read bandwidth with N threads: the physical limit of CPU decode,
 * which must stream every weight once per token. Used by bench/cpu.sh.
 *   cc -O2 -mavx2 -fopenmp tools/membw.c -o membw && ./membw [GiB=1] */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
    size_t n = (size_t)(argc > 1 ? atof(argv[1]) : 1.0) * (1ull << 30);
    n &= ~(size_t)127;
    /* in transparent huge pages where the kernel gives them, as the CPU
     * backend's packed weights are: 4 KiB pages would add a TLB miss every
     * 4 KiB, which is not the memory's limit */
    char *p = aligned_alloc((size_t)2 << 20, n);
    if (!p)
        return 1;
    madvise(p, n, MADV_HUGEPAGE);
    memset(p, 1, n);
    double best = 0, sink = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
        float s = 0;
#pragma omp parallel reduction(+ : s)
        {
            __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
#pragma omp for schedule(static)
            for (size_t i = 0; i < n; i += 128) {
                a = _mm256_add_ps(a, _mm256_load_ps((const float *)(p + i)));
                b = _mm256_add_ps(b, _mm256_load_ps((const float *)(p + i + 32)));
                c = _mm256_add_ps(c, _mm256_load_ps((const float *)(p + i + 64)));
                d = _mm256_add_ps(d, _mm256_load_ps((const float *)(p + i + 96)));
            }
            float v[8];
            _mm256_storeu_ps(v, _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
            for (int k = 0; k < 8; k++)
                s += v[k];
        }
        double gbs = (double)n / (now() - t0) / 1e9;
        best = gbs > best ? gbs : best;
        sink += s;
    }
    printf("%.1f\n", best);
    free(p);
    return sink == 0.5 ? 2 : 0;
}
