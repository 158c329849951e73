// config.c: see config.h. HF config.json in, HF config.json out.
#include "runtime/config.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *config_arch_name(ModelArch a) {
    switch (a) {
    case MODEL_ARCH_LLAMA: return "LlamaForCausalLM";
    case MODEL_ARCH_QWEN2: return "Qwen2ForCausalLM";
    }
    return "?";
}

static const char *config_model_type(ModelArch a) { return a == MODEL_ARCH_QWEN2 ? "qwen2" : "llama"; }

const char *config_method_name(ModelMethod m) {
    switch (m) {
    case METHOD_FINETUNE: return "finetune";
    case METHOD_EARN: return "earn";
    case METHOD_SKIPLAYERS: return "skiplayers";
    case METHOD_GIST: return "gist";
    case METHOD_ANLLM: return "anllm";
    case METHOD_POD: return "pod";
    case METHOD_COMPRESS500X: return "compress500x";
    }
    return "?";
}

int config_method_parse(const char *s, ModelMethod *m) {
    if (!strcmp(s, "finetune")) *m = METHOD_FINETUNE;
    else if (!strcmp(s, "earn")) *m = METHOD_EARN;
    else if (!strcmp(s, "skiplayers")) *m = METHOD_SKIPLAYERS;
    else if (!strcmp(s, "gist")) *m = METHOD_GIST;
    else if (!strcmp(s, "anllm")) *m = METHOD_ANLLM;
    else if (!strcmp(s, "pod")) *m = METHOD_POD;
    else if (!strcmp(s, "compress500x")) *m = METHOD_COMPRESS500X;
    else return -1;
    return 0;
}

// ---------------------------------------------------------------------------
// Validation

