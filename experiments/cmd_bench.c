// cmd_bench.c: `earnest bench` times prefill and decode for one or more
// methods side by side, on the same weights, and prints the machine's own
// cblas_sgemm rate measured in the same run as the ceiling to compare with.
//
// Work per configuration (prompt length L, batch B, beam W, G code tokens):
//   prefill: B sequences of L prompt tokens (EARN: plus P + S registers) in one
//            batched call; each sequence's prompt KV is kept once;
//   decode : the constrained beam search of runtime/beam.h over a synthetic
//            trie of 4096 random G-token codes: G selections and G - 1 forward
//            steps over the B*W beams, which share their sequence's prompt KV (a
//            read-only parent) and own only their generated tokens' KV.
// kv_bytes is what the caches allocate after the last token (one batch), which
// is exactly what the plan needs.
#include <math.h>
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/bench_policy.h"
#include "experiments/cli.h"
#include "experiments/commands.h"
#include "experiments/device.h"
#include "datasets/prompt.h"
#include "runtime/trie.h"
#include "runtime/beam.h"
#include "runtime/block.h"
#include "runtime/checkpoint.h"
#include "runtime/plan.h"
#include "runtime/preset.h"
#include "runtime/train.h"

static const char *BENCH_ABOUT =
    "  Times batched prefill and beam decode (shared prompt KV) for each method, on the same\n"
    "  weights, and reports GFLOP/s next to the cblas_sgemm rate measured in the same run.\n"
    "  Decode is the constrained beam search (width --beam) over a synthetic trie of --gen-token codes.\n"
    "  --train instead times training steps (forward + backward + AdamW) on --batch sequences of\n"
    "  --prompt-len tokens, a label on every 4th position, and prints tokens/s and GFLOP/s next to\n"
    "  the sgemm rate measured just before each step block (median of --reps blocks of 3 steps).\n"
    "  Lists run every combination. 'full' is the ordinary model; 'earn' splits at layer K\n"
    "  (default N/4) with P prefix and S suffix registers (default 1 and 1).\n"
    "  CSV columns: method,k,prefix_regs,suffix_regs,prompt_len,batch,beam,device,prefill_ms,\n"
    "  decode_ms,total_ms,kv_bytes,speedup,kv_reduction,prefill_gflops,sgemm_gflops,\n"
    "  decode_ms_per_token,threads,prefill_vs_sgemm,n_layers,reps,dtype,device_name,verify,gamma,draft_beams,\n"
    "  target_calls_per_user,accepted_levels_per_round,draft_share,decode_step_ms,step_bytes,step_flops,copy_gbs,\n"
    "  triad_gbs,roofline_step_ms,step_vs_roofline (times are medians over\n"
    "  --reps after one untimed warm-up run; sgemm_gflops is the runtime's matrix product -- cblas_sgemm on\n"
    "  cpu, cuBLAS in --dtype on cuda -- at the model's MLP shape timed right before each repetition,\n"
    "  prefill_vs_sgemm the median of the per-repetition ratios, so a shared machine's load changes cancel out).\n"
    "  --method also takes KV policies (streaming, h2o, snapkv, pyramidkv, tova, knorm, random) and prompt\n"
    "  policies (truncate, selective) with eval's specs, each on the full model (CPU runtime), and the learned\n"
    "  baselines' shapes on the same weights: skiplayers[:keep=M] (the first M layers, default N/2),\n"
    "  compress500x[:tokens=C,rank=R] (C compression tokens after the prompt, default 1, prefilled with\n"
    "  rank-R LoRA adapters, default 8, then only their KV kept),\n"
    "  gist[:tokens=G] (G gist tokens after the prompt, only their KV kept; default 1), anllm[:items=N]\n"
    "  (the prompt's last N items of --gen tokens, default all that fit after one token, each followed by an\n"
    "  anchor; only the anchors and the tokens in front keep KV) and pod[:regs=P,words=X] (the prompt without\n"
    "  its X instruction words, default the LC-Rec template's 47, and P soft-prompt registers, default 1), e.g.\n"
    "  --method full,earn,snapkv:budget=0.3,window=16,truncate:items=5 (a field with '=' and no ':' continues\n"
    "  the policy before it). Random prompts are items of --gen tokens from the end; a prompt policy's\n"
    "  selection (median of --reps) is added to prefill_ms. Its row: method = the policy's name, policy = its\n"
    "  full spec (last columns: policy, tau generated tokens/s, sigma KV bytes per prompt; speedup and\n"
    "  kv_reduction are over the first method of the list, so put full first).\n"
    "  Decode roofline (cpu, --gen >= 2; the last CSV columns): decode_step_ms = decode_ms / (gen - 1), the decode\n"
    "  phase per forward step (its selections included); step_bytes = the weights and KV one step reads (mean\n"
    "  over the steps), step_flops its FLOPs; copy_gbs and triad_gbs are STREAM copy and triad over 64 MiB arrays\n"
    "  (larger than the caches) on the same threads, right before each repetition; roofline_step_ms =\n"
    "  max(step_bytes / max(copy, triad), step_flops / sgemm rate); step_vs_roofline the median of the\n"
    "  per-repetition ratios of decode_step_ms to it (1 = at the roofline).\n"
    "  --device cuda --preset draws the random weights on the GPU (llama2-7b, qwen2.5-7b never touch the host).\n"
    "  --draft DRAFT_DIR adds, after each method's row, the same work by speculative beam search (CPU only;\n"
    "  --verify, --gamma, --draft-beams as in eval) on the same prompts, trie, batch and threads: method\n"
    "  'full+draft' / 'earn+draft', speedup over that method's ordinary row, and the columns verify, gamma,\n"
    "  draft_beams, target_calls_per_user, accepted_levels_per_round, draft_share (ordinary rows: calls =\n"
    "  --gen, the rest empty). The prompts and codes are random token ids: acceptance here is the two\n"
    "  models' agreement on such input; eval --draft --baseline measures it on a dataset.\n";

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct {
    const char *method;
    const char *policy;      // the KV or prompt policy's full spec ("" for full and earn)
    size_t gen_tokens;       // beams x code tokens of one run (tau = gen_tokens / total time)
    int k, P, S, L, B, W;
    int n_layers;               // layers run (skiplayers: its M)
    double prefill_ms, decode_ms, gflops;
    double sgemm_gflops;     // median of the sgemm rates measured just before each repetition
    double prefill_vs_sgemm; // median over repetitions of (prefill GFLOP/s / that repetition's sgemm rate)
    size_t kv_bytes;
    int base;                // the row its speedup is over
    int spec;                // 1: speculative beam search
    double calls_per_user, acc_per_round, draft_share; // (target calls: --gen for an ordinary row)
    int has_roof;            // the decode roofline columns (cpu, --gen >= 2)
    double step_ms, step_bytes, step_flops, copy_gbs, triad_gbs, roof_ms, step_vs_roof;
} BenchRow;

