// config.h: the model configuration, read from and written to a Hugging Face
// config.json (HF field names), with earnest's own settings in an "earnest"
// object that HF ignores.
#ifndef EARNEST_CONFIG_H
#define EARNEST_CONFIG_H

#include "runtime/util.h"

typedef enum {
    MODEL_ARCH_LLAMA = 0, // "LlamaForCausalLM" (model_type "llama")
    MODEL_ARCH_QWEN2 = 1, // "Qwen2ForCausalLM" (model_type "qwen2"): q/k/v projections carry a bias
} ModelArch;

typedef enum {
    METHOD_FINETUNE = 0, // every layer sees every token ("full" in bench)
    METHOD_EARN = 1,     // layers >= k see only registers and generated tokens
    METHOD_SKIPLAYERS = 2, // the first m layers of a deeper model, fine-tuned alone (n_layers = m)
    METHOD_GIST = 3,     // S gist tokens (the suffix registers) after the prompt; generated
                         // tokens see only them (and each other) in every layer
    METHOD_ANLLM = 4,    // an anchor (<reg_suf_0>) after each history item; a token sees earlier
                         // anchors and its own segment only (plan_mask_anllm); no registers
    METHOD_POD = 5,      // P prefix registers (learned soft prompt) replace the instruction
                         // words; a full model otherwise
    METHOD_COMPRESS500X = 6, // 500xCompressor-style, see below
} ModelMethod;

// compress500x (500xCompressor-style, arXiv 2408.03094, as a baseline of EARN):
//  - C compression tokens (the suffix registers <reg_suf_0..C-1>) after the prompt.
//  - Encoder: the prompt and the compression tokens run through the model with
//    rank-r LoRA adapters (lora_rank, scale lora_alpha / r) on q_proj, k_proj,
//    v_proj and o_proj of every layer (model.h lora_*; ops.h lora_forward), so
//    the compression tokens' K/V in every layer come from W + (alpha/r) B A.
//  - Decoder: the code tokens run the frozen base W (no LoRA) and see only the
//    compression tokens and each other, in every layer (Gist's mask,
//    plan_mask_gist); the first code token is predicted from the last
//    compression token's output (computed with the adapters).
//  - Training (one forward: a per-token flag picks the weights): only the
//    adapters and the compression tokens' embedding rows are trained, from a
//    fine-tuned full model (--init, required); lora_B starts at 0, so training
//    starts from the base model exactly.
//  - Inference (beam.c): prefill of prompt + compression tokens with LoRA on,
//    then only the compression tokens' KV is kept; decode on the base weights.
//    KV closed form: Gist's, bptl * N * (C + beams * gen).
typedef struct {
    ModelArch arch;
    int dim;          // hidden_size
    int hidden_dim;   // intermediate_size (SwiGLU width)
    int n_layers;     // num_hidden_layers
    int n_heads;      // num_attention_heads
    int n_kv_heads;   // num_key_value_heads (GQA: divides n_heads)
    int head_dim;     // hidden_size / num_attention_heads unless config says "head_dim"
    int vocab_size;   // vocab_size
    int max_seq_len;  // max_position_embeddings
    float rms_eps;    // rms_norm_eps
    float rope_theta; // rope_theta
    int tie_embeddings; // tie_word_embeddings: lm_head shares embed_tokens
    int attn_bias;      // q/k/v bias (Qwen2)
    // earnest-specific ("earnest" object in config.json)
    ModelMethod method;
    int layer_split_k;  // EARN: layers 0..k-1 see the whole prompt
    int n_prefix_regs;  // EARN: register tokens before the prompt; POD: its soft-prompt vectors
    int n_suffix_regs;  // EARN: register tokens after the prompt; Gist: the gist tokens;
                        // compress500x: the compression tokens
    int lora_rank;      // compress500x: rank r of the LoRA adapters (0: no adapters, every other method)
    float lora_alpha;   // compress500x: LoRA alpha; the low-rank term is scaled by alpha / r
    char prompt_template[16]; // the prompt template the model was trained with ("lcrec", "tiger"),
                              // "" when unknown; eval and dump-attn default to it
} ModelConfig;

// Checks internal consistency (positive sizes, heads dividing, k in 1..N-1
// for EARN, ...). `where` names the source in the message (a file path).
int config_validate(const ModelConfig *c, const char *where, Error *e);
// Parses config.json (HF names). Unknown architectures, missing or malformed
// fields are errors naming the file and the field.
int config_load(ModelConfig *c, const char *path, Error *e);
int config_save(const ModelConfig *c, const char *path, Error *e); // atomic
const char *config_arch_name(ModelArch a);   // "LlamaForCausalLM", ...
const char *config_method_name(ModelMethod m); // "finetune", "earn", "skiplayers", "gist", "anllm", "pod",
                                               // "compress500x"
int config_method_parse(const char *s, ModelMethod *m);

#endif