int config_validate(const ModelConfig *c, const char *where, Error *e) {
    if (c->arch != MODEL_ARCH_LLAMA && c->arch != MODEL_ARCH_QWEN2)
        return err_set(e, "%s: architectures: unknown architecture id %d", where, (int)c->arch);
    struct { const char *field; int v; } pos[] = {
        {"hidden_size", c->dim}, {"intermediate_size", c->hidden_dim}, {"num_hidden_layers", c->n_layers},
        {"num_attention_heads", c->n_heads}, {"num_key_value_heads", c->n_kv_heads},
        {"head_dim", c->head_dim}, {"vocab_size", c->vocab_size}, {"max_position_embeddings", c->max_seq_len}};
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++)
        if (pos[i].v <= 0) return err_set(e, "%s: %s must be positive, found %d", where, pos[i].field, pos[i].v);
    if (c->n_heads % c->n_kv_heads != 0)
        return err_set(e, "%s: num_attention_heads (%d) is not a multiple of num_key_value_heads (%d)", where,
                       c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 != 0) // RoPE rotates pairs of dimensions
        return err_set(e, "%s: head_dim (%d) must be even for RoPE", where, c->head_dim);
    if (!(c->rms_eps > 0.0f) || !isfinite(c->rms_eps))
        return err_set(e, "%s: rms_norm_eps must be a positive number, found %g", where, (double)c->rms_eps);
    if (!(c->rope_theta > 0.0f) || !isfinite(c->rope_theta))
        return err_set(e, "%s: rope_theta must be a positive number, found %g", where, (double)c->rope_theta);
    if (c->tie_embeddings != 0 && c->tie_embeddings != 1)
        return err_set(e, "%s: tie_word_embeddings must be 0 or 1, found %d", where, c->tie_embeddings);
    if (c->attn_bias != 0 && c->attn_bias != 1)
        return err_set(e, "%s: attention_bias must be 0 or 1, found %d", where, c->attn_bias);
    if (c->arch == MODEL_ARCH_LLAMA && c->attn_bias)
        // HF Llama's attention_bias also puts a bias on o_proj, which this model has not.
        return err_set(e, "%s: attention_bias = true is not supported for LlamaForCausalLM (it adds an o_proj "
                       "bias); q/k/v biases come with Qwen2ForCausalLM", where);
    if (c->arch == MODEL_ARCH_QWEN2 && !c->attn_bias)
        return err_set(e, "%s: Qwen2ForCausalLM always has q/k/v biases (attention_bias must be set)", where);
    // The one allocation must be addressable. Every parameter count is below
    // 2 V D + L (3 F D + 4 QD D + 2 QD + 2 D): bound each term by SIZE_MAX / 64.
    size_t L = (size_t)c->n_layers, D = (size_t)c->dim, F = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t QD = (size_t)c->n_heads * (size_t)c->head_dim, t1, t2, t3, lim = SIZE_MAX / 64;
    if (!size_mul_ok(V, D, &t1) || !size_mul_ok(L, F, &t2) || !size_mul_ok(t2, D, &t2) ||
        !size_mul_ok(L, QD, &t3) || !size_mul_ok(t3, D + 1, &t3) || t1 > lim || t2 > lim || t3 > lim ||
        L * D > lim)
        return err_set(e, "%s: model sizes overflow the address space", where);
    if (c->n_prefix_regs < 0)
        return err_set(e, "%s: earnest.prefix_regs must be >= 0, found %d", where, c->n_prefix_regs);
    if (c->n_suffix_regs < 0)
        return err_set(e, "%s: earnest.suffix_regs must be >= 0, found %d", where, c->n_suffix_regs);
    switch (c->method) {
    case METHOD_FINETUNE:
        if (c->layer_split_k < 0 || c->layer_split_k > c->n_layers)
            return err_set(e, "%s: earnest.layer_split_k (%d) must be in 0..%d", where, c->layer_split_k,
                           c->n_layers);
        break;
    case METHOD_EARN:
        if (c->layer_split_k < 1 || c->layer_split_k > c->n_layers - 1)
            return err_set(e, "%s: earnest.layer_split_k (%d) must be in 1..%d (num_hidden_layers - 1) for EARN",
                           where, c->layer_split_k, c->n_layers - 1);
        if ((long)c->n_prefix_regs + c->n_suffix_regs < 1) // the late layers would see nothing of the prompt
            return err_set(e, "%s: earnest.prefix_regs + earnest.suffix_regs must be at least 1 for EARN", where);
        break;
    case METHOD_SKIPLAYERS: // a plain model of its kept layers: nothing of EARN's
        if (c->layer_split_k != 0 || c->n_prefix_regs != 0 || c->n_suffix_regs != 0)
            return err_set(e, "%s: a skiplayers model has no layer split or registers (earnest.layer_split_k, "
                           "prefix_regs and suffix_regs must be 0)", where);
        break;
    case METHOD_GIST:
        if (c->layer_split_k != 0 || c->n_prefix_regs != 0 || c->n_suffix_regs < 1)
            return err_set(e, "%s: a gist model needs earnest.suffix_regs >= 1 (its gist tokens), "
                           "earnest.prefix_regs = 0 and earnest.layer_split_k = 0; found %d, %d, %d", where,
                           c->n_suffix_regs, c->n_prefix_regs, c->layer_split_k);
        break;
    case METHOD_ANLLM: // its anchor is the vocabulary's <reg_suf_0>, placed by the prompt, not a register count
        if (c->layer_split_k != 0 || c->n_prefix_regs != 0 || c->n_suffix_regs != 0)
            return err_set(e, "%s: an anllm model has no layer split or registers (its anchor token is the "
                           "vocabulary's <reg_suf_0>): earnest.layer_split_k, prefix_regs and suffix_regs must be "
                           "0; found %d, %d, %d", where, c->layer_split_k, c->n_prefix_regs, c->n_suffix_regs);
        break;
    case METHOD_POD:
        if (c->layer_split_k != 0 || c->n_prefix_regs < 1 || c->n_suffix_regs != 0)
            return err_set(e, "%s: a pod model needs earnest.prefix_regs >= 1 (its soft-prompt vectors), "
                           "earnest.suffix_regs = 0 and earnest.layer_split_k = 0; found %d, %d, %d", where,
                           c->n_prefix_regs, c->n_suffix_regs, c->layer_split_k);
        break;
    case METHOD_COMPRESS500X:
        if (c->layer_split_k != 0 || c->n_prefix_regs != 0 || c->n_suffix_regs < 1)
            return err_set(e, "%s: a compress500x model needs earnest.suffix_regs >= 1 (its compression tokens), "
                           "earnest.prefix_regs = 0 and earnest.layer_split_k = 0; found %d, %d, %d", where,
                           c->n_suffix_regs, c->n_prefix_regs, c->layer_split_k);
        if (c->lora_rank < 1 || c->lora_rank > c->dim || !(c->lora_alpha > 0.0f) || !isfinite(c->lora_alpha))
            return err_set(e, "%s: a compress500x model needs earnest.lora_rank in 1..hidden_size (%d) and "
                           "earnest.lora_alpha > 0; found %d, %g", where, c->dim, c->lora_rank,
                           (double)c->lora_alpha);
        break;
    default:
        return err_set(e, "%s: earnest.method: unknown method id %d", where, (int)c->method);
    }
    if (c->method != METHOD_COMPRESS500X && c->lora_rank != 0)
        return err_set(e, "%s: earnest.lora_rank = %d: LoRA adapters belong to compress500x models only", where,
                       c->lora_rank);
    return 0;
}