// ---------------------------------------------------------------------------
// The decode roofline. Memory bandwidth: STREAM's copy (c = a) and triad
// (a = b + s c) over arrays larger than the caches, on the threads the runtime
// uses, each thread on the part it first touched; bytes counted as STREAM does
// (no write-allocate).
typedef struct {
    float *a, *b, *c;
    size_t n;
} StreamBufs;

enum { STREAM_FLOATS = 16 << 20 }; // 64 MiB per array: twice a 32 MiB L3

static void stream_init(StreamBufs *sb) {
    sb->n = STREAM_FLOATS;
    sb->a = xmalloc(sb->n * sizeof(float));
    sb->b = xmalloc(sb->n * sizeof(float));
    sb->c = xmalloc(sb->n * sizeof(float));
    float *a = sb->a, *b = sb->b, *c = sb->c;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < STREAM_FLOATS; i++) { a[i] = 1.0f; b[i] = 2.0f; c[i] = 0.0f; }
}

static void stream_free(StreamBufs *sb) {
    free(sb->a); free(sb->b); free(sb->c);
    memset(sb, 0, sizeof *sb);
}

// GB/s of the best of 3 passes of each.
static void stream_rate(double *copy_gbs, double *triad_gbs, const StreamBufs *sb) {
    float *a = sb->a, *b = sb->b, *c = sb->c;
    double best_copy = 1e30, best_triad = 1e30;
    for (int pass = 0; pass < 3; pass++) {
        double t0 = time_now_s();
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < STREAM_FLOATS; i++) c[i] = a[i];
        double t1 = time_now_s();
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < STREAM_FLOATS; i++) a[i] = b[i] + 0.5f * c[i];
        double t2 = time_now_s();
        best_copy = t1 - t0 < best_copy ? t1 - t0 : best_copy;
        best_triad = t2 - t1 < best_triad ? t2 - t1 : best_triad;
    }
    *copy_gbs = 2.0 * (double)STREAM_FLOATS * sizeof(float) / best_copy * 1e-9;
    *triad_gbs = 3.0 * (double)STREAM_FLOATS * sizeof(float) / best_triad * 1e-9;
}

// What one decode forward of the search reads and computes, the mean over its
// G - 1 steps (step s feeds each of the B*W beams its s-th token): every weight
// the beams pass through once (all layers, the output head, their embedding
// rows), each user's prompt KV once (its beams share it) and each beam's own s
// entries per layer; FLOPs of the products, the head and the attention.
static void decode_step_cost(double *bytes, double *flops, const ModelConfig *c, int L, int regs, int B, int W,
                             int G) {
    const double D = (double)c->dim, V = (double)c->vocab_size, rows = (double)B * W;
    const int N = c->n_layers, k = c->method == METHOD_EARN ? c->layer_split_k : N;
    // floats read: all parameters, but of an untied embedding table only the beams' rows
    double w = (double)model_param_count(c) - (c->tie_embeddings ? 0.0 : V * D) + rows * D;
    *bytes = *flops = 0.0;
    for (int s = 1; s < G; s++) {
        *bytes += 4.0 * w + (double)B * (double)beam_kv_bytes_closed_form(c, L, regs, W, s);
        double keys = (double)k * (L + regs) + (double)(N - k) * regs + (double)N * s; // one beam, all layers
        *flops += (double)N * (flops_qkv(c, (size_t)rows) + flops_out_mlp(c, (size_t)rows)) +
                  flops_head(c, (size_t)rows) + rows * 4.0 * c->head_dim * c->n_heads * keys;
    }
    *bytes /= (double)(G - 1);
    *flops /= (double)(G - 1);
}

