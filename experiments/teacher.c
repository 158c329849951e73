// teacher.c: see teacher.h. Generation: per batch of train samples, the
// target's beam search (runtime/beam.h), then ONE training forward of the
// target (runtime/train.h, no backward) over each sample's prompt followed by
// the ground truth's and every beam's code tokens as groups (each group sees
// the prompt and its own earlier tokens, positions continue after the prompt,
// the layer plan from the token kinds): its labelled rows are every node's
// logits.
#include "experiments/teacher.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/model_vocab.h"
#include "datasets/prompt.h"
#include "datasets/samples.h"
#include "runtime/beam.h"
#include "runtime/checkpoint.h"
#include "runtime/model.h"
#include "runtime/plan.h"
#include "runtime/progress.h"
#include "runtime/sha256.h"
#include "runtime/train.h"
#include "runtime/trie.h"

static const char *TEACHER_MAGIC = "earnest-teacher 1\n";

// ---------------------------------------------------------------------------
// Fingerprints

void teacher_data_sha(char hex[65], const Dataset *d) {
    Sha256 s;
    sha256_init(&s);
    int32_t hdr[3] = {d->n_users, d->n_items, d->code_levels};
    sha256_update(&s, hdr, sizeof hdr);
    const DatasetSplit *tr = &d->splits[SPLIT_TRAIN];
    sha256_update(&s, tr->offsets, ((size_t)d->n_users + 1) * sizeof(size_t));
    sha256_update(&s, tr->items, tr->offsets[d->n_users] * sizeof(int));
    sha256_update(&s, d->codes, ((size_t)d->n_items + 1) * (size_t)d->code_levels * sizeof(int));
    sha256_final_hex(&s, hex);
}

void teacher_vocab_sha(char hex[65], const Vocab *v) {
    Sha256 s;
    sha256_init(&s);
    for (int i = 0; i < v->size; i++) sha256_update(&s, v->tokens[i], strlen(v->tokens[i]) + 1);
    sha256_final_hex(&s, hex);
}

// The code tokens of each level (ids, in index order).
static int level_tokens_of(int *sizes, int **toks, const Vocab *v, int L) {
    for (int j = 0; j < L; j++) {
        toks[j] = xmalloc((size_t)(v->codes_per_level[j] + 1) * sizeof(int));
        sizes[j] = 0;
        for (int i = 0; i < v->codes_per_level[j]; i++)
            if (v->code_ids[j][i] >= 0) toks[j][sizes[j]++] = v->code_ids[j][i];
    }
    return 0;
}

// ---------------------------------------------------------------------------
// A growing byte buffer

typedef struct {
    char *p;
    size_t n, cap;
} Buf;

static void buf_put(Buf *b, const void *x, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 4096;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, x, n);
    b->n += n;
}

// ---------------------------------------------------------------------------
// Generation

typedef struct {
    const TeacherOptions *o;
    Dataset d;
    Model m;
    Vocab v;
    Prompter p;
    Trie trie;
    BeamSearch bs;
    SampleSet ss;
    size_t n_samples;           // samples covered (a prefix of ss)
    int users;                  // users covered
    int L;
    int level_size[TEACHER_MAX_LEVELS];
    int *level_tokens[TEACHER_MAX_LEVELS];
    TrainActs acts;
    Buf rec;
    // batch buffers
    int **prompts;
    uint8_t **kinds;
    int *lens;
    BeamHyps *hyps;
    int *tb_tok, *tb_pos, *tb_depth, *tb_lab, *tb_ntok;
    uint8_t *tb_kinds;
    uint8_t **tb_mask;
    int *row_of_tok;
} TGen;

// The train position (0-based) of a train sample's target.
static int sample_pos(const Dataset *d, const Sample *s) {
    int n;
    const int *items = dataset_user_items(d, SPLIT_TRAIN, s->user, &n);
    return (int)(s->targets - items);
}