// ---------------------------------------------------------------------------
// Loading

static const char *json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

// An integer field. Absent or null: *out = dflt when !required.
static int get_int(int *out, json_t *obj, const char *prefix, const char *field, int required, int dflt,
                   const char *path, Error *e) {
    json_t *v = json_object_get(obj, field);
    if (!v || json_is_null(v)) {
        if (required) return err_set(e, "%s: missing required field \"%s%s\"", path, prefix, field);
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v))
        return err_set(e, "%s: field \"%s%s\" must be an integer, found %s", path, prefix, field, json_kind(v));
    json_int_t x = json_integer_value(v);
    if (x < INT_MIN || x > INT_MAX)
        return err_set(e, "%s: field \"%s%s\" = %lld is out of range", path, prefix, field, (long long)x);
    *out = (int)x;
    return 0;
}

static int get_float(float *out, json_t *obj, const char *field, float dflt, const char *path, Error *e) {
    json_t *v = json_object_get(obj, field);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (!json_is_number(v))
        return err_set(e, "%s: field \"%s\" must be a number, found %s", path, field, json_kind(v));
    *out = (float)json_number_value(v);
    return 0;
}

static int get_bool(int *out, json_t *obj, const char *field, int dflt, const char *path, Error *e) {
    json_t *v = json_object_get(obj, field);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (!json_is_boolean(v))
        return err_set(e, "%s: field \"%s\" must be true or false, found %s", path, field, json_kind(v));
    *out = json_is_true(v);
    return 0;
}

static int parse_arch(ModelArch *a, json_t *root, const char *path, Error *e) {
    json_t *archs = json_object_get(root, "architectures");
    const char *name;
    if (archs && !json_is_null(archs)) {
        if (!json_is_array(archs) || json_array_size(archs) == 0 || !json_is_string(json_array_get(archs, 0)))
            return err_set(e, "%s: field \"architectures\" must be a non-empty array of strings", path);
        name = json_string_value(json_array_get(archs, 0));
        if (!strcmp(name, "LlamaForCausalLM")) *a = MODEL_ARCH_LLAMA;
        else if (!strcmp(name, "Qwen2ForCausalLM")) *a = MODEL_ARCH_QWEN2;
        else return err_set(e, "%s: architectures: unknown architecture %s (LlamaForCausalLM and "
                            "Qwen2ForCausalLM are supported)", path, name);
        return 0;
    }
    json_t *mt = json_object_get(root, "model_type");
    if (!mt) return err_set(e, "%s: neither \"architectures\" nor \"model_type\" is given", path);
    if (!json_is_string(mt))
        return err_set(e, "%s: field \"model_type\" must be a string, found %s", path, json_kind(mt));
    name = json_string_value(mt);
    if (!strcmp(name, "llama")) *a = MODEL_ARCH_LLAMA;
    else if (!strcmp(name, "qwen2")) *a = MODEL_ARCH_QWEN2;
    else return err_set(e, "%s: model_type: unknown architecture %s (llama and qwen2 are supported)", path, name);
    return 0;
}