// The roofline columns of a row from each repetition's decode time td [reps] (s),
// sgemm rate sg [reps] (GFLOP/s) and bandwidths cp, tr [reps] (GB/s).
// kv_L, regs: the prompt's (L, r) of beam_kv_bytes_closed_form.
static void roofline_row(BenchRow *row, const ModelConfig *c, int kv_L, int regs, int G, int reps, const double *td,
                         const double *sg, double *cp, double *tr) {
    double ratio[32], roof[32];
    decode_step_cost(&row->step_bytes, &row->step_flops, c, kv_L, regs, row->B, row->W, G);
    for (int r = 0; r < reps; r++) {
        double bw = cp[r] > tr[r] ? cp[r] : tr[r], t_mem = row->step_bytes / (bw * 1e9);
        double t_flop = row->step_flops / (sg[r] * 1e9);
        roof[r] = t_mem > t_flop ? t_mem : t_flop;
        ratio[r] = td[r] / (G - 1) / roof[r];
    }
    row->has_roof = 1;
    row->step_ms = row->decode_ms / (G - 1);
    row->roof_ms = 1e3 * median(roof, reps);
    row->step_vs_roof = median(ratio, reps);
    row->copy_gbs = median(cp, reps);
    row->triad_gbs = median(tr, reps);
}

// A synthetic item set for the beam search: n_items random codes of G levels,
// level j drawn from its own block of `per_level` token ids at the top of the
// vocabulary (prompt tokens are drawn below them).
static void bench_trie(Trie *t, int vocab, int G, int n_items, uint64_t seed, int *first_code_tok) {
    int per_level = (vocab / 2) / (G > 0 ? G : 1);
    if (per_level > 256) per_level = 256;
    if (per_level < 1) per_level = 1;
    int base = vocab - per_level * G;
    *first_code_tok = base;
    int *it = xmalloc((size_t)(n_items + 1) * (size_t)G * sizeof(int));
    Rng r;
    rng_seed(&r, seed);
    for (int j = 0; j < G; j++) it[j] = -1;
    for (size_t i = (size_t)G; i < (size_t)(n_items + 1) * (size_t)G; i++) {
        int j = (int)(i % (size_t)G);
        it[i] = base + j * per_level + (int)(rng_u64(&r) % (uint64_t)per_level);
    }
    trie_build(t, it, n_items, G);
    free(it);
}

// The token kinds of a bench prompt of L random tokens (one set for all B
// prompts): kinds [*T1] (allocated), and the closed form's (L, r) in kv_L, kv_r
// (beam.h). c carries the method with its registers. Default: P prefix regs, L
// history tokens, S suffix regs. AnLLM (bench_policy.h): front tokens
// (instruction), then n items of G history tokens, each with its anchor. POD:
// P registers, then the L - X tokens left of the prompt without its X words.
static int bench_kinds(uint8_t **kinds, int *T1, int *kv_L, int *kv_r, const ModelConfig *c, const BenchMethod *bm,
                       int L, int G, Error *e) {
    int P = c->n_prefix_regs, S = c->n_suffix_regs, body = L, items = 0;
    if (c->method == METHOD_ANLLM) {
        items = bm->anllm_items ? bm->anllm_items : (L - 1) / G;
        if (items < 1 || (long)items * G > L - 1)
            return err_set(e, "--method %s: %d items of %d tokens do not fit a prompt of %d tokens after one leading "
                           "token (--prompt-len, --gen)", bm->spec[0] ? bm->spec : "anllm", items, G, L);
        body = L - items * G; // the instruction segment in front
    } else if (c->method == METHOD_POD) {
        int X = bm->pod_words >= 0 ? bm->pod_words : prompt_length(PROMPT_TEMPLATE_LCREC, 0, 0, 1, 0, 0) - 1;
        if (X > L - 1)
            return err_set(e, "--method %s: the prompt of %d tokens (--prompt-len) has no history left after its %d "
                           "instruction words", bm->spec, L, X);
        body = L - X;
    }
    *T1 = P + body + items * (G + 1) + S;
    *kv_L = body;
    *kv_r = P + items + S;
    uint8_t *k = *kinds = xmalloc((size_t)*T1);
    int at = 0;
    for (int i = 0; i < P; i++) k[at++] = TOKEN_KIND_PREFIX_REG;
    for (int i = 0; i < body; i++) k[at++] = items ? TOKEN_KIND_INSTRUCTION : TOKEN_KIND_HISTORY;
    for (int it = 0; it < items; it++) {
        for (int j = 0; j < G; j++) k[at++] = TOKEN_KIND_HISTORY;
        k[at++] = TOKEN_KIND_SUFFIX_REG; // AnLLM's anchor
    }
    for (int i = 0; i < S; i++) k[at++] = TOKEN_KIND_SUFFIX_REG;
    CHECK(at == *T1, "bench_kinds: %d kinds for %d tokens", at, *T1);
    return 0;
}

