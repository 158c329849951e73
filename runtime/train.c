// train.c: see train.h. The training forward runs the layer body model_forward
// runs (block.h: same ops, same order of operations; only attention differs,
// over whole sequences instead of against a KV cache), with the same row
// dropping under the layer plan, and keeps what the backward needs; the
// backward walks the layers in reverse.
//
// Rows: at layer l the activation matrices hold one row per token still
// computed there (depth > l), in packed order; a token whose depth is reached
// is dropped from the next layer (stable compaction), exactly as model.c does.
// Going backward, the gradient of the rows kept by layer l+1 is spread back
// to layer l's rows; dropped rows get 0 (nothing above used their output).
#include "runtime/train.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/adamw.h"
#include "runtime/block.h"
#include "runtime/ops.h"

// ---------------------------------------------------------------------------
// Gradients

void grads_alloc(ModelGrads *g, const ModelConfig *c) {
    memset(g, 0, sizeof *g);
    g->n = model_param_count(c);
    g->memory = xcalloc(g->n, sizeof(float));
    float *at = g->memory;
    for (int t = 0; t < MODEL_N_PARAM_TENSORS; t++) {
        ParamTensorInfo info;
        model_param_info(c, t, &info);
        *model_param_slot(&g->g, t) = info.numel ? at : NULL;
        at += info.numel;
    }
    if (c->tie_embeddings) g->g.lm_head = g->g.embed;
}

void grads_zero(ModelGrads *g) { memset(g->memory, 0, g->n * sizeof(float)); }

void grads_keep_lora_and_rows(ModelGrads *g, const ModelConfig *c, const int *rows, int n) {
    const size_t D = (size_t)c->dim;
    float *keep = xmalloc((size_t)(n > 0 ? n : 1) * D * sizeof(float));
    for (int i = 0; i < n; i++) {
        CHECK(rows[i] >= 0 && rows[i] < c->vocab_size, "grads_keep_lora_and_rows: token %d", rows[i]);
        memcpy(keep + (size_t)i * D, g->g.embed + (size_t)rows[i] * D, D * sizeof(float));
    }
    for (int t = 0; t < MODEL_FIRST_LORA_TENSOR; t++) { // every base tensor, embed and lm_head included
        ParamTensorInfo info;
        model_param_info(c, t, &info);
        if (info.numel) memset(*model_param_slot(&g->g, t), 0, info.numel * sizeof(float));
    }
    for (int i = 0; i < n; i++) memcpy(g->g.embed + (size_t)rows[i] * D, keep + (size_t)i * D, D * sizeof(float));
    free(keep);
}

void grads_free(ModelGrads *g) {
    free(g->memory);
    memset(g, 0, sizeof *g);
}

// ---------------------------------------------------------------------------
// Activation memory: one allocation carved into named buffers. A first pass
// with base == NULL only measures; the second hands out pointers.

typedef struct {
    char *base;
    size_t off; // bytes
} Carver;

static void *carve(Carver *cv, size_t bytes) {
    size_t at = cv->off;
    cv->off += (bytes + 63) & ~(size_t)63; // 64-byte aligned buffers
    return cv->base ? cv->base + at : NULL;
}
#define CARVE_F(cv, n) ((float *)carve((cv), (n) * sizeof(float)))
#define CARVE_I(cv, n) ((int *)carve((cv), (n) * sizeof(int)))

// Tokens of sequence b (packed from `first`) computed in layer l.
static size_t seq_rows_at(const TrainBatch *b, size_t first, int n, int l, int L) {
    size_t r = 0;
    for (int i = 0; i < n; i++) r += (b->depth ? b->depth[first + (size_t)i] : L) > l;
    return r;
}

