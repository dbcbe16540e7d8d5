/* Engine throughput on the CPU: N concurrent requests of P random prompt
 * tokens and T forced output tokens (ignore_eos), all submitted at once,
 * read from one thread. Prints wall time, output and total tokens/s, mean
 * time to first token and the engine's step count. Built and run by
 * bench/engine.sh (not part of the library or the test suite).
 *   engine_bench MODEL_DIR N P T [THREADS] [BUDGET] */
#include <stdio.h>
#include <stdlib.h>

#include "engine/engine.h"

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: engine_bench MODEL_DIR N P T [THREADS] [BUDGET]\n");
        return 2;
    }
    int n = atoi(argv[2]), p = atoi(argv[3]), t = atoi(argv[4]);
    int threads = argc > 5 ? atoi(argv[5]) : 0, budget = argc > 6 ? atoi(argv[6]) : 2048;
    mdl_options o = {.device = "cpu", .n_threads = threads};
    mdl_model *m = NULL;
    eng_engine *g = NULL;
    inferd_error e = {{0}};
    if (mdl_load(argv[1], &o, &m, &e))
        goto err;
    eng_config c;
    eng_config_defaults(&c);
    c.max_model_len = 4096;
    c.kv_cache_bytes = (size_t)2 << 30;
    c.max_num_batched_tokens = budget;
    c.enable_prefix_caching = 0;
    int32_t eos = 0;
    if (eng_create(m, &c, &eos, 1, &g, &e))
        goto err;
    int vocab = mdl_config(m)->vocab_size;
    eng_request **r = calloc((size_t)n, sizeof *r);
    double *ttft = calloc((size_t)n, sizeof *ttft);
    int32_t *prompt = malloc((size_t)p * sizeof *prompt);
    uint32_t x = 1;
    double t0 = now_seconds();
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < p; k++) {
            x = x * 1103515245u + 12345u;
            prompt[k] = (int32_t)((x >> 8) % (uint32_t)vocab);
        }
        eng_sampling s;
        eng_sampling_defaults(&s);
        s.temperature = 0;
        s.max_tokens = t;
        s.ignore_eos = 1;
        r[i] = eng_submit(g, prompt, p, &s, &e);
        if (!r[i])
            goto err;
    }
    /* first tokens, in submission order, then the rest */
    long out = 0;
    eng_event ev;
    for (int i = 0; i < n; i++)
        if (eng_next(r[i], &ev, -1) == 1) {
            ttft[i] = now_seconds() - t0;
            out++;
        }
    for (int i = 0; i < n; i++) {
        while (eng_next(r[i], &ev, -1) == 1)
            out += ev.token >= 0;
        eng_release(r[i]);
    }
    double wall = now_seconds() - t0, mean_ttft = 0;
    for (int i = 0; i < n; i++)
        mean_ttft += ttft[i] / n;
    eng_stats st;
    eng_get_stats(g, &st);
    printf("requests %d prompt %d output %d threads %d budget %d: wall %.2f s, "
           "output %.1f tok/s, total %.1f tok/s, mean TTFT %.2f s, %llu steps "
           "(%.2f s in forward)\n",
           n, p, t, threads, budget, wall, out / wall, (out + (double)n * p) / wall, mean_ttft,
           (unsigned long long)st.steps, st.step_seconds);
    free(r);
    free(ttft);
    free(prompt);
    eng_destroy(g);
    mdl_free(m);
    return 0;
err:
    fprintf(stderr, "engine_bench: %s\n", e.msg);
    eng_destroy(g);
    mdl_free(m);
    return 1;
}
