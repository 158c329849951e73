// train.h: the training forward (with saved activations), the loss, and the
// backward pass of the decoder, for a packed batch of sequences under any
// layer plan (model.h, depth[]) and per-sequence masks.
//
// The forward computes exactly what model_forward computes for the same batch
// fed to empty KV caches (one full pass per sequence, no cache): token i runs
// through layers 0..depth[i]-1 and is dropped after, its keys/values exist
// only in those layers, query i sees the earlier tokens of its sequence still
// computed in that layer (and allowed by the mask). Training therefore uses
// exactly the plan that inference uses.
//
// Loss: cross-entropy of the next-token label on every position that carries
// one (labels[i] >= 0; such a token must have depth N). Logits are computed
// only for those rows, which is where the loss lives.
//
// Typical step (llm.c style):
//     train_forward(&acts, &model, &batch, &e);      // acts.loss_mean
//     grads_zero(&grads);
//     train_backward(&grads, &acts, &model, 1.0f / acts.n_labels);
//     adamw_step(...)                                  // runtime/adamw.h
#ifndef EARNEST_TRAIN_H
#define EARNEST_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/model.h"

// Gradients, laid out exactly like Model.params_memory: g.X is the gradient
// of params.X (same shape); with tied embeddings g.lm_head == g.embed, so the
// two uses of the table add into one gradient.
typedef struct {
    ModelParams g;
    float *memory; // the one allocation
    size_t n;      // floats (== Model.n_params)
} ModelGrads;

void grads_alloc(ModelGrads *g, const ModelConfig *c);
void grads_zero(ModelGrads *g);
void grads_free(ModelGrads *g);

typedef struct {
    int n_seqs;
    const int *n_tok;           // [n_seqs] tokens of each sequence (packed one after another)
    const int *tokens;          // [T] token ids
    const int *positions;       // [T] RoPE positions; NULL: 0..n-1 within each sequence
    const int *depth;           // [T] layers each token is computed in; NULL: all N
    const uint8_t *const *mask; // NULL, or per sequence NULL or [n, n]: mask[i*n+j] = 1 lets token i
                                // see token j (j < i; causality always applies)
    const int *labels;          // [T] target id of the position, or -1 (no loss there)
    const uint8_t *lora;        // NULL, or [T]: 1 = the token's q/k/v/o projections add the LoRA term
                                // (compress500x: prompt and compression tokens; targets run the base)
} TrainBatch;

// Activations of one layer, for the rows (tokens) it computes, in packed order.
typedef struct {
    size_t rows;      // tokens computed in this layer
    int *row_tok;     // [rows] packed index of each row's token
    int *row_pos;     // [rows] RoPE position
    int *row_local;   // [rows] index of the token in its sequence (the mask index)
    int *row_start;   // [S+1] first row of each sequence
    size_t *probs_off;// [S] offset in probs of each sequence's [H, n, n] block
    float *x_in;      // [rows, D] residual stream entering the layer
    float *xn1;       // [rows, D] input_layernorm(x_in)
    float *q;         // [rows, H*E] after RoPE
    float *k;         // [rows, G*E] after RoPE
    float *v;         // [rows, G*E]
    float *probs;     // per sequence [H, n, n] post-softmax attention (n = its rows here)
    float *att;       // [rows, H*E] attention output (input of o_proj)
    float *x_mid;     // [rows, D] residual after attention
    float *xn2;       // [rows, D] post_attention_layernorm(x_mid)
    float *gate;      // [rows, F] gate_proj output (before SiLU)
    float *up;        // [rows, F] up_proj output
    float *h;         // [rows, F] silu(gate) * up (input of down_proj)
    uint8_t *row_lora;// [rows] 1: the row adds the LoRA term (from TrainBatch.lora)
    float *lora_u;    // [4, rows, r] LoRA's low-rank inputs of q, k, v and o (r = 0 without adapters)
} LayerActs;

