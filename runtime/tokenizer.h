// tokenizer.h: llama2.c's tokenizer.bin (a SentencePiece BPE vocabulary with
// merge scores): encode text to ids and decode ids to text.
#ifndef EARNEST_TOKENIZER_H
#define EARNEST_TOKENIZER_H

#include "runtime/util.h"

typedef struct {
    int vocab_size;
    int max_token_length;
    char **vocab;     // [vocab_size] NUL-terminated pieces
    float *scores;    // [vocab_size] merge scores
} Tokenizer;

int tokenizer_load(Tokenizer *t, const char *path, int vocab_size, Error *e);
void tokenizer_free(Tokenizer *t);
// ids: room for strlen(text) + 3; bos/eos: prepend 1 / append 2 as llama2.c does.
// Like llama2.c, a leading space is added to non-empty text.
int tokenizer_encode(const Tokenizer *t, const char *text, int bos, int eos, int *ids, int *n_ids, Error *e);
// The piece for `id` given the previous id (strips the leading space after BOS, maps <0xNN>).
const char *tokenizer_decode(const Tokenizer *t, int prev, int id);

#endif