// Lays out every buffer for batch b (rows per layer from the plan).
static void acts_layout(TrainActs *a, Carver *cv, const ModelConfig *c, const TrainBatch *b) {
    const int L = c->n_layers, S = b->n_seqs;
    const size_t D = (size_t)c->dim, F = (size_t)c->hidden_dim, E = (size_t)c->head_dim;
    const size_t H = (size_t)c->n_heads, QD = H * E, KD = (size_t)c->n_kv_heads * E, V = (size_t)c->vocab_size;
    const size_t T = a->T, NL = (size_t)a->n_labels, R = b->lora ? (size_t)c->lora_rank : 0;
    for (int l = 0; l < L; l++) {
        LayerActs *la = &a->layer[l];
        size_t rows = 0, probs = 0, first = 0;
        for (int s = 0; s < S; s++) {
            size_t n = seq_rows_at(b, first, b->n_tok[s], l, L);
            rows += n;
            probs += H * n * n;
            first += (size_t)b->n_tok[s];
        }
        la->rows = rows;
        la->row_tok = CARVE_I(cv, rows);
        la->row_pos = CARVE_I(cv, rows);
        la->row_local = CARVE_I(cv, rows);
        la->row_start = CARVE_I(cv, (size_t)S + 1);
        la->probs_off = carve(cv, (size_t)S * sizeof(size_t));
        la->x_in = CARVE_F(cv, rows * D);
        la->xn1 = CARVE_F(cv, rows * D);
        la->q = CARVE_F(cv, rows * QD);
        la->k = CARVE_F(cv, rows * KD);
        la->v = CARVE_F(cv, rows * KD);
        la->probs = CARVE_F(cv, probs);
        la->att = CARVE_F(cv, rows * QD);
        la->x_mid = CARVE_F(cv, rows * D);
        la->xn2 = CARVE_F(cv, rows * D);
        la->gate = CARVE_F(cv, rows * F);
        la->up = CARVE_F(cv, rows * F);
        la->h = CARVE_F(cv, rows * F);
        la->row_lora = carve(cv, rows);
        la->lora_u = CARVE_F(cv, 4 * rows * R);
    }
    a->x_top = CARVE_F(cv, a->layer[L - 1].rows * D);
    a->label_row = CARVE_I(cv, NL);
    a->label_tok = CARVE_I(cv, NL);
    a->label_id = CARVE_I(cv, NL);
    a->xl = CARVE_F(cv, NL * D);
    a->xnl = CARVE_F(cv, NL * D);
    a->logits = CARVE_F(cv, NL * V);
    a->losses = CARVE_F(cv, NL);
    a->xw = CARVE_F(cv, T * D);
    // Layer 0 computes every token, so T rows bound every layer's work space.
    a->dres = CARVE_F(cv, T * D);
    a->dxn = CARVE_F(cv, T * D);
    a->dq = CARVE_F(cv, T * QD);
    a->dk = CARVE_F(cv, T * KD);
    a->dv = CARVE_F(cv, T * KD);
    a->datt = CARVE_F(cv, T * QD);
    a->dgate = CARVE_F(cv, T * F);
    a->dup = CARVE_F(cv, T * F);
    a->dh = CARVE_F(cv, T * F);
    a->dxl = CARVE_F(cv, NL * D);
    a->dxnl = CARVE_F(cv, NL * D);
    a->dlora_u = CARVE_F(cv, T * R);
    a->attn_scratch = CARVE_F(cv, (size_t)a->n_threads * ATTN_BLOCK * a->max_n);
}