// Sequence i of the tree batch: prompt, then groups (ground truth, beams) of L-1 tokens.
static size_t tree_seq(TGen *g, int i, size_t at) {
    const int L = g->L, np = g->lens[i], nb = g->hyps[i].n, G = 1 + nb;
    const int n = np + G * (L - 1);
    uint8_t *mask = xcalloc((size_t)n * (size_t)n, 1);
    for (int r = 0; r < np; r++) {
        g->tb_tok[at + r] = g->prompts[i][r];
        g->tb_pos[at + r] = r;
        g->tb_kinds[at + r] = g->kinds[i][r];
        g->tb_lab[at + r] = -1;
        for (int c = 0; c < r; c++) mask[(size_t)r * n + c] = 1;
    }
    for (int gi = 0; gi < G; gi++) { // tokens and labels: tree_paths
        for (int k = 0; k < L - 1; k++) {
            int r = np + gi * (L - 1) + k;
            g->tb_pos[at + r] = np + k;
            g->tb_kinds[at + r] = TOKEN_KIND_TARGET;
            for (int c = 0; c < np; c++) mask[(size_t)r * n + c] = 1;
            for (int c = np + gi * (L - 1); c < r; c++) mask[(size_t)r * n + c] = 1;
        }
    }
    g->tb_mask[i] = mask;
    g->tb_ntok[i] = n;
    return (size_t)n;
}

// Fills the group tokens and labels of sequence i (gt: the ground-truth code).
static void tree_paths(TGen *g, int i, size_t at, const int *gt) {
    const int L = g->L, np = g->lens[i], nb = g->hyps[i].n;
    g->tb_lab[at + np - 1] = gt[0];
    for (int gi = 0; gi <= nb; gi++) {
        const int *path = gi == 0 ? gt : g->hyps[i].tokens + (size_t)(gi - 1) * L;
        for (int k = 0; k < L - 1; k++) {
            size_t r = at + (size_t)np + (size_t)gi * (size_t)(L - 1) + (size_t)k;
            g->tb_tok[r] = path[k];
            g->tb_lab[r] = path[k + 1];
        }
    }
}

// Row (packed token) of path gi's level j in sequence i.
static size_t node_tok(const TGen *g, int i, size_t at, int gi, int j) {
    const int np = g->lens[i];
    return j == 0 ? at + (size_t)np - 1 : at + (size_t)np + (size_t)gi * (size_t)(g->L - 1) + (size_t)(j - 1);
}

// One record: dedupes the nodes of the ground truth and the beams, writes everything.
static void emit_record(TGen *g, int i, size_t at, const Sample *s, const int *gt) {
    const int L = g->L, nb = g->hyps[i].n, V = g->m.config.vocab_size;
    const int n_paths = nb + 1, max_nodes = n_paths * L;
    int *node_of = xmalloc((size_t)max_nodes * sizeof(int)), *nlev = xmalloc((size_t)max_nodes * sizeof(int));
    int *npath = xmalloc((size_t)max_nodes * sizeof(int)), *ntok = xmalloc((size_t)max_nodes * sizeof(int));
    int nn = 0;
    for (int gi = 0; gi < n_paths; gi++) {
        const int *path = gi == 0 ? gt : g->hyps[i].tokens + (size_t)(gi - 1) * L;
        for (int j = 0; j < L; j++) {
            int found = -1;
            for (int q = 0; q < nn && found < 0; q++) {
                if (nlev[q] != j) continue;
                const int *pp = npath[q] == 0 ? gt : g->hyps[i].tokens + (size_t)(npath[q] - 1) * L;
                if (memcmp(pp, path, (size_t)j * sizeof(int)) == 0) found = q;
            }
            if (found < 0) {
                found = nn++;
                nlev[found] = j;
                npath[found] = gi;
                ntok[found] = (int)node_tok(g, i, at, gi, j);
            }
            node_of[gi * L + j] = found;
        }
    }
    int32_t hdr[6] = {s->user, sample_pos(&g->d, s), s->targets[0], nb, nn, 0};
    buf_put(&g->rec, hdr, sizeof hdr);
    buf_put(&g->rec, gt, (size_t)L * sizeof(int));
    buf_put(&g->rec, g->hyps[i].tokens, (size_t)nb * (size_t)L * sizeof(int));
    double *lse = xmalloc((size_t)(nn ? nn : 1) * sizeof(double));
    for (int q = 0; q < nn; q++) lse[q] = beam_row_logz(g->acts.logits + (size_t)g->row_of_tok[ntok[q]] * V, (size_t)V);
    float *steps = xmalloc((size_t)(nb ? nb : 1) * (size_t)L * sizeof(float));
    for (int b = 0; b < nb; b++) {
        float sc = (float)g->hyps[i].scores[b];
        buf_put(&g->rec, &sc, sizeof sc);
    }
    for (int b = 0; b < nb; b++) {
        double sum = 0.0;
        for (int j = 0; j < L; j++) {
            int q = node_of[(b + 1) * L + j];
            const float *row = g->acts.logits + (size_t)g->row_of_tok[ntok[q]] * V;
            steps[b * L + j] = (float)(row[g->hyps[i].tokens[(size_t)b * L + j]] - lse[q]);
            sum += steps[b * L + j];
        }
        CHECK(fabs(sum - g->hyps[i].scores[b]) <= 1e-3 * (1.0 + fabs(g->hyps[i].scores[b])),
              "teacher: user %d beam %d: the tree forward's log-probabilities sum to %.6f, the beam search "
              "scored %.6f", s->user, b, sum, g->hyps[i].scores[b]);
    }
    buf_put(&g->rec, steps, (size_t)nb * (size_t)L * sizeof(float));
    buf_put(&g->rec, node_of, (size_t)L * sizeof(int));
    buf_put(&g->rec, node_of + L, (size_t)nb * (size_t)L * sizeof(int));
    buf_put(&g->rec, nlev, (size_t)nn * sizeof(int));
    for (int q = 0; q < nn; q++) {
        const float *row = g->acts.logits + (size_t)g->row_of_tok[ntok[q]] * V;
        for (int k = 0; k < g->level_size[nlev[q]]; k++) {
            float lp = (float)(row[g->level_tokens[nlev[q]][k]] - lse[q]);
            buf_put(&g->rec, &lp, sizeof lp);
        }
    }
    free(lse);
    free(steps);
    free(node_of);
    free(nlev);
    free(npath);
    free(ntok);
}