// Runs one configuration on the runtime of dm; returns -1 with e set on failure.
//   prefill: B prompts of L tokens (EARN: plus P + S registers) in one call;
//   decode : constrained beam search of width W over a synthetic trie of G-token
//            codes (G - 1 decode forwards over all B*W beams, which share their
//            prompt's KV), timed from the prefill's end to the last selection.
static int bench_one_on(BenchRow *row, DeviceModel *dm, const BenchMethod *bm, int k, int P, int S, int L, int B,
                        int W, int G, int reps, uint64_t seed, const SpecOptions *so, const StreamBufs *sb,
                        Error *e) {
    const ModelMethod method = bm->method;
    ModelConfig *c = device_model_config(dm), saved = *c;
    c->method = method;
    c->layer_split_k = method == METHOD_EARN ? k : 0;
    c->n_prefix_regs = method == METHOD_EARN ? P : method == METHOD_POD ? bm->pod_regs : 0;
    c->n_suffix_regs = method == METHOD_EARN ? S : method == METHOD_GIST ? bm->gist_tokens
                       : method == METHOD_COMPRESS500X ? bm->c500x_tokens : 0;
    if (method == METHOD_SKIPLAYERS) // the first M layers of the same weights (per-layer tensors are [N, ...])
        c->n_layers = bm->keep_layers ? bm->keep_layers : (saved.n_layers / 2 > 0 ? saved.n_layers / 2 : 1);
    int T1 = 0, kv_L = 0, regs = 0;
    uint8_t *kinds = NULL;
    if (bench_kinds(&kinds, &T1, &kv_L, &regs, c, bm, L, G, e)) {
        *c = saved;
        return -1;
    }
    Trie trie;
    int code_tok0;
    bench_trie(&trie, c->vocab_size, G, 4096, seed + 7, &code_tok0);
    int **prompts = xmalloc((size_t)B * sizeof(int *)), *lens = xmalloc((size_t)B * sizeof(int));
    const uint8_t **kp = xmalloc((size_t)B * sizeof(uint8_t *));
    Rng rng;
    rng_seed(&rng, seed);
    for (int b = 0; b < B; b++) {
        prompts[b] = xmalloc((size_t)T1 * sizeof(int));
        for (int i = 0; i < T1; i++) prompts[b][i] = (int)(rng_u64(&rng) % (uint64_t)(code_tok0 > 0 ? code_tok0 : 1));
        lens[b] = T1;
        kp[b] = kinds;
    }
    DeviceSearch bs;
    BeamHyps *h = xcalloc((size_t)B, sizeof(BeamHyps));
    double tp[33], td[33], sg[33], cp[33], tr[33], compress_ms = 0.0; // a prompt policy's selection (bench_policy.h)
    int sg_rows = B * T1 < 8192 ? B * T1 : 8192;
    int rc = bm->has_prompt ? bench_prompt_policy(prompts, lens, B, T1, G, bm, dm->host, reps, &compress_ms, e) : 0;
    int bs_open = 0;
    if (!rc) bs_open = !(rc = device_search_init(&bs, dm, &trie, W, e));
    if (!rc && bm->has_kv) bs.cpu.kv_policy = &bm->kv;
    if (!rc && so) rc = device_search_set_draft(&bs, dm, &trie, W, so, e);
    // One warm-up run first (not timed): module loads, cuBLAS plans, first-touch allocations.
    for (int r = -1; r < reps && !rc; r++) {
        // The ceiling, measured right before this repetition: on a shared machine
        // the load changes from second to second, so each prefill is compared
        // with the matrix-product rate of its own moment.
        if (r >= 0) sg[r] = device_gemm_rate(dm, sg_rows, c->hidden_dim, c->dim, 3);
        if (r >= 0 && sb) stream_rate(&cp[r], &tr[r], sb);
        rc = device_search_run(&bs, h, B, (const int *const *)prompts, kp, lens, e);
        if (rc) break;
        if (r >= 0) {
            tp[r] = bs.prefill_s;
            td[r] = bs.decode_s;
        }
        for (int b = 0; b < B; b++) beam_hyps_free(&h[b]);
    }
    if (!rc) {
        row->method = method == METHOD_EARN ? (so ? "earn+draft" : "earn") : (so ? "full+draft" : "full");
        if (bm->has_kv || bm->has_prompt || (method != METHOD_FINETUNE && method != METHOD_EARN))
            row->method = bm->name;
        row->policy = bm->spec;
        row->gen_tokens = bs.gen_tokens;
        row->spec = so != NULL;
        row->calls_per_user = G;
        if (so) { // the last repetition's figures
            const SpecFigures *f = &bs.spec->fig;
            row->calls_per_user = (double)f->user_target_calls / (double)(f->users ? f->users : 1);
            row->acc_per_round = (double)f->accepted_levels / (double)(f->user_rounds ? f->user_rounds : 1);
            row->draft_share = f->draft_s / (bs.prefill_s + bs.decode_s);
        }
        row->k = c->layer_split_k;
        row->n_layers = c->n_layers;
        row->P = c->n_prefix_regs;
        row->S = c->n_suffix_regs;
        row->L = L; row->B = B; row->W = W;
        row->prefill_ms = 1e3 * median(tp, reps) + compress_ms;
        row->decode_ms = 1e3 * median(td, reps);
        row->gflops = bs.prefill_flops / (row->prefill_ms * 1e-3) * 1e-9;
        row->kv_bytes = bs.kv_bytes;
        double ratio[32];
        for (int r = 0; r < reps; r++) ratio[r] = bs.prefill_flops / tp[r] * 1e-9 / sg[r];
        row->prefill_vs_sgemm = median(ratio, reps);
        if (sb && G >= 2 && !so) roofline_row(row, c, kv_L, regs, G, reps, td, sg, cp, tr);
        row->sgemm_gflops = median(sg, reps);
    }
    if (bs_open) device_search_free(&bs);
    trie_free(&trie);
    for (int b = 0; b < B; b++) free(prompts[b]);
    free(prompts); free(lens); free(kinds); free(kp); free(h);
    *c = saved;
    return rc;
}

// bench_one_on, on weights with LoRA adapters for compress500x: weights without
// them get rank-R adapters (B = 0) on a copy for this row (CPU runtime only).
static int bench_one(BenchRow *row, DeviceModel *dm, const BenchMethod *bm, int k, int P, int S, int L, int B, int W,
                     int G, int reps, uint64_t seed, const SpecOptions *so, const StreamBufs *sb, Error *e) {
    Model *host = dm->host, with;
    int add = bm->method == METHOD_COMPRESS500X && host->config.lora_rank == 0;
    if (add) {
        if (bm->lora_rank > host->config.dim)
            return err_set(e, "--method %s: LoRA rank %d exceeds hidden_size %d", bm->spec, bm->lora_rank,
                           host->config.dim);
        model_add_lora(&with, host, bm->lora_rank, (float)bm->lora_rank, seed);
        dm->host = &with;
    }
    int rc = bench_one_on(row, dm, bm, k, P, S, L, B, W, G, reps, seed, so, sb, e);
    if (add) {
        dm->host = host;
        model_free(&with);
    }
    return rc;
}