static int train_check(const Model *m, const TrainBatch *b, Error *e) {
    const ModelConfig *c = &m->config;
    if (b->n_seqs <= 0) return err_set(e, "train: empty batch");
    if (!b->tokens || !b->n_tok || !b->labels) return err_set(e, "train: batch lacks tokens, lengths or labels");
    if (b->lora && c->lora_rank < 1)
        return err_set(e, "train: LoRA rows were asked for, but the model has no LoRA adapters");
    size_t at = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        if (b->n_tok[s] <= 0) return err_set(e, "train: sequence %d has no tokens", s);
        for (int i = 0; i < b->n_tok[s]; i++, at++) {
            int t = b->tokens[at], d = b->depth ? b->depth[at] : c->n_layers, y = b->labels[at];
            if (t < 0 || t >= c->vocab_size)
                return err_set(e, "train: sequence %d token %d: id %d outside the vocabulary [0, %d)", s, i, t,
                               c->vocab_size);
            if (d < 1 || d > c->n_layers)
                return err_set(e, "train: sequence %d token %d: depth %d outside 1..%d", s, i, d, c->n_layers);
            int pos = b->positions ? b->positions[at] : i;
            if (pos < 0) return err_set(e, "train: sequence %d token %d: negative position %d", s, i, pos);
            if (c->max_seq_len > 0 && pos >= c->max_seq_len && !m->allow_long)
                return err_set(e, "train: sequence %d token %d: position %d is beyond the model's "
                               "max_position_embeddings %d", s, i, pos, c->max_seq_len);
            if (y < -1 || y >= c->vocab_size)
                return err_set(e, "train: sequence %d token %d: label %d outside the vocabulary [0, %d) (or -1)", s,
                               i, y, c->vocab_size);
            if (y >= 0 && d != c->n_layers)
                return err_set(e, "train: sequence %d token %d carries a label but stops at depth %d < %d, "
                               "so it has no logits", s, i, d, c->n_layers);
        }
    }
    return 0;
}

// ---------------------------------------------------------------------------
// Forward

// Sizes everything for batch b, (re)allocates, and fills the row bookkeeping
// of every layer: the tokens with depth > l, in packed order.
static void acts_prepare(TrainActs *a, const ModelConfig *c, const TrainBatch *b) {
    const int L = c->n_layers, S = b->n_seqs, H = c->n_heads;
    if (!a->layer_memory || a->n_layers != L) {
        free(a->layer_memory);
        a->layer_memory = xcalloc((size_t)L, sizeof(LayerActs));
    }
    a->layer = a->layer_memory;
    a->batch = *b;
    a->n_layers = L;
    a->n_seqs = S;
    a->n_threads = omp_get_max_threads();
    a->T = 0;
    a->max_n = 0;
    for (int s = 0; s < S; s++) {
        a->T += (size_t)b->n_tok[s];
        a->max_n = (size_t)b->n_tok[s] > a->max_n ? (size_t)b->n_tok[s] : a->max_n;
    }
    a->n_labels = 0;
    for (size_t t = 0; t < a->T; t++) a->n_labels += b->labels[t] >= 0;
    Carver cv = {NULL, 0};
    acts_layout(a, &cv, c, b);
    if (a->capacity < cv.off) {
        free(a->memory);
        a->memory = xmalloc(cv.off);
        a->capacity = cv.off;
    }
    cv = (Carver){a->memory, 0};
    acts_layout(a, &cv, c, b);

    for (int l = 0; l < L; l++) {
        LayerActs *la = &a->layer[l];
        size_t r = 0, t = 0, probs = 0;
        for (int s = 0; s < S; s++) {
            la->row_start[s] = (int)r;
            la->probs_off[s] = probs;
            size_t r_seq = r;
            for (int i = 0; i < b->n_tok[s]; i++, t++) {
                if ((b->depth ? b->depth[t] : L) <= l) continue;
                la->row_tok[r] = (int)t;
                la->row_pos[r] = b->positions ? b->positions[t] : i;
                la->row_local[r] = i;
                la->row_lora[r] = b->lora ? b->lora[t] : 0;
                r++;
            }
            size_t n = r - r_seq;
            probs += (size_t)H * n * n;
        }
        la->row_start[S] = (int)r;
    }
}

