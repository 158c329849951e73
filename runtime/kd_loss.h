// kd_loss.h: the knowledge-distillation losses that align a draft model
// with its target (AtSpeed, arXiv 2410.05165, and the baselines it compares
// with), one logits row at a time. Each loss has a forward (the loss of one
// row) and a backward (its gradient with respect to the row's logits), and
// each has a plain reference twin `*_ref` (double precision, written from the
// definition, softmax Jacobian spelled out) that tests/test_kd_loss.c checks
// the fast one against, and checks against finite differences.
//
// A row: the student's logits z [V] over the whole vocabulary; the set S [n]
// of token ids the loss lives on (the code tokens of the level the row
// predicts: <a_*> for the first code token, <b_*> for the second, ...); the
// teacher's log-probabilities tlp [n] on S (its full-vocabulary log_softmax at
// temperature 1, as the teacher file stores them, experiments/teacher.h).
//
//   WordKD  forward KL(p || q) over the vocabulary, coarsened to the tokens of
//           S plus one bucket "rest" (every other token): p_x = exp(tlp_x),
//           p_rest = max(0, 1 - sum_S p), q = softmax(z) likewise;
//           loss = sum_b p_b log(p_b / q_b) over the buckets with p_b > 0.
//           (With a teacher that puts no mass outside S this is the full KL.)
//   TVDKD   total variation on the same buckets: 1/2 sum_b |p_b - q_b|.
//   AtSpeed-S  (strict verification) on the level's code tokens only, at
//           temperature T: the student's top-K tokens of S (by logit; ties to
//           the earlier entry of S), q = softmax(z/T) and p = softmax(tlp/T)
//           both renormalised over those K; loss = KL(q || p) (reverse KL)
//           + p_K * H(q), p_K = p of the student's K-th token (its lowest of
//           the K), H(q) = -sum q log q. The top-K choice and p_K are constants
//           of the step (no gradient through the selection).
//   AtSpeed-R  (relaxed verification) total variation over the level's code
//           tokens at temperature T: p = softmax(tlp/T) and q = softmax(z/T)
//           over S; loss = 1/2 sum_S |p - q|. |.| has derivative sign(.)
//           (0 at 0).
// SeqKD (cross-entropy on the teacher's top-K sequences) and SFT use
// crossentropy_forward/backward of ops.h.
//
// Backwards ADD dloss * d(loss)/dz into dz [V] (entries outside S get the
// WordKD/TVDKD rest-bucket gradient; AtSpeed-S/R touch only S), like the
// backward ops of ops.h.
#ifndef EARNEST_KD_LOSS_H
#define EARNEST_KD_LOSS_H

#include <stddef.h>

typedef enum {
    KD_SFT = 0,      // plain cross-entropy on the ground truth (no KD term)
    KD_WORDKD = 1,
    KD_TVDKD = 2,
    KD_SEQKD = 3,
    KD_ATSPEED_S = 4,
    KD_ATSPEED_R = 5,
} KDLoss;

const char *kd_loss_name(KDLoss k);              // "sft", "wordkd", "tvdkd", "seqkd", "atspeed-s", "atspeed-r"
int kd_loss_parse(const char *name, KDLoss *k);  // 0, or -1 when unknown
// Where the KD term is read: 0 on the ground-truth code rows (WordKD, TVDKD),
// 1 along the teacher's top-K beams (SeqKD, AtSpeed-S, AtSpeed-R); SFT has none (-1).
int kd_loss_on_beams(KDLoss k);

double kd_wordkd_forward(const float *z, const int *S, const float *tlp, size_t n, size_t V);
double kd_wordkd_forward_ref(const float *z, const int *S, const float *tlp, size_t n, size_t V);
void kd_wordkd_backward(float *dz, const float *z, const int *S, const float *tlp, size_t n, size_t V, float dloss);
void kd_wordkd_backward_ref(float *dz, const float *z, const int *S, const float *tlp, size_t n, size_t V,
                            float dloss);

double kd_tvdkd_forward(const float *z, const int *S, const float *tlp, size_t n, size_t V);
double kd_tvdkd_forward_ref(const float *z, const int *S, const float *tlp, size_t n, size_t V);
void kd_tvdkd_backward(float *dz, const float *z, const int *S, const float *tlp, size_t n, size_t V, float dloss);
void kd_tvdkd_backward_ref(float *dz, const float *z, const int *S, const float *tlp, size_t n, size_t V,
                           float dloss);

// K = min(topk, n); T > 0.
double kd_atspeed_s_forward(const float *z, const int *S, const float *tlp, size_t n, int topk, float T);
double kd_atspeed_s_forward_ref(const float *z, const int *S, const float *tlp, size_t n, int topk, float T);
void kd_atspeed_s_backward(float *dz, const float *z, const int *S, const float *tlp, size_t n, int topk, float T,
                           float dloss);
void kd_atspeed_s_backward_ref(float *dz, const float *z, const int *S, const float *tlp, size_t n, int topk,
                               float T, float dloss);

double kd_atspeed_r_forward(const float *z, const int *S, const float *tlp, size_t n, float T);
double kd_atspeed_r_forward_ref(const float *z, const int *S, const float *tlp, size_t n, float T);
void kd_atspeed_r_backward(float *dz, const float *z, const int *S, const float *tlp, size_t n, float T, float dloss);
void kd_atspeed_r_backward_ref(float *dz, const float *z, const int *S, const float *tlp, size_t n, float T,
                               float dloss);

#endif
