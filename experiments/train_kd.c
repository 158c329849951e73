// train_kd.c: see train_kd.h.
#include "experiments/train_kd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/ops.h"
#include "runtime/plan.h"

int kd_setup(KDState *k, const char *teacher_path, KDLoss loss, float alpha, float temp, int topk, const Dataset *d,
             const Vocab *v, Error *e) {
    memset(k, 0, sizeof *k);
    if (!(alpha >= 0 && alpha <= 1)) return err_set(e, "--kd-alpha %g: must be in [0, 1]", (double)alpha);
    if (!(temp > 0)) return err_set(e, "--kd-temp %g: must be > 0", (double)temp);
    if (teacher_load(&k->t, teacher_path, e)) return -1;
    if (teacher_check_fits(&k->t, d, v, e)) {
        teacher_free(&k->t);
        return -1;
    }
    k->active = 1;
    k->loss = loss;
    k->alpha = alpha;
    k->temp = temp;
    k->topk = topk > 0 ? topk : k->t.beam;
    return 0;
}

void kd_free(KDState *k) {
    if (k->active) teacher_free(&k->t);
    for (size_t i = 0; i < k->cap_seqs; i++) free(k->mask[i]);
    free(k->mask); free(k->cap_mask); free(k->tok); free(k->pos); free(k->depth); free(k->lab); free(k->ntok);
    free(k->kinds); free(k->items); free(k->row_of_tok); free(k->dl); free(k->tmp);
    memset(k, 0, sizeof *k);
}

// Beam tokens appended for target (user, pos): records' beams x (L - 1), 0 off the beams.
static int extra_tokens(const KDState *k, const TeacherRecord *r, int L) {
    return kd_loss_on_beams(k->loss) == 1 ? r->n_beams * (L - 1) : 0;
}

int kd_filter_plan(PackPlan *pp, const KDState *k, const Dataset *d, const Prompter *p, Error *e) {
    size_t kept = 0;
    int mh = pp->max_history;
    pp->n_targets = pp->tokens_packed = pp->tokens_unpacked = 0;
    for (size_t i = 0; i < pp->n_packs; i++) {
        Pack pk = pp->packs[i];
        int ok = 1;
        for (int t = pk.first; t <= pk.last && ok; t++) ok = teacher_find(&k->t, d, pk.user, t) != NULL;
        if (!ok) continue;
        pp->packs[kept++] = pk; // n_tokens: the pack alone, so every loss gets the same batches
        pp->tokens_packed += (size_t)pk.n_tokens;
        pp->n_targets += (size_t)(pk.last - pk.first + 1);
        for (int t = pk.first; t <= pk.last; t++)
            pp->tokens_unpacked += (size_t)prompter_length(p, mh > 0 && t > mh ? mh : t, 1);
    }
    pp->n_packs = kept;
    if (kept == 0)
        return err_set(e, "%s: covers no pack of this training (no user whose train targets all have a record)",
                       k->t.path);
    return 0;
}

// ---------------------------------------------------------------------------
// Batches

static void reserve(KDState *k, size_t n_seqs, size_t T) {
    if (n_seqs > k->cap_seqs) {
        k->mask = xrealloc(k->mask, n_seqs * sizeof(uint8_t *));
        k->cap_mask = xrealloc(k->cap_mask, n_seqs * sizeof(size_t));
        for (size_t i = k->cap_seqs; i < n_seqs; i++) { k->mask[i] = NULL; k->cap_mask[i] = 0; }
        k->ntok = xrealloc(k->ntok, n_seqs * sizeof(int));
        k->cap_seqs = n_seqs;
    }
    if (T > k->cap_T) {
        k->tok = xrealloc(k->tok, T * sizeof(int));
        k->pos = xrealloc(k->pos, T * sizeof(int));
        k->depth = xrealloc(k->depth, T * sizeof(int));
        k->lab = xrealloc(k->lab, T * sizeof(int));
        k->kinds = xrealloc(k->kinds, T);
        k->row_of_tok = xrealloc(k->row_of_tok, T * sizeof(int));
        k->cap_T = T;
    }
}

static void add_item(KDState *k, int tok, int rec, int beam, int level) {
    if (k->n_items == k->cap_items) {
        k->cap_items = k->cap_items ? 2 * k->cap_items : 1024;
        k->items = xrealloc(k->items, k->cap_items * sizeof(KDItem));
    }
    k->items[k->n_items++] = (KDItem){tok, rec, beam, level};
}