// Attention of layer l per (sequence, head), in parallel: each task writes its
// own columns of att and its own probabilities. Adds the FLOPs (as computed).
static void layer_attention(double *flops, LayerActs *la, const ModelConfig *c, const TrainBatch *b) {
    const int S = b->n_seqs, H = c->n_heads, G = c->n_kv_heads;
    const size_t E = (size_t)c->head_dim, QD = (size_t)H * E, KD = (size_t)G * E;
    const int n_tasks = S * H;
    #pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < n_tasks; task++) {
        int s = task / H, h = task % H, g = h / (H / G);
        size_t r0 = (size_t)la->row_start[s], n = (size_t)la->row_start[s + 1] - r0;
        if (n == 0) continue;
        const uint8_t *mask = b->mask ? b->mask[s] : NULL;
        attention_forward(la->att + r0 * QD + (size_t)h * E, la->probs + la->probs_off[s] + (size_t)h * n * n,
                          la->q + r0 * QD + (size_t)h * E, la->k + r0 * KD + (size_t)g * E,
                          la->v + r0 * KD + (size_t)g * E, mask, la->row_local + r0, (size_t)b->n_tok[s], n, E,
                          QD, KD);
    }
    for (int s = 0; s < S; s++) {
        size_t n = (size_t)(la->row_start[s + 1] - la->row_start[s]);
        for (size_t i0 = 0; i0 < n; i0 += ATTN_BLOCK) { // blocks of queries against keys 0..i1-1
            size_t i1 = i0 + ATTN_BLOCK < n ? i0 + ATTN_BLOCK : n;
            *flops += flops_attn_block(c, i1 - i0, i1);
        }
    }
}

// Layer l: its input rows (the previous layer's output rows whose token goes
// on, or the embeddings), the block (block.h) with every activation kept; the
// layer's output goes to a->xw. Adds the FLOPs.
static void layer_forward(double *flops, TrainActs *a, const Model *m, const TrainBatch *b, int l) {
    const ModelConfig *c = &m->config;
    const size_t D = (size_t)c->dim;
    LayerActs *la = &a->layer[l];
    const size_t rows = la->rows;
    if (l > 0) {
        const LayerActs *prev = &a->layer[l - 1];
        size_t r = 0;
        for (size_t p = 0; p < prev->rows && r < rows; p++)
            if (prev->row_tok[p] == la->row_tok[r]) memcpy(la->x_in + r++ * D, a->xw + p * D, D * sizeof(float));
    }
    if (rows == 0) return;
    const uint8_t *lora_on = b->lora ? la->row_lora : NULL; // compress500x: LoRA on flagged rows
    block_qkv_forward(la->xn1, la->q, la->k, la->v, la->lora_u, m, l, la->x_in, la->row_pos, lora_on, rows);
    *flops += flops_qkv(c, rows);
    layer_attention(flops, la, c, b);
    const size_t R = b->lora ? (size_t)c->lora_rank : 0; // la->lora_u is [4, rows, R]
    block_attn_residual(la->x_mid, la->lora_u + 3 * rows * R, m, l, la->x_in, la->att, lora_on, rows);
    if (lora_on) *flops += flops_lora(c, rows);
    block_mlp_forward(a->xw, la->xn2, la->gate, la->up, la->h, m, l, la->x_mid, rows);
    *flops += flops_out_mlp(c, rows);
}

