// beam_cuda.h: constrained beam search on the GPU, with runtime/beam.h's
// semantics and figures (the same BeamHyps come out; the tests compare them).
//
// Layout: each user's prompt KV is one device cache, computed once by one
// batched prefill; its beams' caches view one device pool (W blocks per user)
// and read the prompt cache as their shared parent. Each step computes every
// row's log-sum-exp and every user's top-W (beam, trie edge) candidates on the
// device (beam_select_cuda); the host receives only the W picks per user,
// keeps the beams' tokens, and plans the next decode forward. Reordering
// copies each surviving beam's KV block into a second pool (beams_reorder_cuda),
// then the pools swap.
#ifndef EARNEST_BEAM_CUDA_H
#define EARNEST_BEAM_CUDA_H

#include "runtime/cuda/model_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

#include "runtime/beam.h"
#include "runtime/trie.h"

typedef struct {
    CudaModel *model;
    const Trie *trie;
    int width, steps, n_leaves;
    int *first_edge, *edge_token;  // the trie's arrays on the device
    CudaForwardScratch scratch;
    // figures of the last run, as BeamSearch's
    double prefill_s, decode_s;
    double prefill_flops;          // FLOPs of the prefill forward
    size_t kv_bytes, prompt_tokens, gen_tokens;
} CudaBeamSearch;

int cuda_beam_search_init(CudaBeamSearch *bs, CudaModel *model, const Trie *trie, int width, Error *e);
void cuda_beam_search_free(CudaBeamSearch *bs);
// As beam_search_run (beam.h): out [n_users], each freed with beam_hyps_free.
int cuda_beam_search_run(BeamHyps *out, CudaBeamSearch *bs, int n_users, const int *const *prompts,
                         const uint8_t *const *kinds, const int *prompt_len, Error *e);

#ifdef __cplusplus
}
#endif

#endif