// Sequence j: the pack's tokens, then its targets' beam groups; items for every row.
static size_t seq_build(KDState *k, int j, size_t at, const PackedSeq *s, const Pack *pk, const Dataset *d) {
    const int L = d->code_levels, n = s->n;
    int extra = 0;
    const TeacherRecord **rec = xmalloc((size_t)(s->n_targets ? s->n_targets : 1) * sizeof *rec);
    for (int t = 0; t < s->n_targets; t++) {
        rec[t] = teacher_find(&k->t, d, pk->user, pk->first + t);
        CHECK(rec[t] && rec[t]->item == s->targets[t], "kd batch: pack target %d has no record", t);
        extra += extra_tokens(k, rec[t], L);
    }
    const size_t N = (size_t)n + (size_t)extra;
    if (N * N > k->cap_mask[j]) {
        free(k->mask[j]);
        k->mask[j] = xmalloc(N * N);
        k->cap_mask[j] = N * N;
    }
    uint8_t *M = k->mask[j];
    memset(M, 0, N * N);
    for (int r = 0; r < n; r++)
        for (int c = 0; c < r; c++) M[(size_t)r * N + c] = s->mask ? s->mask[(size_t)r * n + c] : 1;
    memcpy(k->tok + at, s->tokens, (size_t)n * sizeof(int));
    memcpy(k->pos + at, s->positions, (size_t)n * sizeof(int));
    memcpy(k->lab + at, s->labels, (size_t)n * sizeof(int));
    memcpy(k->kinds + at, s->kinds, (size_t)n);
    size_t g = (size_t)n; // next appended token (within the sequence)
    for (int t = 0; t < s->n_targets; t++) {
        int rid = (int)(rec[t] - k->t.rec);
        const int *la = s->label_at + (size_t)t * L;
        for (int l = 0; l < L; l++) add_item(k, (int)at + la[l], rid, -1, l);
        if (!extra_tokens(k, rec[t], L)) continue;
        int c0 = la[1]; // the target's first code token: what it sees before itself, each beam token sees
        for (int b = 0; b < rec[t]->n_beams; b++) {
            const int *beam = rec[t]->beam + (size_t)b * L;
            add_item(k, (int)at + la[0], rid, b, 0);
            for (int q = 0; q < L - 1; q++, g++) {
                k->tok[at + g] = beam[q];
                k->lab[at + g] = beam[q + 1];
                k->pos[at + g] = s->positions[la[q + 1]];
                k->kinds[at + g] = TOKEN_KIND_TARGET;
                for (int c = 0; c < c0; c++) M[g * N + (size_t)c] = s->mask ? s->mask[(size_t)c0 * n + c] : 1;
                for (size_t c = g - (size_t)q; c < g; c++) M[g * N + c] = 1;
                add_item(k, (int)(at + g), rid, b, q + 1);
            }
        }
    }
    k->ntok[j] = (int)N;
    free(rec);
    return N;
}

void kd_batch_build(TrainBatch *b, KDState *k, const PackedSeq *seqs, const Pack *const *packs, int n,
                    const Dataset *d, const ModelConfig *c) {
    size_t T = 0;
    for (int j = 0; j < n; j++) {
        T += (size_t)seqs[j].n;
        for (int t = 0; t < seqs[j].n_targets; t++) {
            const TeacherRecord *r = teacher_find(&k->t, d, packs[j]->user, packs[j]->first + t);
            T += r ? (size_t)extra_tokens(k, r, d->code_levels) : 0;
        }
    }
    reserve(k, (size_t)n, T);
    k->n_items = 0;
    size_t at = 0;
    for (int j = 0; j < n; j++) at += seq_build(k, j, at, &seqs[j], packs[j], d);
    CHECK(at == T, "kd batch: %zu tokens built, %zu planned", at, T);
    plan_depth_for(k->depth, k->kinds, (int)T, c);
    *b = (TrainBatch){.n_seqs = n, .n_tok = k->ntok, .tokens = k->tok, .positions = k->pos, .depth = k->depth,
                      .mask = (const uint8_t *const *)k->mask, .labels = k->lab};
}

// ---------------------------------------------------------------------------
// The loss