// The rows leaving the last layer that carry a label: final norm, output
// head, cross-entropy, the loss sums. Adds the FLOPs.
static void loss_forward(double *flops, TrainActs *a, const Model *m, const TrainBatch *b) {
    const ModelConfig *c = &m->config;
    const ModelParams *w = &m->params;
    const size_t D = (size_t)c->dim, V = (size_t)c->vocab_size;
    // Every row of the last layer has depth N: all of them leave the stack.
    const LayerActs *top = &a->layer[c->n_layers - 1];
    memcpy(a->x_top, a->xw, top->rows * D * sizeof(float));
    size_t nl = 0;
    for (size_t r = 0; r < top->rows; r++) {
        int t = top->row_tok[r];
        if (b->labels[t] < 0) continue;
        a->label_row[nl] = (int)r;
        a->label_tok[nl] = t;
        a->label_id[nl] = b->labels[t];
        memcpy(a->xl + nl * D, a->x_top + r * D, D * sizeof(float));
        nl++;
    }
    CHECK(nl == (size_t)a->n_labels, "train_forward: %zu labelled rows, expected %d", nl, a->n_labels);
    rmsnorm_forward(a->xnl, a->xl, w->final_norm, nl, D, c->rms_eps);
    matmul_forward(a->logits, a->xnl, w->lm_head, NULL, nl, D, V, 0.0f);
    *flops += flops_head(c, nl);
    crossentropy_forward(a->losses, a->logits, a->label_id, nl, V);
    double sum = 0.0;
    for (size_t i = 0; i < nl; i++) sum += a->losses[i]; // in order: deterministic
    a->loss_sum = sum;
    a->loss_mean = nl ? sum / (double)nl : 0.0;
}

int train_forward(TrainActs *a, const Model *m, const TrainBatch *b, Error *e) {
    if (train_check(m, b, e)) return -1;
    acts_prepare(a, &m->config, b);
    double flops = 0.0;
    embedding_forward(a->layer[0].x_in, b->tokens, m->params.embed, a->T, (size_t)m->config.dim); // layer 0: every token
    for (int l = 0; l < m->config.n_layers; l++) layer_forward(&flops, a, m, b, l);
    loss_forward(&flops, a, m, b);
    a->fwd_flops = flops;
    return 0;
}

// ---------------------------------------------------------------------------
// Backward

// Spreads the gradient of layer `up`'s input rows (in dres, rows of `up`)
// to the rows of layer `lo`'s output, in place: last row first, since a row
// never moves to a lower index; rows `up` dropped get zeros.
static void spread_rows(float *dres, const LayerActs *lo, const LayerActs *up, size_t D) {
    size_t r = up->rows;
    for (size_t p = lo->rows; p-- > 0;) {
        if (r > 0 && up->row_tok[r - 1] == lo->row_tok[p]) {
            r--;
            if (r != p) memmove(dres + p * D, dres + r * D, D * sizeof(float));
        } else {
            memset(dres + p * D, 0, D * sizeof(float));
        }
    }
}

// compress500x: the LoRA term of o_proj (datt += its input gradient; its A, B gradients).
static void lora_backward_o(TrainActs *a, const LayerActs *la, const Model *m, ModelParams *g, int l) {
    const ModelConfig *c = &m->config;
    const ModelParams *w = &m->params;
    const size_t D = (size_t)c->dim, QD = (size_t)c->n_heads * (size_t)c->head_dim, R = (size_t)c->lora_rank;
    const size_t rows = la->rows;
    lora_backward(a->datt, g->lora_oa + (size_t)l * R * QD, g->lora_ob + (size_t)l * D * R, a->dlora_u, a->dres,
                  la->att, la->lora_u + 3 * rows * R, w->lora_oa + (size_t)l * R * QD, w->lora_ob + (size_t)l * D * R,
                  la->row_lora, model_lora_scale(c), rows, QD, R, D);
}