// Everything one forward saves for its backward, carved from one allocation
// that grows as needed and is reused across steps.
typedef struct {
    TrainBatch batch;  // the caller's batch: its arrays must stay unchanged until train_backward returns
    int n_layers, n_seqs;
    size_t T;          // packed tokens
    LayerActs *layer;  // [L]
    float *x_top;      // [rows_top, D] residual stream leaving the last layer
    int n_labels;      // positions carrying a loss
    int *label_row;    // [n_labels] row among the last layer's rows
    int *label_tok;    // [n_labels] packed token index
    int *label_id;     // [n_labels] target token id
    float *xl;         // [n_labels, D] x_top rows that carry a label
    float *xnl;        // [n_labels, D] final norm of xl
    float *logits;     // [n_labels, V] (turned into dlogits by train_backward)
    float *losses;     // [n_labels] per-position cross-entropy
    float *xw;         // [T, D] work: a layer's output before its rows are dropped
    // backward work space (sized for the widest layer)
    float *dres, *dxn, *dq, *dk, *dv, *datt, *dgate, *dup, *dh, *dxl, *dxnl;
    float *dlora_u;    // [T, r] LoRA's du (ops.h lora_backward)
    float *attn_scratch; // [n_threads, ATTN_BLOCK * max_n]
    int n_threads;
    size_t max_n;      // longest sequence
    double loss_sum;   // sum of losses over the labelled positions (double accumulation)
    double loss_mean;  // loss_sum / n_labels (0 when no labels)
    double fwd_flops;  // multiply-adds x2 of the last forward (matrix products and attention, as computed)
    double bwd_flops;  // same for the last backward
    void *memory;
    size_t capacity;   // bytes
    void *layer_memory;// the LayerActs array
} TrainActs;

// Runs the forward and the loss; fills a. Returns 0, or -1 with e set on bad
// input (empty batch, token id or label outside the vocabulary, depth outside
// 1..N, negative position, a label on a token that stops before layer N).
int train_forward(TrainActs *a, const Model *m, const TrainBatch *b, Error *e);

// Backward of loss_scale * loss_sum (loss_scale = 1/n_labels: the mean loss;
// 1: the sum), ADDED into g (zero it first; several micro-batches may add up).
// Uses the activations of the last train_forward on the same model.
void train_backward(ModelGrads *g, TrainActs *a, const Model *m, float loss_scale);

// The same backward for any loss of the logits: the caller has overwritten
// a->logits [n_labels, V] with d(loss)/d(logits) (rows in label order:
// a->label_tok gives each row's packed token). train_backward is the
// cross-entropy's dlogits followed by this. Used by the KD losses
// (runtime/kd_loss.h), which may ignore the labels and use the rows only.
void train_backward_dlogits(ModelGrads *g, TrainActs *a, const Model *m);

void train_acts_free(TrainActs *a);

// compress500x's frozen base: zeroes every gradient but the LoRA adapters'
// and the embedding rows of the n token ids in rows (the compression tokens).
// With tied embeddings those rows' gradient includes their lm_head use.
void grads_keep_lora_and_rows(ModelGrads *g, const ModelConfig *c, const int *rows, int n);

// Throughput of full training steps (forward, backward, AdamW update) on a
// random model of config c and a random batch of n_seqs sequences of seq_len
// tokens with a label on every label_stride-th position (1: every position).
// One untimed warm-up step, then `steps` timed ones.
typedef struct {
    double tokens_per_s;   // packed tokens processed per second
    double gflops;         // achieved: (forward + backward flops as computed) / time
    double ms_per_step;
    double flops_per_step; // forward + backward
    double loss_first, loss_last; // mean loss of the first and the last timed step
} TrainBenchResult;
int train_bench(TrainBenchResult *r, const ModelConfig *c, int n_seqs, int seq_len, int label_stride, int steps,
                uint64_t seed, Error *e);

#endif