// The "earnest" object: {"method", "layer_split_k", "prefix_regs", "suffix_regs", "template"}, and for
// compress500x "lora_rank" and "lora_alpha".
static int parse_earnest(ModelConfig *c, json_t *root, const char *path, Error *e) {
    c->method = METHOD_FINETUNE;
    c->layer_split_k = 0;
    c->n_prefix_regs = c->n_suffix_regs = 0;
    c->lora_rank = 0;
    c->lora_alpha = 0.0f;
    c->prompt_template[0] = 0;
    json_t *ea = json_object_get(root, "earnest");
    if (!ea || json_is_null(ea)) return 0;
    if (!json_is_object(ea))
        return err_set(e, "%s: field \"earnest\" must be an object, found %s", path, json_kind(ea));
    const char *key;
    json_t *v;
    json_object_foreach(ea, key, v) { // a misspelt key would silently mean a different model
        if (strcmp(key, "method") && strcmp(key, "layer_split_k") && strcmp(key, "prefix_regs") &&
            strcmp(key, "suffix_regs") && strcmp(key, "template") && strcmp(key, "lora_rank") &&
            strcmp(key, "lora_alpha"))
            return err_set(e, "%s: unknown field \"earnest.%s\" (known: method, layer_split_k, prefix_regs, "
                           "suffix_regs, template, lora_rank, lora_alpha)", path, key);
    }
    json_t *m = json_object_get(ea, "method");
    if (m) {
        if (!json_is_string(m))
            return err_set(e, "%s: field \"earnest.method\" must be a string, found %s", path, json_kind(m));
        if (config_method_parse(json_string_value(m), &c->method) != 0)
            return err_set(e, "%s: earnest.method: unknown method \"%s\" (finetune, earn, skiplayers, gist, anllm, "
                           "pod or compress500x)", path, json_string_value(m));
    }
    if (get_int(&c->layer_split_k, ea, "earnest.", "layer_split_k", 0, 0, path, e) != 0) return -1;
    if (get_int(&c->n_prefix_regs, ea, "earnest.", "prefix_regs", 0, 0, path, e) != 0) return -1;
    if (get_int(&c->n_suffix_regs, ea, "earnest.", "suffix_regs", 0, 0, path, e) != 0) return -1;
    if (get_int(&c->lora_rank, ea, "earnest.", "lora_rank", 0, 0, path, e) != 0) return -1;
    if (get_float(&c->lora_alpha, ea, "lora_alpha", 0.0f, path, e) != 0) return -1;
    json_t *t = json_object_get(ea, "template");
    if (t) {
        const char *ts = json_is_string(t) ? json_string_value(t) : NULL;
        if (!ts || !*ts || strlen(ts) >= sizeof c->prompt_template || strspn(ts, "abcdefghijklmnopqrstuvwxyz_") != strlen(ts))
            return err_set(e, "%s: field \"earnest.template\" must be a template name such as \"lcrec\" or \"tiger\"", path);
        snprintf(c->prompt_template, sizeof c->prompt_template, "%s", ts);
    }
    return 0;
}