// compress500x: the LoRA terms of q, k and v (dq, dk after RoPE's backward; into dxn).
static void lora_backward_qkv(TrainActs *a, const LayerActs *la, const Model *m, ModelParams *g, int l) {
    const ModelConfig *c = &m->config;
    const ModelParams *w = &m->params;
    const size_t D = (size_t)c->dim, E = (size_t)c->head_dim, R = (size_t)c->lora_rank, rows = la->rows;
    const size_t QD = (size_t)c->n_heads * E, KD = (size_t)c->n_kv_heads * E;
    const float s = model_lora_scale(c);
    const size_t RD = (size_t)l * R * D;
    lora_backward(a->dxn, g->lora_qa + RD, g->lora_qb + (size_t)l * QD * R, a->dlora_u, a->dq, la->xn1, la->lora_u,
                  w->lora_qa + RD, w->lora_qb + (size_t)l * QD * R, la->row_lora, s, rows, D, R, QD);
    lora_backward(a->dxn, g->lora_ka + RD, g->lora_kb + (size_t)l * KD * R, a->dlora_u, a->dk, la->xn1,
                  la->lora_u + rows * R, w->lora_ka + RD, w->lora_kb + (size_t)l * KD * R, la->row_lora, s, rows, D,
                  R, KD);
    lora_backward(a->dxn, g->lora_va + RD, g->lora_vb + (size_t)l * KD * R, a->dlora_u, a->dv, la->xn1,
                  la->lora_u + 2 * rows * R, w->lora_va + RD, w->lora_vb + (size_t)l * KD * R, la->row_lora, s, rows,
                  D, R, KD);
}

void train_backward(ModelGrads *gr, TrainActs *a, const Model *m, float loss_scale) {
    crossentropy_backward(a->logits, a->logits, a->label_id, loss_scale, (size_t)a->n_labels,
                          (size_t)m->config.vocab_size); // dlogits in place
    train_backward_dlogits(gr, a, m);
}

