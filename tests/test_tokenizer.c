// test_tokenizer.c: the llama2.c tokenizer (runtime/tokenizer.c) against ids
// produced by llama2.c itself.
//
// Expected ids: karpathy/llama2.c run.c (commit 350e04f), built outside this
// repository with a small driver that calls its build_tokenizer() + encode(text,
// bos=1, eos=1) on tok512.bin (vocab 512) and prints the ids. The prompt's ids
// also match the ones `run stories260K.bin -z tok512.bin -t 0 -n 64 -i "Once
// upon a time"` encodes (printed by a debug line added to that copy only).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/tokenizer.h"

static char tok_path[4096];
static char tmp_dir[] = "/tmp/earnest_test_tok_XXXXXX";

static int setup(void **state) {
    (void)state;
    const char *shared = getenv("EARNEST_SHARED");
    if (!shared) {
        fprintf(stderr, "EARNEST_SHARED is not set (the path of the shared models/datasets mirror)\n");
        return -1;
    }
    snprintf(tok_path, sizeof tok_path, "%s/models/stories260K/tok512.bin", shared);
    if (!mkdtemp(tmp_dir)) return -1;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return remove_tree(tmp_dir);
}

static void load_tok512(Tokenizer *t) {
    Error e = {{0}};
    int rc = tokenizer_load(t, tok_path, 512, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(rc, 0);
}

typedef struct {
    const char *text;
    int n;
    int ids[24];
} EncodeCase;

// bos=1, eos=1; from llama2.c's encode() (see the top of the file).
static const EncodeCase CASES[] = {
    {"Once upon a time", 6, {1, 403, 407, 261, 378, 2}},
    {"", 2, {1, 2}},
    {"Lily's cat, Tom, ran 3 miles!", 19,
     {1, 317, 439, 419, 280, 294, 432, 274, 287, 432, 352, 303, 410, 472, 284, 290, 406, 443, 2}},
    // ï, é, ☃ and 🙂 are not pieces of this vocabulary: byte fallback (id = byte + 3).
    {"naïve café ☃ 🙂", 20,
     {1, 297, 412, 198, 178, 360, 280, 412, 431, 485, 410, 229, 155, 134, 410, 243, 162, 156, 133, 2}},
    {"  two  spaces", 13, {1, 410, 410, 259, 424, 414, 410, 262, 427, 412, 331, 419, 2}},
    {"tab\tnew\nline", 13, {1, 259, 412, 430, 12, 416, 411, 424, 13, 421, 271, 411, 2}},
};
#define N_CASES (sizeof CASES / sizeof CASES[0])

static void test_encode_matches_llama2c(void **state) {
    (void)state;
    Tokenizer t;
    load_tok512(&t);
    assert_int_equal(t.max_token_length, 7);
    for (size_t c = 0; c < N_CASES; c++) {
        int ids[64], n = -1;
        Error e = {{0}};
        assert_true(strlen(CASES[c].text) + 3 <= 64);
        assert_int_equal(tokenizer_encode(&t, CASES[c].text, 1, 1, ids, &n, &e), 0);
        if (n != CASES[c].n || memcmp(ids, CASES[c].ids, (size_t)n * sizeof(int))) {
            fprintf(stderr, "case \"%s\": got", CASES[c].text);
            for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
            fprintf(stderr, "\n");
        }
        assert_int_equal(n, CASES[c].n);
        assert_memory_equal(ids, CASES[c].ids, (size_t)n * sizeof(int));
    }
    // Without BOS/EOS: the same ids minus the first and the last.
    int ids[32], n;
    Error e = {{0}};
    assert_int_equal(tokenizer_encode(&t, "Once upon a time", 0, 0, ids, &n, &e), 0);
    assert_int_equal(n, 4);
    assert_memory_equal(ids, CASES[0].ids + 1, 4 * sizeof(int));
    tokenizer_free(&t);
}

static void test_lookup(void **state) {
    (void)state;
    Tokenizer t;
    load_tok512(&t);
    assert_int_equal(tokenizer_lookup(&t, "<unk>"), 0);
    assert_int_equal(tokenizer_lookup(&t, " "), 410);
    assert_int_equal(tokenizer_lookup(&t, "<0x41>"), 0x41 + TOKENIZER_BYTE_OFFSET);
    assert_int_equal(tokenizer_lookup(&t, "no such piece"), -1);
    // Every piece finds itself (the vocabulary has no duplicates).
    for (int i = 0; i < t.vocab_size; i++) assert_int_equal(tokenizer_lookup(&t, t.vocab[i]), i);
    tokenizer_free(&t);
}

// Decodes ids[1..n-1] (after BOS, before EOS) piece by piece into out.
static void decode_all(char *out, size_t cap, const Tokenizer *t, const int *ids, int n) {
    size_t len = 0;
    out[0] = '\0';
    for (int i = 1; i < n; i++) {
        if (ids[i] == TOKENIZER_EOS) break;
        const char *piece = tokenizer_decode(t, ids[i - 1], ids[i]);
        assert_non_null(piece);
        size_t pl = strlen(piece);
        assert_true(len + pl < cap);
        memcpy(out + len, piece, pl + 1);
        len += pl;
    }
}

static void test_decode_round_trip(void **state) {
    (void)state;
    Tokenizer t;
    load_tok512(&t);
    for (size_t c = 0; c < N_CASES; c++) {
        char out[256];
        decode_all(out, sizeof out, &t, CASES[c].ids, CASES[c].n);
        assert_string_equal(out, CASES[c].text);
    }
    // Byte pieces decode to the raw byte; the space is stripped only right after BOS.
    assert_string_equal(tokenizer_decode(&t, 1, 0xC3 + TOKENIZER_BYTE_OFFSET), "\xC3");
    assert_string_equal(tokenizer_decode(&t, 1, 410), "");
    assert_string_equal(tokenizer_decode(&t, 5, 410), " ");
    assert_null(tokenizer_decode(&t, 1, 512));
    assert_null(tokenizer_decode(&t, 1, -1));
    // Round trip of text the tests did not hand-encode, including 2-, 3- and 4-byte codepoints.
    const char *more[] = {"Zoë and Chloé ate crème brûlée.", "日本語のテキスト", "emoji 🙂🙃 end", "a", "x\xC3"};
    for (size_t c = 0; c < sizeof more / sizeof more[0]; c++) {
        int ids[128], n;
        Error e = {{0}};
        assert_int_equal(tokenizer_encode(&t, more[c], 1, 1, ids, &n, &e), 0);
        assert_true(n <= (int)strlen(more[c]) + 3);
        char out[256];
        decode_all(out, sizeof out, &t, ids, n);
        assert_string_equal(out, more[c]);
    }
    tokenizer_free(&t);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

// Loading `path` with vocab_size fails with a message holding every needle.
static void expect_load_error(const char *path, int vocab_size, const char *needle1, const char *needle2) {
    Tokenizer t;
    Error e = {{0}};
    assert_int_equal(tokenizer_load(&t, path, vocab_size, &e), -1);
    if (!strstr(e.msg, path) || !strstr(e.msg, needle1) || (needle2 && !strstr(e.msg, needle2)))
        fprintf(stderr, "unexpected message: %s\n", e.msg);
    assert_non_null(strstr(e.msg, path));
    assert_non_null(strstr(e.msg, needle1));
    if (needle2) assert_non_null(strstr(e.msg, needle2));
    assert_null(t.vocab); // nothing left allocated
}

static void test_bad_files(void **state) {
    (void)state;
    char *data;
    size_t len;
    Error e = {{0}};
    assert_int_equal(file_read_all(tok_path, &data, &len, &e), 0);
    assert_int_equal(len, 6227);
    char path[4200];

    snprintf(path, sizeof path, "%s/missing.bin", tmp_dir);
    expect_load_error(path, 512, "cannot open", NULL);

    // Cut in the middle of the piece list (offset 3000 is inside some token's fields).
    snprintf(path, sizeof path, "%s/truncated.bin", tmp_dir);
    write_bytes(path, data, 3000);
    expect_load_error(path, 512, "truncated", "token");
    write_bytes(path, data, 2);
    expect_load_error(path, 512, "truncated", "max_token_length");

    // Token 0's length field (bytes 8..11) set to -5.
    snprintf(path, sizeof path, "%s/negative.bin", tmp_dir);
    char *bad = malloc(len);
    assert_non_null(bad);
    memcpy(bad, data, len);
    int32_t neg = -5;
    memcpy(bad + 8, &neg, 4);
    write_bytes(path, bad, len);
    expect_load_error(path, 512, "token 0", "length -5");

    // A length over max_token_length.
    int32_t big = 1000;
    memcpy(bad, data, len);
    memcpy(bad + 8, &big, 4);
    write_bytes(path, bad, len);
    expect_load_error(path, 512, "token 0", "length 1000");

    // max_token_length of 0.
    int32_t zero = 0;
    memcpy(bad, data, len);
    memcpy(bad, &zero, 4);
    write_bytes(path, bad, len);
    expect_load_error(path, 512, "max_token_length", NULL);

    // Vocabulary size mismatches: the file holds 512 pieces.
    expect_load_error(tok_path, 511, "bytes left", "511");
    expect_load_error(tok_path, 513, "truncated", "token 512");
    free(bad);
    free(data);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_matches_llama2c),
        cmocka_unit_test(test_lookup),
        cmocka_unit_test(test_decode_round_trip),
        cmocka_unit_test(test_bad_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