// Features of HF configs this engine does not implement: refuse rather than
// silently compute a different model.
static int check_unsupported(json_t *root, const char *path, Error *e) {
    json_t *v = json_object_get(root, "rope_scaling");
    if (v && !json_is_null(v)) {
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        err_set(e, "%s: field \"rope_scaling\" = %s is not supported (only plain RoPE; it must be null)", path,
                s ? s : "?");
        free(s);
        return -1;
    }
    v = json_object_get(root, "hidden_act");
    if (v && !json_is_null(v) && (!json_is_string(v) || strcmp(json_string_value(v), "silu") != 0))
        return err_set(e, "%s: field \"hidden_act\" must be \"silu\" (SwiGLU), found %s%s%s", path,
                       json_is_string(v) ? "\"" : "", json_is_string(v) ? json_string_value(v) : json_kind(v),
                       json_is_string(v) ? "\"" : "");
    v = json_object_get(root, "use_sliding_window");
    if (json_is_true(v)) return err_set(e, "%s: field \"use_sliding_window\" = true is not supported", path);
    v = json_object_get(root, "mlp_bias");
    if (json_is_true(v)) return err_set(e, "%s: field \"mlp_bias\" = true is not supported", path);
    return 0;
}

// transformers 5 writes RoPE as "rope_parameters": {"rope_type": "default",
// "rope_theta": ...} instead of "rope_theta" + "rope_scaling": plain RoPE only.
static int rope_parameters(float *theta, json_t *root, const char *path, Error *e) {
    json_t *rp = json_object_get(root, "rope_parameters");
    if (!rp || json_is_null(rp)) return 0;
    if (!json_is_object(rp))
        return err_set(e, "%s: field \"rope_parameters\" must be an object, found %s", path, json_kind(rp));
    json_t *ty = json_object_get(rp, "rope_type");
    if (ty && !json_is_null(ty) && !(json_is_string(ty) && !strcmp(json_string_value(ty), "default")))
        return err_set(e, "%s: field \"rope_parameters.rope_type\" must be \"default\" (only plain RoPE)", path);
    return get_float(theta, rp, "rope_theta", *theta, path, e);
}

static int config_parse(ModelConfig *c, json_t *root, const char *path, Error *e) {
    if (!json_is_object(root)) return err_set(e, "%s: not a JSON object", path);
    if (parse_arch(&c->arch, root, path, e) != 0 || check_unsupported(root, path, e) != 0) return -1;
    if (get_int(&c->dim, root, "", "hidden_size", 1, 0, path, e) != 0 ||
        get_int(&c->hidden_dim, root, "", "intermediate_size", 1, 0, path, e) != 0 ||
        get_int(&c->n_layers, root, "", "num_hidden_layers", 1, 0, path, e) != 0 ||
        get_int(&c->n_heads, root, "", "num_attention_heads", 1, 0, path, e) != 0 ||
        get_int(&c->n_kv_heads, root, "", "num_key_value_heads", 0, c->n_heads, path, e) != 0 ||
        get_int(&c->head_dim, root, "", "head_dim", 0, 0, path, e) != 0 ||
        get_int(&c->vocab_size, root, "", "vocab_size", 1, 0, path, e) != 0 ||
        get_int(&c->max_seq_len, root, "", "max_position_embeddings", 0, 2048, path, e) != 0 ||
        get_float(&c->rms_eps, root, "rms_norm_eps", 1e-6f, path, e) != 0 ||
        get_float(&c->rope_theta, root, "rope_theta", 10000.0f, path, e) != 0 ||
        get_bool(&c->tie_embeddings, root, "tie_word_embeddings", 0, path, e) != 0 ||
        get_bool(&c->attn_bias, root, "attention_bias", 0, path, e) != 0)
        return -1;
    if (rope_parameters(&c->rope_theta, root, path, e)) return -1;
    if (c->arch == MODEL_ARCH_QWEN2) c->attn_bias = 1; // Qwen2 has q/k/v biases by construction
    if (!json_object_get(root, "head_dim") || json_is_null(json_object_get(root, "head_dim"))) {
        if (c->n_heads <= 0)
            return err_set(e, "%s: num_attention_heads must be positive, found %d", path, c->n_heads);
        if (c->dim % c->n_heads != 0)
            return err_set(e, "%s: hidden_size (%d) is not a multiple of num_attention_heads (%d) and no "
                           "head_dim is given", path, c->dim, c->n_heads);
        c->head_dim = c->dim / c->n_heads;
    }
    return parse_earnest(c, root, path, e);
}

