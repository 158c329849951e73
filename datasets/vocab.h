// vocab.h: the word-level vocabulary of the models earnest trains.
//
// Ids, in the order vocab_build assigns them:
//   special tokens   <pad> <bos> <eos> <unk>                     (0, 1, 2, 3)
//   register tokens  <reg_pre_0> .. <reg_pre_{P-1}>, <reg_suf_0> .. <reg_suf_{S-1}>
//                    (P, S: the most registers any model on this vocabulary may use)
//   template words   the words of the prompt templates (see prompt.h for the
//                    word-splitting rule), first appearance order, no duplicates
//   code tokens      <a_0> .. <a_{n0-1}>, <b_0> .. , ... one block per level
// Saved as vocab.txt in a model directory: one token per line, the first line
// is id 0. A loaded vocabulary recovers each token's kind from its spelling,
// so it need not follow the order above.
#ifndef EARNEST_VOCAB_H
#define EARNEST_VOCAB_H

#include <stdint.h>

#include "datasets/dataset.h"
#include "runtime/util.h"

#define VOCAB_MAX_TOKEN_LEN 256
#define VOCAB_MAX_REGS 1024
#define VOCAB_DEFAULT_REGS 8   // registers of each side a vocabulary reserves unless told otherwise

typedef enum {
    VOCAB_SPECIAL = 0,   // <pad> <bos> <eos> <unk>
    VOCAB_REG_PRE = 1,   // <reg_pre_i>
    VOCAB_REG_SUF = 2,   // <reg_suf_i>
    VOCAB_WORD = 3,      // a template word
    VOCAB_CODE = 4,      // <x_i>: a semantic-ID token of level x - 'a'
} VocabKind;

typedef struct {
    int size;
    char **tokens;      // [size] NUL-terminated spellings
    uint8_t *kind;      // [size] VocabKind
    int *level;         // [size] code level for VOCAB_CODE, else -1
    int *index;         // [size] code index within its level, or register number; else -1
    int pad, bos, eos, unk;
    int n_reg_pre, n_reg_suf;
    int *reg_pre;       // [n_reg_pre] id of <reg_pre_i>
    int *reg_suf;       // [n_reg_suf] id of <reg_suf_i>
    int code_levels;                           // levels with at least one code token
    int codes_per_level[DATASET_MAX_LEVELS];   // largest index seen + 1
    int *code_ids[DATASET_MAX_LEVELS];         // [codes_per_level[j]] id of <x_i>, or -1 if absent
    size_t hash_cap;    // power of two, > 2 * size
    int *hash;          // [hash_cap] open addressing on the spelling; -1 empty
} Vocab;

typedef struct {
    int code_levels;
    const int *codes_per_level;   // [code_levels]
    int n_reg_pre, n_reg_suf;     // register tokens to reserve (the most any model will use)
    const char *const *words;     // [n_words] template words (duplicates are skipped)
    int n_words;
} VocabSpec;

// Fails only on a bad spec (a word that is empty, has blanks or looks like a
// special/register/code token; counts out of range).
int vocab_build(Vocab *v, const VocabSpec *spec, Error *e);
// The vocabulary of a checkpoint made elsewhere (a converted llama2.c model)
// grown for earnest prompts: "<orig_i>" for its n_orig tokens (ids kept, the
// prompts do not use them), then every token of `tail`.
int vocab_grow(Vocab *v, int n_orig, const Vocab *tail, Error *e);
int vocab_load(Vocab *v, const char *path, Error *e);
// The parser behind vocab_load, on the file's text already in memory (not
// NUL-terminated; the fuzz harness calls it). `path` names the file in messages.
int vocab_parse(Vocab *v, const char *text, size_t len, const char *path, Error *e);
int vocab_save(const Vocab *v, const char *path, Error *e);   // atomic
void vocab_free(Vocab *v);

int vocab_id(const Vocab *v, const char *token);              // -1 if absent
const char *vocab_token(const Vocab *v, int id);              // "?" if out of range
int vocab_code_id(const Vocab *v, int level, int index);      // -1 if absent

// Each item's code as token ids: out [(n_items + 1) * code_levels], row 0 = -1.
// Fails when the vocabulary lacks a code token the dataset uses (a model made
// for another dataset).
int vocab_item_tokens(int *out, const Vocab *v, const Dataset *d, Error *e);

// A generated item code as its string: the spellings of `levels` token ids
// concatenated ("<a_58><b_241><c_151><d_175>"), the form rankings and metrics
// compare. out holds DATASET_CODE_STR_MAX; a code that would not fit stops at
// the last whole token. Returns the length.
int vocab_code_string(char *out, const Vocab *v, const int *tokens, int levels);

// Token spellings joined by spaces (for messages and tests); truncated to n.
void vocab_decode(char *out, size_t n, const Vocab *v, const int *ids, int n_ids);

#endif