void train_backward_dlogits(ModelGrads *gr, TrainActs *a, const Model *m) {
    const ModelConfig *c = &m->config;
    const ModelParams *w = &m->params;
    ModelParams *g = &gr->g;
    const TrainBatch *b = &a->batch;
    const int L = c->n_layers, S = a->n_seqs, H = c->n_heads, G = c->n_kv_heads;
    const size_t D = (size_t)c->dim, F = (size_t)c->hidden_dim, E = (size_t)c->head_dim, V = (size_t)c->vocab_size;
    const size_t QD = (size_t)H * E, KD = (size_t)G * E, NL = (size_t)a->n_labels;
    const float eps = c->rms_eps;
    double flops = 0.0;
    CHECK(omp_get_max_threads() <= a->n_threads,
          "train_backward: %d threads, but the forward sized attention scratch for %d", omp_get_max_threads(),
          a->n_threads);

    // dlogits (a->logits) -> output head -> final norm, on the labelled rows.
    memset(a->dxnl, 0, NL * D * sizeof(float));
    matmul_backward(a->dxnl, g->lm_head, NULL, a->logits, a->xnl, w->lm_head, NL, D, V); // tied: adds into embed
    flops += 4.0 * (double)NL * (double)D * (double)V;
    memset(a->dxl, 0, NL * D * sizeof(float));
    rmsnorm_backward(a->dxl, g->final_norm, a->dxnl, a->xl, w->final_norm, NL, D, eps);
    const LayerActs *top = &a->layer[L - 1];
    memset(a->dres, 0, top->rows * D * sizeof(float));
    for (size_t i = 0; i < NL; i++)
        memcpy(a->dres + (size_t)a->label_row[i] * D, a->dxl + i * D, D * sizeof(float));

    // dres holds the gradient of the residual stream rows of the current layer.
    for (int l = L - 1; l >= 0; l--) {
        LayerActs *la = &a->layer[l];
        const size_t rows = la->rows, lD = (size_t)l * D;
        if (l < L - 1) spread_rows(a->dres, la, &a->layer[l + 1], D);
        if (rows == 0) continue;

        // MLP block: x_out = x_mid + down(silu(gate(xn2)) * up(xn2)).
        memset(a->dh, 0, rows * F * sizeof(float));
        matmul_backward(a->dh, g->w_down + (size_t)l * D * F, NULL, a->dres, la->h, w->w_down + (size_t)l * D * F,
                        rows, F, D);
        memset(a->dgate, 0, rows * F * sizeof(float));
        memset(a->dup, 0, rows * F * sizeof(float));
        swiglu_backward(a->dgate, a->dup, a->dh, la->gate, la->up, rows, F);
        memset(a->dxn, 0, rows * D * sizeof(float));
        matmul_backward(a->dxn, g->w_gate + (size_t)l * F * D, NULL, a->dgate, la->xn2, w->w_gate + (size_t)l * F * D,
                        rows, D, F);
        matmul_backward(a->dxn, g->w_up + (size_t)l * F * D, NULL, a->dup, la->xn2, w->w_up + (size_t)l * F * D, rows,
                        D, F);
        rmsnorm_backward(a->dres, g->mlp_norm + lD, a->dxn, la->x_mid, w->mlp_norm + lD, rows, D, eps); // + residual
        flops += 12.0 * (double)rows * (double)D * (double)F;

        // Attention block: x_mid = x_in + o(attention(rope(q(xn1)), rope(k(xn1)), v(xn1))).
        memset(a->datt, 0, rows * QD * sizeof(float));
        matmul_backward(a->datt, g->wo + (size_t)l * D * QD, NULL, a->dres, la->att, w->wo + (size_t)l * D * QD, rows,
                        QD, D);
        flops += 4.0 * (double)rows * (double)D * (double)QD;
        if (b->lora) lora_backward_o(a, la, m, g, l);
        memset(a->dq, 0, rows * QD * sizeof(float));
        memset(a->dk, 0, rows * KD * sizeof(float));
        memset(a->dv, 0, rows * KD * sizeof(float));
        // One task per (sequence, KV head): the heads sharing a KV head add into
        // the same dk/dv rows, so they run one after another inside the task.
        const int n_tasks = S * G, hpg = H / G;
        #pragma omp parallel for schedule(dynamic, 1)
        for (int task = 0; task < n_tasks; task++) {
            int s = task / G, kg = task % G;
            size_t r0 = (size_t)la->row_start[s], n = (size_t)la->row_start[s + 1] - r0;
            if (n == 0) continue;
            float *scratch = a->attn_scratch + (size_t)omp_get_thread_num() * ATTN_BLOCK * a->max_n;
            for (int h = kg * hpg; h < (kg + 1) * hpg; h++)
                attention_backward(a->dq + r0 * QD + (size_t)h * E, a->dk + r0 * KD + (size_t)kg * E,
                                   a->dv + r0 * KD + (size_t)kg * E, scratch, a->datt + r0 * QD + (size_t)h * E,
                                   la->probs + la->probs_off[s] + (size_t)h * n * n, la->q + r0 * QD + (size_t)h * E,
                                   la->k + r0 * KD + (size_t)kg * E, la->v + r0 * KD + (size_t)kg * E, n, E, QD, KD);
        }
        for (int s = 0; s < S; s++) {
            size_t n = (size_t)(la->row_start[s + 1] - la->row_start[s]);
            for (size_t i0 = 0; i0 < n; i0 += ATTN_BLOCK) {
                size_t i1 = i0 + ATTN_BLOCK < n ? i0 + ATTN_BLOCK : n;
                flops += 8.0 * (double)H * (double)(i1 - i0) * (double)i1 * (double)E;
            }
        }
        rope_backward(a->dq, la->row_pos, m->rope_inv_freq, rows, (size_t)H, E, QD);
        rope_backward(a->dk, la->row_pos, m->rope_inv_freq, rows, (size_t)G, E, KD);
        memset(a->dxn, 0, rows * D * sizeof(float));
        matmul_backward(a->dxn, g->wq + (size_t)l * QD * D, g->bq ? g->bq + (size_t)l * QD : NULL, a->dq, la->xn1,
                        w->wq + (size_t)l * QD * D, rows, D, QD);
        matmul_backward(a->dxn, g->wk + (size_t)l * KD * D, g->bk ? g->bk + (size_t)l * KD : NULL, a->dk, la->xn1,
                        w->wk + (size_t)l * KD * D, rows, D, KD);
        matmul_backward(a->dxn, g->wv + (size_t)l * KD * D, g->bv ? g->bv + (size_t)l * KD : NULL, a->dv, la->xn1,
                        w->wv + (size_t)l * KD * D, rows, D, KD);
        flops += 4.0 * (double)rows * (double)D * (double)(QD + 2 * KD);
        if (b->lora) {
            lora_backward_qkv(a, la, m, g, l);
            flops += 2.0 * flops_lora(c, rows); // du, dinp, dA, dB of each term
        }
        rmsnorm_backward(a->dres, g->attn_norm + lD, a->dxn, la->x_in, w->attn_norm + lD, rows, D, eps);
    }
    // Layer 0 holds every token in packed order: dres is the embedding output's gradient.
    embedding_backward(g->embed, a->dres, b->tokens, a->T, D);
    a->bwd_flops = flops;
}

