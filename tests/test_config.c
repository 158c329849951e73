// test_config.c: HF config.json parsing, defaults, validation messages and
// the save -> load round trip.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers/st_fixture.h"
#include "runtime/config.h"

typedef struct {
    char *dir;
    char path[4200];
} Fx;

static int fx_setup(void **state) {
    Fx *fx = xcalloc(1, sizeof *fx);
    fx->dir = st_fixture_tmpdir();
    snprintf(fx->path, sizeof fx->path, "%s/config.json", fx->dir);
    *state = fx;
    return 0;
}

static int fx_teardown(void **state) {
    Fx *fx = *state;
    remove_tree(fx->dir);
    free(fx->dir);
    free(fx);
    return 0;
}

// Loads `text` as config.json; returns config_load's result.
static int load_text(Fx *fx, const char *text, ModelConfig *c, Error *e) {
    st_fixture_write_text(fx->path, text);
    e->msg[0] = 0;
    return config_load(c, fx->path, e);
}

// Expects `text` to be rejected with a message naming the file and containing `what`.
static void expect_error(Fx *fx, const char *text, const char *what) {
    ModelConfig c;
    Error e;
    assert_int_equal(load_text(fx, text, &c, &e), -1);
    assert_true(st_fixture_contains(e.msg, fx->path));
    assert_true(st_fixture_contains(e.msg, what));
}