int config_load(ModelConfig *c, const char *path, Error *e) {
    memset(c, 0, sizeof *c);
    char *text;
    size_t len;
    if (file_read_all(path, &text, &len, e) != 0) return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root)
        return err_set(e, "%s: line %d, column %d: not valid JSON: %s", path, jerr.line, jerr.column, jerr.text);
    int rc = config_parse(c, root, path, e);
    json_decref(root);
    if (rc == 0) rc = config_validate(c, path, e);
    return rc;
}

// ---------------------------------------------------------------------------
// Saving

// A JSON real that prints as the shortest decimal giving back the same float
// (1e-06, not 9.9999999747524271e-07), since the dump below uses 9 digits.
static json_t *json_float(float f) {
    char buf[64];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if ((float)strtod(buf, NULL) == f) break;
    }
    json_t *v = json_real(strtod(buf, NULL));
    CHECK(v, "json_real failed");
    return v;
}

static void obj_set(json_t *obj, const char *key, json_t *v) {
    CHECK(v && json_object_set_new(obj, key, v) == 0, "json: setting \"%s\" failed", key);
}

int config_save(const ModelConfig *c, const char *path, Error *e) {
    if (config_validate(c, path, e) != 0) return -1;
    json_t *root = json_object();
    CHECK(root, "json_object failed");
    json_t *archs = json_array();
    CHECK(archs && json_array_append_new(archs, json_string(config_arch_name(c->arch))) == 0, "json failed");
    obj_set(root, "architectures", archs);
    obj_set(root, "model_type", json_string(config_model_type(c->arch)));
    obj_set(root, "hidden_size", json_integer(c->dim));
    obj_set(root, "intermediate_size", json_integer(c->hidden_dim));
    obj_set(root, "num_hidden_layers", json_integer(c->n_layers));
    obj_set(root, "num_attention_heads", json_integer(c->n_heads));
    obj_set(root, "num_key_value_heads", json_integer(c->n_kv_heads));
    obj_set(root, "head_dim", json_integer(c->head_dim));
    obj_set(root, "vocab_size", json_integer(c->vocab_size));
    obj_set(root, "max_position_embeddings", json_integer(c->max_seq_len));
    obj_set(root, "rms_norm_eps", json_float(c->rms_eps));
    obj_set(root, "rope_theta", json_float(c->rope_theta));
    obj_set(root, "tie_word_embeddings", json_boolean(c->tie_embeddings));
    obj_set(root, "hidden_act", json_string("silu"));
    if (c->arch == MODEL_ARCH_LLAMA) obj_set(root, "attention_bias", json_boolean(c->attn_bias));
    obj_set(root, "torch_dtype", json_string("float32"));
    json_t *ea = json_object();
    CHECK(ea, "json_object failed");
    obj_set(ea, "method", json_string(config_method_name(c->method)));
    obj_set(ea, "layer_split_k", json_integer(c->layer_split_k));
    obj_set(ea, "prefix_regs", json_integer(c->n_prefix_regs));
    obj_set(ea, "suffix_regs", json_integer(c->n_suffix_regs));
    if (c->prompt_template[0]) obj_set(ea, "template", json_string(c->prompt_template));
    if (c->lora_rank) {
        obj_set(ea, "lora_rank", json_integer(c->lora_rank));
        obj_set(ea, "lora_alpha", json_float(c->lora_alpha));
    }
    obj_set(root, "earnest", ea);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(root);
    CHECK(text, "json_dumps failed");
    AtomicFile af;
    if (atomic_open(&af, path, e) != 0) {
        free(text);
        return -1;
    }
    int ok = fputs(text, af.f) >= 0 && fputc('\n', af.f) != EOF;
    free(text);
    if (!ok) {
        atomic_abort(&af);
        return err_set(e, "%s: write failed", path);
    }
    return atomic_commit(&af, e);
}
