// test_vocab_prompt.c: the word-level vocabulary (layout, lookups, kinds,
// save/load round trip, bad vocab.txt files) and the prompt builder (tokens and
// kinds of both templates, lengths without building).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "datasets/dataset.h"
#include "datasets/prompt.h"
#include "datasets/vocab.h"
#include "helpers/st_fixture.h"

// An in-memory dataset: 6 items, 3 levels of 3/4/5 codes (no splits needed).
static const int CODES[7][3] = {{-1, -1, -1}, {0, 1, 2}, {0, 1, 3}, {1, 0, 0}, {0, 1, 2}, {2, 3, 4}, {1, 2, 0}};

static void tiny_dataset(Dataset *d) {
    memset(d, 0, sizeof *d);
    d->n_users = 1;
    d->n_items = 6;
    d->code_levels = 3;
    d->codes_per_level[0] = 3;
    d->codes_per_level[1] = 4;
    d->codes_per_level[2] = 5;
    d->codes = (int *)&CODES[0][0];
}

static void build_vocab(Vocab *v, const Dataset *d, int P, int S) {
    Error e = {{0}};
    int rc = prompt_vocab_build(v, d, P, S, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(rc, 0);
}

// The LC-Rec template split by hand (prompt.h's rule), the reference for the builder.
static const char *LCREC_BEFORE_WORDS =
    "Below is an instruction that describes a task . Write a response that appropriately completes the request "
    ". ### Instruction : The user has interacted with items";
static const char *LCREC_AFTER_WORDS =
    "in chronological order . Can you predict the next possible item that the user may expect ? ### Response :";

static int count_spaces_plus1(const char *s) {
    int n = 1;
    for (; *s; s++) n += *s == ' ';
    return n;
}

static void test_vocab_layout(void **state) {
    (void)state;
    Dataset d;
    tiny_dataset(&d);
    Vocab v;
    build_vocab(&v, &d, 8, 6);
    assert_int_equal(v.pad, 0);
    assert_int_equal(v.bos, 1);
    assert_int_equal(v.eos, 2);
    assert_int_equal(v.unk, 3);
    assert_int_equal(v.n_reg_pre, 8);
    assert_int_equal(v.n_reg_suf, 6);
    assert_int_equal(vocab_id(&v, "<reg_pre_0>"), 4);
    assert_int_equal(vocab_id(&v, "<reg_pre_7>"), 11);
    assert_int_equal(vocab_id(&v, "<reg_suf_0>"), 12);
    assert_int_equal(vocab_id(&v, "<reg_suf_5>"), 17);
    assert_int_equal(vocab_id(&v, "Below"), 18);
    assert_int_equal(vocab_id(&v, "<reg_suf_6>"), -1);
    assert_int_equal(vocab_id(&v, "below"), -1);   // case-sensitive
    // Distinct template words: count them by hand from the split text.
    const char *all[] = {LCREC_BEFORE_WORDS, LCREC_AFTER_WORDS, ","};
    char seen[128][32];
    int n_words = 0;
    for (int k = 0; k < 3; k++) {
        char buf[512];
        snprintf(buf, sizeof buf, "%s", all[k]);
        for (char *w = strtok(buf, " "); w; w = strtok(NULL, " ")) {
            int dup = 0;
            for (int i = 0; i < n_words; i++) dup |= !strcmp(seen[i], w);
            if (!dup) snprintf(seen[n_words++], 32, "%s", w);
        }
    }
    for (int i = 0; i < n_words; i++) {
        int id = vocab_id(&v, seen[i]);
        assert_int_equal(id, 18 + i);   // first-appearance order
        assert_int_equal(v.kind[id], VOCAB_WORD);
    }
    int first_code = 18 + n_words;
    assert_int_equal(v.size, first_code + 3 + 4 + 5);
    assert_int_equal(vocab_id(&v, "<a_0>"), first_code);
    assert_int_equal(vocab_code_id(&v, 1, 2), first_code + 3 + 2);
    assert_int_equal(vocab_code_id(&v, 2, 4), first_code + 3 + 4 + 4);
    assert_int_equal(vocab_code_id(&v, 2, 5), -1);
    assert_int_equal(vocab_code_id(&v, 3, 0), -1);
    assert_int_equal(v.code_levels, 3);
    // Kinds and string lookups for every token.
    for (int id = 0; id < v.size; id++) {
        assert_int_equal(vocab_id(&v, vocab_token(&v, id)), id);
        const char *t = vocab_token(&v, id);
        if (id < 4) assert_int_equal(v.kind[id], VOCAB_SPECIAL);
        else if (id < 12) { assert_int_equal(v.kind[id], VOCAB_REG_PRE); assert_int_equal(v.index[id], id - 4); }
        else if (id < 18) { assert_int_equal(v.kind[id], VOCAB_REG_SUF); assert_int_equal(v.index[id], id - 12); }
        else if (id >= first_code) {
            assert_int_equal(v.kind[id], VOCAB_CODE);
            char want[32];
            snprintf(want, sizeof want, "<%c_%d>", 'a' + v.level[id], v.index[id]);
            assert_string_equal(t, want);
        }
    }
    assert_string_equal(vocab_token(&v, -1), "?");
    assert_string_equal(vocab_token(&v, v.size), "?");
    vocab_free(&v);
}

static void test_vocab_save_load(void **state) {
    (void)state;
    Dataset d;
    tiny_dataset(&d);
    Vocab v, w;
    build_vocab(&v, &d, 2, 3);
    char *dir = st_fixture_tmpdir();
    char path[4200];
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    Error e = {{0}};
    assert_int_equal(vocab_save(&v, path, &e), 0);
    assert_int_equal(vocab_load(&w, path, &e), 0);
    assert_int_equal(w.size, v.size);
    for (int i = 0; i < v.size; i++) {
        assert_string_equal(w.tokens[i], v.tokens[i]);
        assert_int_equal(w.kind[i], v.kind[i]);
        assert_int_equal(w.level[i], v.level[i]);
        assert_int_equal(w.index[i], v.index[i]);
    }
    assert_int_equal(w.n_reg_pre, 2);
    assert_int_equal(w.n_reg_suf, 3);
    assert_int_equal(w.codes_per_level[1], 4);
    vocab_free(&w);

    // A hand-written vocabulary in another order: kinds come from spellings.
    st_fixture_write_text(path, "<unk>\n<b_1>\nhello\n<pad>\n<reg_suf_0>\n<eos>\n<bos>\n<a_0>\n<b_0>\n");
    assert_int_equal(vocab_load(&w, path, &e), 0);
    assert_int_equal(w.unk, 0);
    assert_int_equal(w.pad, 3);
    assert_int_equal(w.n_reg_pre, 0);
    assert_int_equal(w.n_reg_suf, 1);
    assert_int_equal(w.reg_suf[0], 4);
    assert_int_equal(vocab_code_id(&w, 1, 1), 1);
    assert_int_equal(vocab_code_id(&w, 0, 0), 7);
    assert_int_equal(w.kind[2], VOCAB_WORD);
    vocab_free(&w);

    static const struct { const char *text, *want; } bad[] = {
        {"", "empty file"},
        {"<pad>\n<bos>\n<eos>\n<unk>\nfoo\n<a_1>\nfoo\n", ":7: token 'foo' duplicates line 5"},
        {"<pad>\n<bos>\n\n<eos>\n<unk>\n", ":3: empty line"},
        {"<pad>\n<bos>\n<eos>\n<unk>\nfoo bar\n", ":5: token contains a blank"},
        {"<pad>\n<bos>\n<eos>\nfoo\n", "special token <unk> missing"},
        {"<pad>\n<bos>\n<eos>\n<unk>\n<reg_pre_0>\n<reg_pre_2>\n", "<reg_pre_1> missing"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        st_fixture_write_text(path, bad[i].text);
        assert_int_equal(vocab_load(&w, path, &e), -1);
        assert_true(st_fixture_contains(e.msg, "vocab.txt"));
        assert_true(st_fixture_contains(e.msg, bad[i].want));
    }
    assert_int_equal(vocab_load(&w, "/nonexistent/vocab.txt", &e), -1);
    vocab_free(&v);
    remove_tree(dir);
    free(dir);
}

static void test_vocab_build_errors(void **state) {
    (void)state;
    Vocab v;
    Error e = {{0}};
    int cpl[2] = {4, 4};
    const char *bad_words[] = {"ok", "<a_3>"};
    VocabSpec spec = {.code_levels = 2, .codes_per_level = cpl, .n_reg_pre = 1, .n_reg_suf = 1,
                      .words = bad_words, .n_words = 2};
    assert_int_equal(vocab_build(&v, &spec, &e), -1);
    assert_true(st_fixture_contains(e.msg, "'<a_3>'"));
    const char *blank[] = {"two words"};
    spec.words = blank;
    spec.n_words = 1;
    assert_int_equal(vocab_build(&v, &spec, &e), -1);
    assert_true(st_fixture_contains(e.msg, "blanks"));
    spec.n_words = 0;
    spec.n_reg_pre = -1;
    assert_int_equal(vocab_build(&v, &spec, &e), -1);
}

// Builds the expected token strings of a prompt from the hand-split template.
static void expect_lcrec(char *out, size_t n, int P, int S, const int *hist, int n_hist, int target) {
    size_t k = 0;
    k += (size_t)snprintf(out + k, n - k, "<bos>");
    for (int i = 0; i < P; i++) k += (size_t)snprintf(out + k, n - k, " <reg_pre_%d>", i);
    k += (size_t)snprintf(out + k, n - k, " %s", LCREC_BEFORE_WORDS);
    for (int h = 0; h < n_hist; h++) {
        const int *c = CODES[hist[h]];
        k += (size_t)snprintf(out + k, n - k, "%s <a_%d> <b_%d> <c_%d>", h ? " ," : "", c[0], c[1], c[2]);
    }
    k += (size_t)snprintf(out + k, n - k, " %s", LCREC_AFTER_WORDS);
    for (int i = 0; i < S; i++) k += (size_t)snprintf(out + k, n - k, " <reg_suf_%d>", i);
    if (target) {
        const int *c = CODES[target];
        snprintf(out + k, n - k, " <a_%d> <b_%d> <c_%d>", c[0], c[1], c[2]);
    }
}

static void test_prompt_lcrec(void **state) {
    (void)state;
    Dataset d;
    tiny_dataset(&d);
    Vocab v;
    build_vocab(&v, &d, 8, 8);
    Prompter p;
    Error e = {{0}};
    assert_int_equal(prompter_init(&p, &v, &d, PROMPT_TEMPLATE_LCREC, 2, 3, &e), 0);
    int n_before = count_spaces_plus1(LCREC_BEFORE_WORDS), n_after = count_spaces_plus1(LCREC_AFTER_WORDS);
    assert_int_equal(n_before, 27);
    assert_int_equal(n_after, 20);
    int hist[3] = {1, 3, 4};
    int tokens[256];
    uint8_t kinds[256];
    char got[4096], want[4096];
    for (int nh = 0; nh <= 3; nh++)
        for (int target = 0; target <= 5; target += 5) {
            int n = prompter_build(tokens, kinds, &p, hist, nh, target);
            // Length: <bos> + P + words + history (3 codes each, "," between) + S + target.
            int want_n = 1 + 2 + n_before + 3 * nh + (nh > 0 ? nh - 1 : 0) + n_after + 3 + (target ? 3 : 0);
            assert_int_equal(n, want_n);
            assert_int_equal(prompter_length(&p, nh, target > 0), want_n);
            assert_int_equal(prompt_length(PROMPT_TEMPLATE_LCREC, 2, 3, 3, nh, target > 0), want_n);
            vocab_decode(got, sizeof got, &v, tokens, n);
            expect_lcrec(want, sizeof want, 2, 3, hist, nh, target);
            assert_string_equal(got, want);
            // Kinds, position by position.
            int at = 0;
            assert_int_equal(kinds[at++], TOKEN_KIND_SPECIAL);
            for (int i = 0; i < 2; i++) assert_int_equal(kinds[at++], TOKEN_KIND_PREFIX_REG);
            for (int i = 0; i < n_before; i++) assert_int_equal(kinds[at++], TOKEN_KIND_INSTRUCTION);
            for (int i = 0; i < 3 * nh + (nh > 0 ? nh - 1 : 0); i++) assert_int_equal(kinds[at++], TOKEN_KIND_HISTORY);
            for (int i = 0; i < n_after; i++) assert_int_equal(kinds[at++], TOKEN_KIND_INSTRUCTION);
            for (int i = 0; i < 3; i++) assert_int_equal(kinds[at++], TOKEN_KIND_SUFFIX_REG);
            for (int i = 0; i < (target ? 3 : 0); i++) assert_int_equal(kinds[at++], TOKEN_KIND_TARGET);
            assert_int_equal(at, n);
        }
    prompter_free(&p);
    vocab_free(&v);
}

static void test_prompt_tiger(void **state) {
    (void)state;
    Dataset d;
    tiny_dataset(&d);
    Vocab v;
    build_vocab(&v, &d, 4, 4);
    Prompter p;
    Error e = {{0}};
    assert_int_equal(prompter_init(&p, &v, &d, PROMPT_TEMPLATE_TIGER, 1, 2, &e), 0);
    int tokens[64];
    uint8_t kinds[64];
    char got[1024];
    int n = prompter_build(tokens, kinds, &p, (int[]){5, 2}, 2, 6);
    vocab_decode(got, sizeof got, &v, tokens, n);
    assert_string_equal(got, "<bos> <reg_pre_0> <a_2> <b_3> <c_4> <a_0> <b_1> <c_3> <reg_suf_0> <reg_suf_1> "
                             "<a_1> <b_2> <c_0>");
    static const uint8_t want_kinds[13] = {0, 1, 3, 3, 3, 3, 3, 3, 4, 4, 5, 5, 5};
    assert_int_equal(n, 13);
    assert_memory_equal(kinds, want_kinds, 13);
    assert_int_equal(prompter_length(&p, 2, 1), 13);
    assert_int_equal(prompt_length(PROMPT_TEMPLATE_TIGER, 1, 2, 3, 2, 1), 13);
    // No registers, no history, no target: just <bos>.
    prompter_free(&p);
    assert_int_equal(prompter_init(&p, &v, &d, PROMPT_TEMPLATE_TIGER, 0, 0, &e), 0);
    assert_int_equal(prompter_build(tokens, kinds, &p, NULL, 0, 0), 1);
    assert_int_equal(tokens[0], v.bos);
    prompter_free(&p);
    vocab_free(&v);
}

// The method forms: AnLLM's anchors and POD's prompt without instruction words,
// as decoded text, kinds and lengths; prompter_length_plain is the plain prompt.
static void test_prompt_forms(void **state) {
    (void)state;
    Dataset d;
    tiny_dataset(&d);
    Vocab v;
    build_vocab(&v, &d, 4, 4);
    Prompter p;
    Error e = {{0}};
    int tokens[256];
    uint8_t kinds[256];
    char got[4096];
    assert_int_equal(prompter_init_form(&p, &v, &d, PROMPT_TEMPLATE_TIGER, 0, 0, PROMPT_FORM_ANCHORS, &e), 0);
    int n = prompter_build(tokens, kinds, &p, (int[]){5, 2}, 2, 6);
    vocab_decode(got, sizeof got, &v, tokens, n);
    assert_string_equal(got, "<bos> <a_2> <b_3> <c_4> <reg_suf_0> <a_0> <b_1> <c_3> <reg_suf_0> <a_1> <b_2> <c_0>");
    static const uint8_t want_kinds[12] = {0, 3, 3, 3, 4, 3, 3, 3, 4, 5, 5, 5};
    assert_int_equal(n, 12);
    assert_memory_equal(kinds, want_kinds, 12);
    assert_int_equal(prompter_length(&p, 2, 1), 12);
    assert_int_equal(prompter_length_plain(&p, 2), 7);
    prompter_free(&p);
    // LC-Rec: the anchor sits before the "," that follows its item.
    assert_int_equal(prompter_init_form(&p, &v, &d, PROMPT_TEMPLATE_LCREC, 0, 0, PROMPT_FORM_ANCHORS, &e), 0);
    n = prompter_build(tokens, kinds, &p, (int[]){5, 2}, 2, 0);
    vocab_decode(got, sizeof got, &v, tokens, n);
    assert_true(st_fixture_contains(got, "items <a_2> <b_3> <c_4> <reg_suf_0> , <a_0> <b_1> <c_3> <reg_suf_0> in "));
    assert_int_equal(n, 1 + 47 + 2 * 3 + 1 + 2);
    assert_int_equal(prompter_length(&p, 2, 0), n);
    assert_int_equal(prompter_length_plain(&p, 2), n - 2);
    prompter_free(&p);
    // POD: <bos>, the soft prompt, the history; no instruction word.
    assert_int_equal(prompter_init_form(&p, &v, &d, PROMPT_TEMPLATE_LCREC, 3, 0, PROMPT_FORM_NO_WORDS, &e), 0);
    n = prompter_build(tokens, kinds, &p, (int[]){5, 2}, 2, 6);
    vocab_decode(got, sizeof got, &v, tokens, n);
    assert_string_equal(got, "<bos> <reg_pre_0> <reg_pre_1> <reg_pre_2> <a_2> <b_3> <c_4> , <a_0> <b_1> <c_3> "
                             "<a_1> <b_2> <c_0>");
    for (int i = 0; i < n; i++) assert_int_not_equal(kinds[i], TOKEN_KIND_INSTRUCTION);
    assert_int_equal(prompter_length(&p, 2, 1), n);
    assert_int_equal(prompter_length_plain(&p, 2), 1 + 47 + 7);
    prompter_free(&p);
    // Anchors take no other suffix register.
    assert_int_equal(prompter_init_form(&p, &v, &d, PROMPT_TEMPLATE_TIGER, 0, 1, PROMPT_FORM_ANCHORS, &e), -1);
    assert_true(st_fixture_contains(e.msg, "anchors are the vocabulary's <reg_suf_0>"));
    assert_int_equal(prompt_form_for_method(METHOD_ANLLM), PROMPT_FORM_ANCHORS);
    assert_int_equal(prompt_form_for_method(METHOD_POD), PROMPT_FORM_NO_WORDS);
    assert_int_equal(prompt_form_for_method(METHOD_GIST), PROMPT_FORM_PLAIN);
    vocab_free(&v);
}

static void test_prompter_errors(void **state) {
    (void)state;
    Dataset d;
    tiny_dataset(&d);
    Vocab v;
    build_vocab(&v, &d, 2, 2);
    Prompter p;
    Error e = {{0}};
    assert_int_equal(prompter_init(&p, &v, &d, PROMPT_TEMPLATE_LCREC, 3, 2, &e), -1);
    assert_true(st_fixture_contains(e.msg, "3 prefix / 2 suffix registers asked, the vocabulary has 2 / 2"));
    vocab_free(&v);
    // A vocabulary made for a dataset with fewer codes in level c.
    Dataset small = d;
    small.codes_per_level[2] = 4;
    build_vocab(&v, &small, 2, 2);
    assert_int_equal(prompter_init(&p, &v, &d, PROMPT_TEMPLATE_TIGER, 1, 1, &e), -1);
    assert_true(st_fixture_contains(e.msg, "no token <c_4> (item 5's code)"));
    vocab_free(&v);
    // A vocabulary without the template words cannot build LC-Rec prompts.
    int cpl[3] = {3, 4, 5};
    VocabSpec spec = {.code_levels = 3, .codes_per_level = cpl, .n_reg_pre = 1, .n_reg_suf = 1};
    assert_int_equal(vocab_build(&v, &spec, &e), 0);
    assert_int_equal(prompter_init(&p, &v, &d, PROMPT_TEMPLATE_TIGER, 1, 1, &e), 0);
    prompter_free(&p);
    assert_int_equal(prompter_init(&p, &v, &d, PROMPT_TEMPLATE_LCREC, 1, 1, &e), -1);
    assert_true(st_fixture_contains(e.msg, "no template word 'Below'"));
    vocab_free(&v);
    PromptTemplate t;
    assert_int_equal(prompt_template_parse("tiger", &t), 0);
    assert_int_equal(t, PROMPT_TEMPLATE_TIGER);
    assert_int_equal(prompt_template_parse("lcrec", &t), 0);
    assert_int_equal(t, PROMPT_TEMPLATE_LCREC);
    assert_int_equal(prompt_template_parse("llama", &t), -1);
    assert_string_equal(prompt_template_name(PROMPT_TEMPLATE_TIGER), "tiger");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vocab_layout),
        cmocka_unit_test(test_vocab_save_load),
        cmocka_unit_test(test_vocab_build_errors),
        cmocka_unit_test(test_prompt_lcrec),
        cmocka_unit_test(test_prompt_tiger),
        cmocka_unit_test(test_prompt_forms),
        cmocka_unit_test(test_prompter_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