void train_acts_free(TrainActs *a) {
    free(a->memory);
    free(a->layer_memory);
    memset(a, 0, sizeof *a);
}

// ---------------------------------------------------------------------------
// Benchmark

int train_bench(TrainBenchResult *r, const ModelConfig *c, int n_seqs, int seq_len, int label_stride, int steps,
                uint64_t seed, Error *e) {
    memset(r, 0, sizeof *r);
    if (n_seqs <= 0 || seq_len <= 0 || label_stride <= 0 || steps <= 0)
        return err_set(e, "train bench: n_seqs, seq_len, label_stride and steps must be positive");
    if (config_validate(c, "train bench", e)) return -1;
    Model m;
    model_init_random(&m, c, seed, 0.02f);
    size_t T = (size_t)n_seqs * (size_t)seq_len;
    int *n_tok = xmalloc((size_t)n_seqs * sizeof(int));
    int *tokens = xmalloc(T * sizeof(int)), *labels = xmalloc(T * sizeof(int));
    Rng rng;
    rng_seed(&rng, seed + 1);
    for (int s = 0; s < n_seqs; s++) n_tok[s] = seq_len;
    for (size_t t = 0; t < T; t++) tokens[t] = (int)(rng_u64(&rng) % (uint64_t)c->vocab_size);
    for (size_t t = 0; t < T; t++) {
        size_t i = t % (size_t)seq_len; // next-token labels on every label_stride-th position
        labels[t] = (i + 1 < (size_t)seq_len && i % (size_t)label_stride == 0) ? tokens[t + 1] : -1;
    }
    TrainBatch b = {.n_seqs = n_seqs, .n_tok = n_tok, .tokens = tokens, .labels = labels};
    TrainActs acts = {0};
    ModelGrads grads;
    grads_alloc(&grads, c);
    AdamWConfig oc;
    adamw_config_default(&oc);
    AdamWState opt;
    adamw_init(&opt, c);
    int rc = 0;
    double t0 = 0.0, flops = 0.0;
    for (int step = 0; step <= steps; step++) {
        if (step == 1) t0 = time_now_s(); // step 0 warms up (allocations, page faults)
        if (train_forward(&acts, &m, &b, e)) { rc = -1; break; }
        grads_zero(&grads);
        train_backward(&grads, &acts, &m, acts.n_labels ? 1.0f / (float)acts.n_labels : 0.0f);
        adamw_step(&opt, m.params_memory, grads.memory, oc.lr, &oc);
        if (step >= 1) {
            flops += acts.fwd_flops + acts.bwd_flops;
            if (step == 1) r->loss_first = acts.loss_mean;
            r->loss_last = acts.loss_mean;
        }
    }
    if (rc == 0) {
        double dt = time_now_s() - t0;
        r->ms_per_step = 1e3 * dt / steps;
        r->tokens_per_s = (double)T * steps / dt;
        r->gflops = flops / dt * 1e-9;
        r->flops_per_step = flops / steps;
    }
    adamw_free(&opt);
    grads_free(&grads);
    train_acts_free(&acts);
    model_free(&m);
    free(n_tok); free(tokens); free(labels);
    return rc;
}