// Cross-entropy of one row against token y: adds w * gradient into dl; returns the loss.
static double ce_row(float *dl, float *tmp, const float *z, int y, float w, size_t V) {
    float loss;
    crossentropy_forward(&loss, z, &y, 1, V);
    crossentropy_backward(tmp, z, &y, w, 1, V);
    for (size_t v = 0; v < V; v++) dl[v] += tmp[v];
    return loss;
}

// The KD term of item it (on row z): adds w * gradient into dl; returns the loss.
static double kd_item(KDState *k, float *dl, const KDItem *it, const float *z, float w, size_t V) {
    const TeacherRecord *r = &k->t.rec[it->rec];
    const int L = k->t.levels, lv = it->level;
    const int *S = k->t.level_tokens[lv];
    const size_t n = (size_t)k->t.level_size[lv];
    if (k->loss == KD_SEQKD) return ce_row(dl, k->tmp, z, r->beam[(size_t)it->beam * L + lv], w, V);
    int node = it->beam < 0 ? r->gt_node[lv] : r->beam_node[(size_t)it->beam * L + lv];
    const float *tlp = r->node_lp[node];
    switch (k->loss) {
    case KD_WORDKD: kd_wordkd_backward(dl, z, S, tlp, n, V, w); return kd_wordkd_forward(z, S, tlp, n, V);
    case KD_TVDKD: kd_tvdkd_backward(dl, z, S, tlp, n, V, w); return kd_tvdkd_forward(z, S, tlp, n, V);
    case KD_ATSPEED_S:
        kd_atspeed_s_backward(dl, z, S, tlp, n, k->topk, k->temp, w);
        return kd_atspeed_s_forward(z, S, tlp, n, k->topk, k->temp);
    case KD_ATSPEED_R:
        kd_atspeed_r_backward(dl, z, S, tlp, n, k->temp, w);
        return kd_atspeed_r_forward(z, S, tlp, n, k->temp);
    default: DIE("kd_item: loss %d has no KD term", (int)k->loss);
    }
}

double kd_loss_apply(KDState *k, TrainActs *a, const Model *m) {
    const size_t V = (size_t)m->config.vocab_size, R = (size_t)a->n_labels;
    if (R * V > k->cap_dl) {
        free(k->dl);
        k->dl = xmalloc(R * V * sizeof(float));
        k->cap_dl = R * V;
    }
    k->tmp = xrealloc(k->tmp, V * sizeof(float));
    memset(k->dl, 0, R * V * sizeof(float));
    for (size_t t = 0; t < a->T; t++) k->row_of_tok[t] = -1;
    for (size_t r = 0; r < R; r++) k->row_of_tok[a->label_tok[r]] = (int)r;
    int on_beams = kd_loss_on_beams(k->loss);
    k->n_gt = k->n_kd = 0;
    for (size_t i = 0; i < k->n_items; i++) {
        k->n_gt += k->items[i].beam < 0;
        k->n_kd += on_beams == 1 ? k->items[i].beam >= 0 : on_beams == 0 ? k->items[i].beam < 0 : 0;
    }
    float alpha = k->loss == KD_SFT ? 0.0f : k->alpha;
    float w_ce = k->n_gt ? (1.0f - alpha) / (float)k->n_gt : 0.0f, w_kd = k->n_kd ? alpha / (float)k->n_kd : 0.0f;
    double ce = 0.0, kd = 0.0;
    for (size_t i = 0; i < k->n_items; i++) {
        const KDItem *it = &k->items[i];
        int row = k->row_of_tok[it->tok];
        CHECK(row >= 0, "kd loss: item %zu's token %d has no logits row", i, it->tok);
        const float *z = a->logits + (size_t)row * V;
        float *dl = k->dl + (size_t)row * V;
        const TeacherRecord *r = &k->t.rec[it->rec];
        if (it->beam < 0) ce += ce_row(dl, k->tmp, z, r->gt[it->level], w_ce, V);
        if ((on_beams == 1 && it->beam >= 0) || (on_beams == 0 && it->beam < 0)) kd += kd_item(k, dl, it, z, w_kd, V);
    }
    k->ce = k->n_gt ? ce / k->n_gt : 0.0;
    k->kd = k->n_kd ? kd / k->n_kd : 0.0;
    k->total = (1.0 - alpha) * k->ce + alpha * k->kd;
    memcpy(a->logits, k->dl, R * V * sizeof(float));
    return k->total;
}