// Samples s0 .. s0+nb-1: beam search, tree forward, records.
static int gen_batch(TGen *g, size_t s0, int nb, Error *e) {
    const int L = g->L;
    size_t T = 0;
    for (int i = 0; i < nb; i++) {
        const Sample *s = &g->ss.samples[s0 + (size_t)i];
        int n = prompter_length(&g->p, s->n_history, 0);
        g->prompts[i] = xrealloc(g->prompts[i], (size_t)n * sizeof(int));
        g->kinds[i] = xrealloc(g->kinds[i], (size_t)n);
        g->lens[i] = prompter_build(g->prompts[i], g->kinds[i], &g->p, s->history, s->n_history, 0);
    }
    if (beam_search_run(g->hyps, &g->bs, nb, (const int *const *)g->prompts, (const uint8_t *const *)g->kinds,
                        g->lens, e))
        return -1;
    for (int i = 0; i < nb; i++) T += (size_t)g->lens[i] + (size_t)(1 + g->hyps[i].n) * (size_t)(L - 1);
    g->tb_tok = xrealloc(g->tb_tok, T * sizeof(int));
    g->tb_pos = xrealloc(g->tb_pos, T * sizeof(int));
    g->tb_depth = xrealloc(g->tb_depth, T * sizeof(int));
    g->tb_lab = xrealloc(g->tb_lab, T * sizeof(int));
    g->tb_kinds = xrealloc(g->tb_kinds, T);
    g->row_of_tok = xrealloc(g->row_of_tok, T * sizeof(int));
    size_t at = 0;
    for (int i = 0; i < nb; i++) {
        const Sample *s = &g->ss.samples[s0 + (size_t)i];
        size_t n = tree_seq(g, i, at);
        tree_paths(g, i, at, g->p.item_tokens + (size_t)s->targets[0] * (size_t)L);
        at += n;
    }
    plan_depth_for(g->tb_depth, g->tb_kinds, (int)T, &g->m.config);
    TrainBatch b = {.n_seqs = nb, .n_tok = g->tb_ntok, .tokens = g->tb_tok, .positions = g->tb_pos,
                    .depth = g->tb_depth, .mask = (const uint8_t *const *)g->tb_mask, .labels = g->tb_lab};
    int rc = train_forward(&g->acts, &g->m, &b, e);
    for (int i = 0; i < nb; i++) {
        free(g->tb_mask[i]);
        g->tb_mask[i] = NULL;
    }
    if (rc) return -1;
    for (size_t t = 0; t < T; t++) g->row_of_tok[t] = -1;
    for (int r = 0; r < g->acts.n_labels; r++) g->row_of_tok[g->acts.label_tok[r]] = r;
    at = 0;
    for (int i = 0; i < nb; i++) {
        const Sample *s = &g->ss.samples[s0 + (size_t)i];
        emit_record(g, i, at, s, g->p.item_tokens + (size_t)s->targets[0] * (size_t)L);
        at += (size_t)g->tb_ntok[i];
        beam_hyps_free(&g->hyps[i]);
    }
    return 0;
}