// Training throughput: for each (batch, length), `reps` blocks of 3 training
// steps, each block right after an sgemm measurement; medians of tokens/s and
// of the per-block ratio to sgemm.
static int bench_train(DeviceModel *dm, const int *lens, int n_lens, const int *batches, int n_batches, int reps,
                       uint64_t seed, const char *out, int n_threads) {
    const ModelConfig *c = &dm->host->config;
    Error e;
    AtomicFile af;
    if (out && atomic_open(&af, out, &e)) return cli_fail("bench", &e);
    if (out) fprintf(af.f, "mode,prompt_len,batch,device,ms_per_step,tokens_per_s,train_gflops,sgemm_gflops,train_vs_sgemm,threads\n");
    printf("training steps (forward + backward + AdamW), %d layers, d=%d, vocab %d, %d threads\n", c->n_layers, c->dim,
           c->vocab_size, n_threads);
    printf("%6s %5s %10s %10s %9s %8s %7s\n", "L", "batch", "ms/step", "tokens/s", "GFLOP/s", "sgemm", "%sgemm");
    int rc = 0;
    for (int il = 0; il < n_lens && !rc; il++)
        for (int ib = 0; ib < n_batches && !rc; ib++) {
            double tps[32], gf[32], sg[32], ratio[32], ms[32];
            int rows = lens[il] * batches[ib] < 8192 ? lens[il] * batches[ib] : 8192;
            for (int r = 0; r < reps && !rc; r++) {
                TrainBenchResult tr;
                sg[r] = device_gemm_rate(dm, rows, c->hidden_dim, c->dim, 3);
                rc = train_bench(&tr, c, batches[ib], lens[il], 4, 3, seed + (uint64_t)r, &e);
                tps[r] = tr.tokens_per_s;
                gf[r] = tr.gflops;
                ms[r] = tr.ms_per_step;
                ratio[r] = tr.gflops / sg[r];
            }
            if (rc) break;
            double t = median(tps, reps), g = median(gf, reps), s = median(sg, reps), q = median(ratio, reps);
            double mps = median(ms, reps);
            printf("%6d %5d %10.1f %10.0f %9.1f %8.1f %6.0f%%\n", lens[il], batches[ib], mps, t, g, s, 100 * q);
            if (out)
                fprintf(af.f, "train,%d,%d,cpu,%.3f,%.1f,%.3f,%.3f,%.4f,%d\n", lens[il], batches[ib], mps, t, g, s, q,
                        n_threads);
        }
    if (rc) {
        if (out) atomic_abort(&af);
        return cli_fail("bench", &e);
    }
    if (out && atomic_commit(&af, &e)) return cli_fail("bench", &e);
    return 0;
}

typedef struct {
    const char *model_dir, *preset, *out, *methods_s, *device_s, *dtype;
    CliIntList lens, batches, beams;
    int vocab, k, P, S, G, reps, threads, seed, train;
    const char *draft_dir, *verify_s;   // --draft, --verify
    int gamma, draft_beams, draft_seed;
    SpecOptions spec;                   // spec.draft: the loaded draft, or NULL
    Device device;
} BenchArgs;

// --method: full, earn and the policies (experiments/bench_policy.h); returns the count, or -1 after a message.
static int parse_methods(BenchMethod *methods, const char *s, Device device, int draft) {
    Error e;
    int n = bench_methods_parse(methods, s, &e);
    if (n < 0) {
        fprintf(stderr, "earnest bench: --method: %s\n", e.msg);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        int learned = methods[i].method != METHOD_FINETUNE && methods[i].method != METHOD_EARN;
        if ((methods[i].has_kv || methods[i].has_prompt || learned) && device != DEVICE_CPU) {
            fprintf(stderr, "earnest bench: --method: %s runs on --device cpu only (the GPU KV cache keeps whole "
                    "layers)\n", methods[i].name);
            return -1;
        } else if ((methods[i].has_kv || methods[i].has_prompt || learned) && draft) {
            fprintf(stderr, "earnest bench: --method: %s with --draft: speculative beam search takes full or EARN "
                    "targets with whole prompts; bench it without --draft\n", methods[i].name);
            return -1;
        }
    }
    return n;
}