// A Llama config with only the required fields: every default applies.
static void test_llama_defaults(void **state) {
    Fx *fx = *state;
    ModelConfig c;
    Error e;
    int rc = load_text(fx, "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,"
                           " \"intermediate_size\": 172, \"num_hidden_layers\": 5,"
                           " \"num_attention_heads\": 8, \"vocab_size\": 512}", &c, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(c.arch, MODEL_ARCH_LLAMA);
    assert_int_equal(c.dim, 64);
    assert_int_equal(c.hidden_dim, 172);
    assert_int_equal(c.n_layers, 5);
    assert_int_equal(c.n_heads, 8);
    assert_int_equal(c.n_kv_heads, 8);  // default: num_attention_heads
    assert_int_equal(c.head_dim, 8);    // default: hidden / heads
    assert_int_equal(c.vocab_size, 512);
    assert_int_equal(c.max_seq_len, 2048);
    assert_true(c.rms_eps == 1e-6f);
    assert_true(c.rope_theta == 10000.0f);
    assert_int_equal(c.tie_embeddings, 0);
    assert_int_equal(c.attn_bias, 0);
    assert_int_equal(c.method, METHOD_FINETUNE);
    assert_int_equal(c.n_prefix_regs, 0);
    assert_int_equal(c.n_suffix_regs, 0);
}

// A config in the shape Qwen2.5-0.5B publishes (extra HF fields are ignored).
static void test_qwen2_real_shape(void **state) {
    Fx *fx = *state;
    ModelConfig c;
    Error e;
    int rc = load_text(fx,
        "{\n  \"architectures\": [\"Qwen2ForCausalLM\"],\n  \"attention_dropout\": 0.0,\n"
        "  \"bos_token_id\": 151643,\n  \"eos_token_id\": 151643,\n  \"hidden_act\": \"silu\",\n"
        "  \"hidden_size\": 896,\n  \"initializer_range\": 0.02,\n  \"intermediate_size\": 4864,\n"
        "  \"max_position_embeddings\": 32768,\n  \"max_window_layers\": 24,\n  \"model_type\": \"qwen2\",\n"
        "  \"num_attention_heads\": 14,\n  \"num_hidden_layers\": 24,\n  \"num_key_value_heads\": 2,\n"
        "  \"rms_norm_eps\": 1e-06,\n  \"rope_scaling\": null,\n  \"rope_theta\": 1000000.0,\n"
        "  \"sliding_window\": 32768,\n  \"tie_word_embeddings\": true,\n  \"torch_dtype\": \"bfloat16\",\n"
        "  \"transformers_version\": \"4.43.1\",\n  \"use_cache\": true,\n  \"use_sliding_window\": false,\n"
        "  \"vocab_size\": 151936\n}\n", &c, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(c.arch, MODEL_ARCH_QWEN2);
    assert_int_equal(c.dim, 896);
    assert_int_equal(c.n_heads, 14);
    assert_int_equal(c.n_kv_heads, 2);
    assert_int_equal(c.head_dim, 64);
    assert_int_equal(c.max_seq_len, 32768);
    assert_true(c.rope_theta == 1000000.0f);
    assert_int_equal(c.tie_embeddings, 1);
    assert_int_equal(c.attn_bias, 1); // Qwen2 always has q/k/v biases
    // transformers 5 writes RoPE as rope_parameters
    rc = load_text(fx, "{\"architectures\": [\"Qwen2ForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 96,"
                       " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 50,"
                       " \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 1000000.0}}", &c, &e);
    assert_int_equal(rc, 0);
    assert_true(c.rope_theta == 1000000.0f);
}

// model_type alone names the architecture; an explicit head_dim wins over hidden/heads.
static void test_model_type_and_head_dim(void **state) {
    Fx *fx = *state;
    ModelConfig c;
    Error e;
    int rc = load_text(fx, "{\"model_type\": \"qwen2\", \"hidden_size\": 30, \"intermediate_size\": 40,"
                           " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
                           " \"head_dim\": 6, \"vocab_size\": 9}", &c, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(c.arch, MODEL_ARCH_QWEN2);
    assert_int_equal(c.head_dim, 6);
    assert_int_equal(load_text(fx, "{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 8,"
                                   " \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"vocab_size\": 3}",
                               &c, &e), 0);
    assert_int_equal(c.arch, MODEL_ARCH_LLAMA);
}

static ModelConfig sample_config(void) {
    ModelConfig c = {0};
    c.arch = MODEL_ARCH_LLAMA;
    c.dim = 48;
    c.hidden_dim = 100;
    c.n_layers = 4;
    c.n_heads = 6;
    c.n_kv_heads = 3;
    c.head_dim = 10; // not dim / heads: must survive the round trip
    c.vocab_size = 77;
    c.max_seq_len = 300;
    c.rms_eps = 1e-5f;
    c.rope_theta = 500000.0f;
    c.tie_embeddings = 1;
    c.method = METHOD_EARN;
    c.layer_split_k = 3;
    c.n_prefix_regs = 2;
    c.n_suffix_regs = 5;
    return c;
}

static void assert_config_equal(const ModelConfig *a, const ModelConfig *b) {
    assert_int_equal(a->arch, b->arch);
    assert_int_equal(a->dim, b->dim);
    assert_int_equal(a->hidden_dim, b->hidden_dim);
    assert_int_equal(a->n_layers, b->n_layers);
    assert_int_equal(a->n_heads, b->n_heads);
    assert_int_equal(a->n_kv_heads, b->n_kv_heads);
    assert_int_equal(a->head_dim, b->head_dim);
    assert_int_equal(a->vocab_size, b->vocab_size);
    assert_int_equal(a->max_seq_len, b->max_seq_len);
    assert_memory_equal(&a->rms_eps, &b->rms_eps, sizeof(float));     // bit-exact
    assert_memory_equal(&a->rope_theta, &b->rope_theta, sizeof(float));
    assert_int_equal(a->tie_embeddings, b->tie_embeddings);
    assert_int_equal(a->attn_bias, b->attn_bias);
    assert_int_equal(a->method, b->method);
    assert_int_equal(a->layer_split_k, b->layer_split_k);
    assert_int_equal(a->n_prefix_regs, b->n_prefix_regs);
    assert_string_equal(a->prompt_template, b->prompt_template);
    assert_int_equal(a->n_suffix_regs, b->n_suffix_regs);
}

static void test_save_load_round_trip(void **state) {
    Fx *fx = *state;
    Error e;
    ModelConfig want[3] = {sample_config(), sample_config(), sample_config()};
    want[1].arch = MODEL_ARCH_QWEN2;
    want[1].attn_bias = 1;
    want[1].method = METHOD_FINETUNE;
    want[1].layer_split_k = 0;
    want[1].n_prefix_regs = want[1].n_suffix_regs = 0;
    want[1].tie_embeddings = 0;
    want[1].rms_eps = 1e-6f;
    want[2].rms_eps = 3.14159274e-7f; // a float needing 9 digits
    want[2].rope_theta = 10000.0f;
    snprintf(want[2].prompt_template, sizeof want[2].prompt_template, "tiger"); // the prompt template travels too
    for (int i = 0; i < 3; i++) {
        ModelConfig got;
        if (config_save(&want[i], fx->path, &e) != 0) fail_msg("%s", e.msg);
        if (config_load(&got, fx->path, &e) != 0) fail_msg("%s", e.msg);
        assert_config_equal(&want[i], &got);
    }
    // The file carries what transformers needs, with readable numbers.
    char *text;
    size_t len;
    assert_int_equal(config_save(&want[1], fx->path, &e), 0);
    assert_int_equal(file_read_all(fx->path, &text, &len, &e), 0);
    const char *needles[] = {"\"architectures\": [\n    \"Qwen2ForCausalLM\"", "\"model_type\": \"qwen2\"",
                             "\"rms_norm_eps\": 1e-6", "\"hidden_act\": \"silu\"", "\"torch_dtype\": \"float32\"",
                             "\"num_key_value_heads\": 3", "\"head_dim\": 10", "\"tie_word_embeddings\": false",
                             "\"earnest\": {"};
    for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++) assert_true(st_fixture_contains(text, needles[i]));
    assert_null(strstr(text, "attention_bias")); // a Llama-only field
    free(text);
    // An invalid config is not written.
    ModelConfig bad = sample_config();
    bad.layer_split_k = 4;
    remove(fx->path);
    assert_int_equal(config_save(&bad, fx->path, &e), -1);
    assert_true(st_fixture_contains(e.msg, "layer_split_k"));
    assert_int_equal(file_read_all(fx->path, &text, &len, &e), -1);
}

static void test_method_names(void **state) {
    (void)state;
    ModelMethod m;
    assert_int_equal(config_method_parse("earn", &m), 0);
    assert_int_equal(m, METHOD_EARN);
    assert_int_equal(config_method_parse("finetune", &m), 0);
    assert_int_equal(m, METHOD_FINETUNE);
    assert_int_equal(config_method_parse("EARN", &m), -1);
    assert_string_equal(config_method_name(METHOD_EARN), "earn");
    assert_string_equal(config_arch_name(MODEL_ARCH_QWEN2), "Qwen2ForCausalLM");
}

#define BASE "\"architectures\": [\"LlamaForCausalLM\"], \"intermediate_size\": 16, \"num_hidden_layers\": 4, " \
             "\"vocab_size\": 10"

static void test_errors(void **state) {
    Fx *fx = *state;
    expect_error(fx, "{\"hidden_size\": 8,", "not valid JSON");
    expect_error(fx, "{\"hidden_size\": 8,\n \"x\": }", "line 2");
    expect_error(fx, "[1, 2]", "not a JSON object");
    expect_error(fx, "{" BASE ", \"num_attention_heads\": 2}", "missing required field \"hidden_size\"");
    expect_error(fx, "{" BASE ", \"hidden_size\": \"8\", \"num_attention_heads\": 2}",
                 "field \"hidden_size\" must be an integer, found a string");
    expect_error(fx, "{" BASE ", \"hidden_size\": 8.5, \"num_attention_heads\": 2}", "\"hidden_size\"");
    expect_error(fx, "{" BASE ", \"hidden_size\": 8, \"num_attention_heads\": 2, \"rms_norm_eps\": \"x\"}",
                 "\"rms_norm_eps\" must be a number");
    expect_error(fx, "{" BASE ", \"hidden_size\": 8, \"num_attention_heads\": 2, \"tie_word_embeddings\": 1}",
                 "\"tie_word_embeddings\" must be true or false");
    expect_error(fx, "{" BASE ", \"hidden_size\": 10, \"num_attention_heads\": 4}",
                 "hidden_size (10) is not a multiple of num_attention_heads (4)");
    expect_error(fx, "{" BASE ", \"hidden_size\": 12, \"num_attention_heads\": 6, \"num_key_value_heads\": 4}",
                 "num_attention_heads (6) is not a multiple of num_key_value_heads (4)");
    expect_error(fx, "{" BASE ", \"hidden_size\": 12, \"num_attention_heads\": 4}", "head_dim (3) must be even");
    expect_error(fx, "{" BASE ", \"hidden_size\": -8, \"num_attention_heads\": 2}", "hidden_size must be positive");
    expect_error(fx, "{" BASE ", \"hidden_size\": 8, \"num_attention_heads\": 0}", "num_attention_heads");
    expect_error(fx, "{\"architectures\": [\"GPT2LMHeadModel\"], \"hidden_size\": 8}",
                 "unknown architecture GPT2LMHeadModel");
    expect_error(fx, "{\"model_type\": \"mistral\", \"hidden_size\": 8}", "unknown architecture mistral");
    expect_error(fx, "{" BASE ", \"hidden_size\": 8, \"num_attention_heads\": 2, \"earnest\": {\"template\": 3}}",
                 "\"earnest.template\" must be a template name");
    expect_error(fx, "{" BASE ", \"hidden_size\": 8, \"num_attention_heads\": 2, \"earnest\": {\"template\": \"Bad Name\"}}",
                 "\"earnest.template\"");
    expect_error(fx, "{\"hidden_size\": 8}", "\"architectures\"");
    expect_error(fx, "{" BASE ", \"hidden_size\": 8, \"num_attention_heads\": 2,"
                     " \"rope_scaling\": {\"type\": \"llama3\", \"factor\": 8.0}}", "\"rope_scaling\"");
    expect_error(fx, "{" BASE ", \"hidden_size\": 8, \"num_attention_heads\": 2,"
                     " \"rope_parameters\": {\"rope_type\": \"yarn\", \"rope_theta\": 1e4}}", "rope_parameters.rope_type");
    expect_error(fx, "{" BASE ", \"hidden_size\": 8, \"num_attention_heads\": 2, \"rope_parameters\": 3}",
                 "\"rope_parameters\" must be an object");
    expect_error(fx, "{" BASE ", \"hidden_size\": 8, \"num_attention_heads\": 2, \"hidden_act\": \"gelu\"}",
                 "\"hidden_act\" must be \"silu\"");
    expect_error(fx, "{" BASE ", \"hidden_size\": 8, \"num_attention_heads\": 2, \"attention_bias\": true}",
                 "attention_bias");
    expect_error(fx, "{\"architectures\": [\"LlamaForCausalLM\"], \"intermediate_size\": 16, \"num_hidden_layers\": 4,"
                     " \"vocab_size\": 1073741824, \"hidden_size\": 1073741824, \"num_attention_heads\": 2}",
                 "model sizes overflow");
    // EARN settings
    expect_error(fx, "{" BASE ", \"hidden_size\": 8, \"num_attention_heads\": 2,"
                     " \"earnest\": {\"method\": \"earn\", \"layer_split_k\": 4, \"prefix_regs\": 1}}",
                 "earnest.layer_split_k (4) must be in 1..3");
    expect_error(fx, "{" BASE ", \"hidden_size\": 8, \"num_attention_heads\": 2,"
                     " \"earnest\": {\"method\": \"earn\", \"layer_split_k\": 0, \"prefix_regs\": 1}}",
                 "earnest.layer_split_k (0) must be in 1..3");
    expect_error(fx, "{" BASE ", \"hidden_size\": 8, \"num_attention_heads\": 2,"
                     " \"earnest\": {\"method\": \"earn\", \"layer_split_k\": 2}}",
                 "earnest.prefix_regs + earnest.suffix_regs must be at least 1");
    expect_error(fx, "{" BASE ", \"hidden_size\": 8, \"num_attention_heads\": 2,"
                     " \"earnest\": {\"method\": \"earn\", \"layer_split_k\": 2, \"prefix_regs\": -1,"
                     " \"suffix_regs\": 3}}", "earnest.prefix_regs must be >= 0");
    expect_error(fx, "{" BASE ", \"hidden_size\": 8, \"num_attention_heads\": 2,"
                     " \"earnest\": {\"method\": \"lora\"}}", "unknown method \"lora\" (finetune, earn, skiplayers, gist, anllm, pod or compress500x)");
    expect_error(fx, "{" BASE ", \"hidden_size\": 8, \"num_attention_heads\": 2,"
                     " \"earnest\": {\"method\": \"finetune\", \"lora_rank\": 4}}",
                 "earnest.lora_rank = 4: LoRA adapters belong to compress500x models only");
    expect_error(fx, "{" BASE ", \"hidden_size\": 8, \"num_attention_heads\": 2,"
                     " \"earnest\": {\"method\": \"compress500x\", \"suffix_regs\": 2}}",
                 "a compress500x model needs earnest.lora_rank in 1..hidden_size (8)");
    expect_error(fx, "{" BASE ", \"hidden_size\": 8, \"num_attention_heads\": 2,"
                     " \"earnest\": {\"layer_split\": 2}}", "unknown field \"earnest.layer_split\"");
    expect_error(fx, "{" BASE ", \"hidden_size\": 8, \"num_attention_heads\": 2,"
                     " \"earnest\": {\"layer_split_k\": \"2\"}}", "\"earnest.layer_split_k\" must be an integer");
    // A valid EARN config passes.
    ModelConfig c;
    Error e;
    int rc = load_text(fx, "{" BASE ", \"hidden_size\": 8, \"num_attention_heads\": 2,"
                           " \"earnest\": {\"method\": \"earn\", \"layer_split_k\": 3, \"suffix_regs\": 2}}", &c, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(c.method, METHOD_EARN);
    assert_int_equal(c.layer_split_k, 3);
    assert_int_equal(c.n_suffix_regs, 2);
}

static void test_missing_file(void **state) {
    Fx *fx = *state;
    ModelConfig c;
    Error e;
    remove(fx->path);
    assert_int_equal(config_load(&c, fx->path, &e), -1);
    assert_true(st_fixture_contains(e.msg, fx->path));
    assert_true(st_fixture_contains(e.msg, "cannot open"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_llama_defaults, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_qwen2_real_shape, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_model_type_and_head_dim, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_save_load_round_trip, fx_setup, fx_teardown),
        cmocka_unit_test(test_method_names),
        cmocka_unit_test_setup_teardown(test_errors, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