static int gen_setup(TGen *g, Error *e) {
    const TeacherOptions *o = g->o;
    if (dataset_load(&g->d, o->data_dir, e)) return err_prefix(e, "--data: ");
    if (model_load(&g->m, o->model_dir, e)) return err_prefix(e, "--model: ");
    PromptTemplate tmpl;
    if (prompt_template_for_model(&tmpl, o->tmpl, g->m.config.prompt_template, o->model_dir, e)) return -1;
    if (model_vocab_load(&g->v, o->model_dir, &g->d, &g->m.config, e)) return err_prefix(e, "--model: ");
    if (prompter_init_form(&g->p, &g->v, &g->d, tmpl, g->m.config.n_prefix_regs, g->m.config.n_suffix_regs,
                           prompt_form_for_method(g->m.config.method), e))
        return err_prefix(e, "--model %s does not fit --data %s: ", o->model_dir, o->data_dir);
    g->L = g->d.code_levels;
    if (g->L < 2 || g->L > TEACHER_MAX_LEVELS)
        return err_set(e, "%s: %d code levels; the teacher file needs 2..%d", o->data_dir, g->L, TEACHER_MAX_LEVELS);
    level_tokens_of(g->level_size, g->level_tokens, &g->v, g->L);
    trie_build(&g->trie, g->p.item_tokens, g->d.n_items, g->L);
    if (beam_search_init(&g->bs, &g->m, &g->trie, o->beam, e)) return -1;
    samples_build(&g->ss, &g->d, SPLIT_TRAIN, o->max_history);
    // The samples of the first `users` users that have any.
    int users = 0, last = -1;
    size_t n = 0;
    for (; n < g->ss.n; n++) {
        if (g->ss.samples[n].user != last) {
            if (o->users > 0 && users == o->users) break;
            users++;
            last = g->ss.samples[n].user;
        }
    }
    g->n_samples = n;
    g->users = users;
    if (n == 0) return err_set(e, "%s: no train samples (no user has two or more train items)", o->data_dir);
    return 0;
}

static json_t *gen_header(TGen *g, const char *records_sha) {
    const ModelConfig *c = &g->m.config;
    char hex[65], path[4200];
    json_t *h = json_object(), *dj = json_object(), *mj = json_object(), *vj = json_object();
    json_object_set_new(h, "format", json_string("earnest-teacher"));
    json_object_set_new(h, "version", json_integer(1));
    json_object_set_new(dj, "name", json_string(g->d.name));
    json_object_set_new(dj, "users", json_integer(g->d.n_users));
    json_object_set_new(dj, "items", json_integer(g->d.n_items));
    json_object_set_new(dj, "train_interactions", json_integer((json_int_t)dataset_interactions(&g->d, SPLIT_TRAIN)));
    teacher_data_sha(hex, &g->d);
    json_object_set_new(dj, "sha256", json_string(hex));
    json_object_set_new(h, "dataset", dj);
    json_object_set_new(mj, "dir", json_string(g->o->model_dir));
    snprintf(path, sizeof path, "%s/model.safetensors", g->o->model_dir);
    Error e2;
    json_object_set_new(mj, "sha256", json_string(sha256_file_hex(hex, path, &e2) ? "" : hex));
    json_object_set_new(mj, "method", json_string(config_method_name(c->method)));
    json_object_set_new(mj, "layers", json_integer(c->n_layers));
    json_object_set_new(mj, "dim", json_integer(c->dim));
    json_object_set_new(mj, "template", json_string(prompt_template_name(g->p.tmpl)));
    json_object_set_new(mj, "prefix_regs", json_integer(c->n_prefix_regs));
    json_object_set_new(mj, "suffix_regs", json_integer(c->n_suffix_regs));
    json_object_set_new(h, "model", mj);
    json_object_set_new(vj, "size", json_integer(g->v.size));
    teacher_vocab_sha(hex, &g->v);
    json_object_set_new(vj, "sha256", json_string(hex));
    json_object_set_new(h, "vocab", vj);
    json_object_set_new(h, "levels", json_integer(g->L));
    json_t *lt = json_array();
    for (int j = 0; j < g->L; j++) {
        json_t *a = json_array();
        for (int k = 0; k < g->level_size[j]; k++) json_array_append_new(a, json_integer(g->level_tokens[j][k]));
        json_array_append_new(lt, a);
    }
    json_object_set_new(h, "level_tokens", lt);
    json_object_set_new(h, "beam", json_integer(g->o->beam));
    json_object_set_new(h, "max_history", json_integer(g->o->max_history));
    json_object_set_new(h, "users", json_integer(g->users));
    json_object_set_new(h, "samples", json_integer((json_int_t)g->n_samples));
    json_object_set_new(h, "records_bytes", json_integer((json_int_t)g->rec.n));
    json_object_set_new(h, "records_sha256", json_string(records_sha));
    return h;
}