static void print_header(DeviceModel *dm, int n_threads) {
    // The ceiling is measured inside each configuration, right before each
    // repetition (bench_one); a large square product is printed once for reference.
    const ModelConfig *c = device_model_config(dm);
    int sq = dm->device == DEVICE_CUDA ? 8192 : 1024;
    double sg_square = device_gemm_rate(dm, sq, sq, sq, 5);
    const char *gemm = dm->device == DEVICE_CUDA ? "cuBLAS" : "cblas_sgemm";
    printf("model: %d layers, d=%d, %d heads / %d KV heads, SwiGLU %d, vocab %d; device %s (%s, %s); %d threads\n",
           c->n_layers, c->dim, c->n_heads, c->n_kv_heads, c->hidden_dim, c->vocab_size, device_name(dm->device),
           dm->name, dm->dtype, n_threads);
    printf("%s %d^3 %s (reference): %.1f GFLOP/s; the sgemm column is %s at [rows x %d x %d] (the model's\n"
           "MLP shape over the prefill's rows), timed just before each prefill; %%sgemm = median of per-repetition ratios\n",
           gemm, sq, dm->dtype, sg_square, gemm, c->hidden_dim, c->dim);
    if (dm->device == DEVICE_CPU)
        printf("decode roofline: step_ms = decode_ms / (gen - 1); roof_ms = max(bytes / STREAM bandwidth (copy, triad;\n"
               "GB/s, %d threads), FLOPs / sgemm) for that step's weights + KV; x_roof = median per-repetition ratio\n",
               n_threads);
    printf("%-12s %2s %2s %2s %6s %5s %5s %11s %10s %10s %12s %8s %8s %8s %7s %6s %8s %8s %6s %11s\n", "meth", "k", "P",
           "S", "L", "batch", "beam", "prefill_ms", "decode_ms", "total_ms", "kv_bytes", "speedup", "kv_red%", "GFLOP/s",
           "sgemm", "%sgemm", "step_ms", "roof_ms", "x_roof", "copy/triad");
}

static void print_row(const BenchRow *w, const BenchRow *base) {
    double speed = (base->prefill_ms + base->decode_ms) / (w->prefill_ms + w->decode_ms);
    double red = 100.0 * (1.0 - (double)w->kv_bytes / (double)base->kv_bytes);
    printf("%-12s %2d %2d %2d %6d %5d %5d %11.2f %10.2f %10.2f %12zu %8.2f %8.2f %8.1f %7.1f %5.0f%%", w->method, w->k,
           w->P, w->S, w->L, w->B, w->W, w->prefill_ms, w->decode_ms, w->prefill_ms + w->decode_ms, w->kv_bytes, speed,
           red, w->gflops, w->sgemm_gflops, 100.0 * w->prefill_vs_sgemm);
    if (w->has_roof)
        printf(" %8.3f %8.3f %6.2f %5.1f/%5.1f", w->step_ms, w->roof_ms, w->step_vs_roof, w->copy_gbs, w->triad_gbs);
    if (w->spec)
        printf("  %.2f target calls/user, %.2f accepted levels/round, draft %.0f%%", w->calls_per_user,
               w->acc_per_round, 100.0 * w->draft_share);
    printf("\n");
    fflush(stdout);
}

// Every (prompt length, batch, beam) combination, each method in turn (and,
// with --draft, its speculative row after it); rows [combinations * n_methods * (1 + draft)].
static int bench_rows(BenchRow *rows, DeviceModel *dm, const BenchArgs *a, const BenchMethod *methods, int n_methods,
                      const StreamBufs *sb, Error *e) {
    size_t r = 0;
    const SpecOptions *so = a->spec.draft ? &a->spec : NULL;
    for (int il = 0; il < a->lens.n; il++)
        for (int ib = 0; ib < a->batches.n; ib++)
            for (int iw = 0; iw < a->beams.n; iw++) {
                size_t first = r;
                for (int im = 0; im < n_methods; im++)
                    for (int sp = 0; sp <= (so != NULL); sp++, r++) {
                        if (bench_one(&rows[r], dm, &methods[im], a->k, a->P, a->S, a->lens.v[il], a->batches.v[ib],
                                      a->beams.v[iw], a->G, a->reps, (uint64_t)a->seed + 100, sp ? so : NULL, sb, e))
                            return -1;
                        rows[r].base = (int)(sp ? r - 1 : first);
                        print_row(&rows[r], &rows[rows[r].base]);
                    }
            }
    return 0;
}

static int write_csv(const char *out, const BenchRow *rows, size_t n_rows, const BenchArgs *a, int n_threads,
                     const DeviceModel *dm, Error *e) {
    const int G = a->G, reps = a->reps;
    const char *device = device_name(dm->device);
    AtomicFile af;
    if (atomic_open(&af, out, e)) return -1;
    fprintf(af.f, "method,k,prefix_regs,suffix_regs,prompt_len,batch,beam,device,prefill_ms,decode_ms,total_ms,"
                  "kv_bytes,speedup,kv_reduction,prefill_gflops,sgemm_gflops,decode_ms_per_token,threads,"
                  "prefill_vs_sgemm,n_layers,reps,dtype,device_name,verify,gamma,draft_beams,target_calls_per_user,"
                  "accepted_levels_per_round,draft_share,policy,tau,sigma,decode_step_ms,step_bytes,step_flops,"
                  "copy_gbs,triad_gbs,roofline_step_ms,step_vs_roofline\n");
    for (size_t i = 0; i < n_rows; i++) {
        const BenchRow *w = &rows[i], *base = &rows[w->base];
        double tot = w->prefill_ms + w->decode_ms;
        fprintf(af.f, "%s,%d,%d,%d,%d,%d,%d,%s,%.4f,%.4f,%.4f,%zu,%.4f,%.4f,%.3f,%.3f,%.4f,%d,%.4f,%d,%d,%s,\"%s\",",
                w->method, w->k, w->P, w->S, w->L, w->B, w->W, device, w->prefill_ms, w->decode_ms, tot, w->kv_bytes,
                (base->prefill_ms + base->decode_ms) / tot, 1.0 - (double)w->kv_bytes / (double)base->kv_bytes,
                w->gflops, w->sgemm_gflops, w->decode_ms / G, n_threads, w->prefill_vs_sgemm, w->n_layers, reps, dm->dtype,
                dm->name);
        if (w->spec)
            fprintf(af.f, "%s,%d,%d,%.4f,%.4f,%.4f,", spec_verify_name(a->spec.verify), a->spec.gamma,
                    a->spec.draft_beams, w->calls_per_user, w->acc_per_round, w->draft_share);
        else
            fprintf(af.f, ",,,%d,,,", G);
        // policy (quoted: a spec holds commas), tau (generated tokens/s), sigma (KV bytes per prompt)
        fprintf(af.f, "\"%s\",%.3f,%.1f,", w->policy, tot > 0 ? (double)w->gen_tokens / (tot * 1e-3) : 0.0,
                (double)w->kv_bytes / (double)w->B);
        if (w->has_roof)
            fprintf(af.f, "%.4f,%.0f,%.0f,%.3f,%.3f,%.4f,%.4f\n", w->step_ms, w->step_bytes, w->step_flops, w->copy_gbs,
                    w->triad_gbs, w->roof_ms, w->step_vs_roof);
        else
            fprintf(af.f, ",,,,,,\n");
    }
    return atomic_commit(&af, e);
}

// The model on its runtime: a checkpoint (uploaded for cuda), or a preset's
// shape with random weights drawn where they run (7B shapes never touch the host).
static int bench_model(DeviceModel *dm, Model *m, const BenchArgs *a, Error *e) {
    if (a->model_dir) return model_load(m, a->model_dir, e) || device_model_open(dm, a->device, a->dtype, m, e);
    ModelConfig c;
    if (preset_config(&c, a->preset, a->vocab, e)) return -1;
    if (device_model_random(dm, a->device, a->dtype, m, &c, (uint64_t)a->seed, 0.02f, e)) return -1;
    m->allow_long = 1; // random weights of a shape: positions are timed, not meaningful
    return 0;
}

static int bench_run(DeviceModel *dm, BenchArgs *a, const BenchMethod *methods, int n_methods, int n_threads,
                     Error *e) {
    const ModelConfig *c = device_model_config(dm);
    if (!a->k) a->k = c->n_layers / 4 > 0 ? c->n_layers / 4 : 1;
    for (int i = 0; i < n_methods; i++)
        if (methods[i].method == METHOD_EARN && (a->k >= c->n_layers || a->S < 1))
            return err_set(e, "earn needs 1 <= --k < %d layers and --suffix-regs >= 1 (the decision token is the "
                           "last suffix register)", c->n_layers);
    if (a->train)
        return bench_train(dm, a->lens.v, a->lens.n, a->batches.v, a->batches.n, a->reps, (uint64_t)a->seed, a->out,
                           n_threads) ? -2 : 0;
    print_header(dm, n_threads);
    size_t n_rows = (size_t)a->lens.n * a->batches.n * a->beams.n * n_methods * (a->spec.draft ? 2 : 1);
    BenchRow *rows = xcalloc(n_rows, sizeof(BenchRow));
    StreamBufs sb = {0};
    if (dm->device == DEVICE_CPU) stream_init(&sb);
    int rc = bench_rows(rows, dm, a, methods, n_methods, sb.a ? &sb : NULL, e) ||
             (a->out && write_csv(a->out, rows, n_rows, a, n_threads, dm, e));
    stream_free(&sb);
    free(rows);
    return rc ? -1 : 0;
}

// --draft and its flags, before any work (-1 with e naming the flag).
static int bench_draft_check(BenchArgs *a, Error *e) {
    a->spec = (SpecOptions){NULL, SPEC_VERIFY_STRICT, a->gamma ? a->gamma : SPEC_DEFAULT_GAMMA,
                            a->draft_beams ? a->draft_beams : SPEC_DEFAULT_DRAFT_BEAMS, (uint64_t)a->draft_seed};
    if (!a->draft_dir) {
        if (a->verify_s || a->gamma || a->draft_beams || a->draft_seed)
            return err_set(e, "--verify, --gamma, --draft-beams and --draft-seed need --draft DRAFT_DIR");
        return 0;
    }
    if (a->train) return err_set(e, "--draft times beam search; --train times training steps");
    if (a->verify_s) CHECK(spec_verify_parse(&a->spec.verify, a->verify_s) == 0, "--verify passed the choices");
    int vocab = a->vocab, max_beam = 0;
    for (int i = 0; i < a->beams.n; i++) max_beam = a->beams.v[i] > max_beam ? a->beams.v[i] : max_beam;
    if (a->model_dir) {
        char path[4096];
        ModelConfig c;
        if (path_join(path, sizeof path, a->model_dir, "config.json")) return err_set(e, "--model: path too long");
        if (config_load(&c, path, e)) return err_prefix(e, "--model: ");
        vocab = c.vocab_size;
    } else if (a->preset) {
        ModelConfig c;
        if (preset_config(&c, a->preset, a->vocab, e)) return -1;
        vocab = c.vocab_size;
    }
    return spec_flags_check(a->draft_dir, a->model_dir, vocab, a->spec.gamma, a->spec.draft_beams, max_beam,
                            a->device, e);
}