static int gen_write(TGen *g, Error *e) {
    Sha256 s;
    char hex[65];
    sha256_init(&s);
    sha256_update(&s, g->rec.p, g->rec.n);
    sha256_final_hex(&s, hex);
    json_t *h = gen_header(g, hex);
    char *text = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    if (make_parent_dirs(g->o->out, e)) { free(text); return -1; }
    AtomicFile af;
    if (atomic_open(&af, g->o->out, e)) { free(text); return -1; }
    int ok = fputs(TEACHER_MAGIC, af.f) >= 0 && fputs(text, af.f) >= 0 && fputc('\n', af.f) != EOF &&
             fwrite(g->rec.p, 1, g->rec.n, af.f) == g->rec.n;
    free(text);
    if (!ok) {
        atomic_abort(&af);
        return err_set(e, "%s: write failed", g->o->out);
    }
    return atomic_commit(&af, e);
}

static void gen_free(TGen *g) {
    int B = g->o->batch;
    for (int i = 0; i < B && g->prompts; i++) {
        free(g->prompts[i]);
        free(g->kinds[i]);
    }
    free(g->prompts); free(g->kinds); free(g->lens); free(g->hyps);
    free(g->tb_tok); free(g->tb_pos); free(g->tb_depth); free(g->tb_lab); free(g->tb_ntok); free(g->tb_kinds);
    free(g->tb_mask); free(g->row_of_tok); free(g->rec.p);
    for (int j = 0; j < TEACHER_MAX_LEVELS; j++) free(g->level_tokens[j]);
    train_acts_free(&g->acts);
    if (g->bs.model) beam_search_free(&g->bs);
    if (g->trie.n_nodes) trie_free(&g->trie);
    samples_free(&g->ss);
    prompter_free(&g->p);
    vocab_free(&g->v);
    if (g->m.params_memory) model_free(&g->m);
    dataset_free(&g->d);
}

int teacher_generate(const TeacherOptions *o, Error *e) {
    TGen *g = xcalloc(1, sizeof *g);
    g->o = o;
    int rc = -1, B = o->batch;
    if (gen_setup(g, e)) goto done;
    g->prompts = xcalloc((size_t)B, sizeof(int *));
    g->kinds = xcalloc((size_t)B, sizeof(uint8_t *));
    g->lens = xcalloc((size_t)B, sizeof(int));
    g->hyps = xcalloc((size_t)B, sizeof(BeamHyps));
    g->tb_ntok = xcalloc((size_t)B, sizeof(int));
    g->tb_mask = xcalloc((size_t)B, sizeof(uint8_t *));
    Progress pr;
    progress_init(&pr, o->progress);
    double t0 = time_now_s();
    for (size_t s0 = 0; s0 < g->n_samples; s0 += (size_t)B) {
        int nb = g->n_samples - s0 < (size_t)B ? (int)(g->n_samples - s0) : B;
        if (gen_batch(g, s0, nb, e)) goto done;
        char text[96];
        snprintf(text, sizeof text, "%zu / %zu samples, %.1f s", s0 + (size_t)nb, g->n_samples, time_now_s() - t0);
        progress_show(&pr, "teacher", (double)(s0 + (size_t)nb) / (double)g->n_samples, text, 0);
    }
    progress_show(&pr, "teacher", 1.0, "done", 1);
    rc = gen_write(g, e);
    if (rc == 0 && o->progress)
        fprintf(stderr, "earnest teacher: %zu samples of %d users, beam %d, %.1f MB of records -> %s (%.1f s)\n",
                g->n_samples, g->users, o->beam, (double)g->rec.n / 1e6, o->out, time_now_s() - t0);
done:
    gen_free(g);
    free(g);
    return rc;
}