int cmd_bench(int argc, char **argv) {
    static int one = 1, len512 = 512;
    BenchArgs a = {.methods_s = "full", .device_s = "cpu", .dtype = "f32", .vocab = 0, .P = 1, .S = 1, .G = 4, .reps = 3, .seed = 1,
                   .lens = {&len512, 1}, .batches = {&one, 1}, .beams = {&one, 1}};
    CliFlag flags[] = {
        {"--model", CLI_STRING, &a.model_dir, .meta = "DIR", .help = "a checkpoint (or --preset)"},
        {"--preset", CLI_STRING, &a.preset, .meta = PRESET_NAMES, .help = "random weights of a preset shape"},
        {"--vocab", CLI_INT, &a.vocab, .lo = 2, .hi = 1 << 20, .help = "vocabulary size of --preset (default: the preset's)"},
        {"--method", CLI_STRING, &a.methods_s, .meta = "full,earn,POLICY[:k=v,..]",
         .help = "methods compared on the same weights: full, earn, KV and prompt policies (see above)"},
        {"--k", CLI_INT, &a.k, .lo = 1, .hi = 1024, .help = "EARN layer split (default N/4)"},
        {"--prefix-regs", CLI_INT, &a.P, .lo = 0, .hi = 64, .help = "EARN prefix registers"},
        {"--suffix-regs", CLI_INT, &a.S, .lo = 0, .hi = 64, .help = "EARN suffix registers"},
        {"--prompt-len", CLI_INT_LIST, &a.lens, .lo = 1, .hi = 1 << 20, .help = "prompt lengths"},
        {"--batch", CLI_INT_LIST, &a.batches, .lo = 1, .hi = 4096, .help = "prompts per call"},
        {"--beam", CLI_INT_LIST, &a.beams, .lo = 1, .hi = 1024, .help = "beam widths"},
        {"--gen", CLI_INT, &a.G, .lo = 1, .hi = 8, .help = "tokens per generated code"},
        {"--reps", CLI_INT, &a.reps, .lo = 1, .hi = 32, .help = "repetitions (medians are reported)"},
        {"--threads", CLI_INT, &a.threads, .lo = 1, .hi = 1024, .help = "threads (default: EARNEST_THREADS or all cores)"},
        {"--seed", CLI_INT, &a.seed, .lo = 0, .hi = 1 << 30, .help = "seed of the random weights and prompts"},
        {"--train", CLI_FLAG, &a.train, .help = "time training steps instead"},
        {"--out", CLI_STRING, &a.out, .meta = "B.csv", .help = "CSV of the rows (atomic)"},
        {"--device", CLI_STRING, &a.device_s, .choices = DEVICE_CHOICES, .help = "runtime that runs the model"},
        {"--dtype", CLI_STRING, &a.dtype, .choices = DTYPE_CHOICES, .help = "compute dtype (bf16: --device cuda only)"},
        {"--draft", CLI_STRING, &a.draft_dir, .meta = "DRAFT_DIR", .help = "also time speculative beam search with this draft"},
        {"--verify", CLI_STRING, &a.verify_s, .choices = "strict|relaxed", .help = "verification (with --draft; default strict)"},
        {"--gamma", CLI_INT, &a.gamma, .lo = 1, .hi = SPEC_MAX_LEVELS, .help = "levels drafted per round (with --draft; default 3)"},
        {"--draft-beams", CLI_INT, &a.draft_beams, .lo = 1, .hi = 4096, .help = "draft beams (with --draft; default 40)"},
        {"--draft-seed", CLI_INT, &a.draft_seed, .lo = 0, .hi = 1 << 30, .help = "seed of relaxed verification's draws"},
    };
    CliSpec cli = {.verb = "bench", .synopsis = "(--model DIR | --preset " PRESET_NAMES " [--vocab V]) [--method full,earn] "
                   "[--prompt-len 512,4096] [options]", .about = BENCH_ABOUT, .flags = flags, .n_flags = CLI_COUNT(flags)};
    int st = cli_parse(&cli, argc, argv);
    if (st >= 0) return st;
    {
        Error le;
        if (device_select(&a.device, a.device_s, &le) || device_dtype_check(a.device, a.dtype, &le) ||
            (a.train && a.device == DEVICE_CUDA &&
             err_set(&le, "--train times the CPU training step; the GPU runtime is inference only"))) { // before any work
            cli_free(&cli);
            cli_fail("bench", &le);
            return 2;
        }
        if (bench_draft_check(&a, &le)) {
            cli_free(&cli);
            cli_fail("bench", &le);
            return 2;
        }
        if (a.out && output_lock_hold(a.out, &le)) { // one writer per output
            cli_free(&cli);
            return cli_fail("bench", &le);
        }
    }
    BenchMethod *methods = xcalloc(BENCH_MAX_METHODS, sizeof(BenchMethod));
    int n_methods = parse_methods(methods, a.methods_s, a.device, a.draft_dir != NULL);
    if (!!a.model_dir == !!a.preset || n_methods < 0) {
        if (n_methods >= 0) fprintf(stderr, "earnest bench: give exactly one of --model and --preset\n");
        st = 2;
    } else {
        int n_threads = threads_init(a.threads);
        Error e;
        Model m;
        DeviceModel dm;
        memset(&m, 0, sizeof m);
        memset(&dm, 0, sizeof dm);
        Model draft;
        memset(&draft, 0, sizeof draft);
        int rc = bench_model(&dm, &m, &a, &e) || bench_methods_load(methods, n_methods, &e);
        if (!rc && a.draft_dir) {
            rc = model_load(&draft, a.draft_dir, &e);
            a.spec.draft = rc ? NULL : &draft;
            if (!rc) draft.allow_long = m.allow_long;
        }
        if (!rc) rc = bench_run(&dm, &a, methods, n_methods, n_threads, &e);
        device_model_close(&dm);
        if (m.params_memory) model_free(&m);
        if (draft.params_memory) model_free(&draft);
        bench_methods_free(methods, n_methods);
        st = rc == -2 ? 1 : rc ? cli_fail("bench", &e) : 0;
    }
    free(methods);
    cli_free(&cli);
    return st;
}
