// tokenizer.h: llama2.c's tokenizer.bin (a SentencePiece BPE vocabulary with
// merge scores): encode text to ids and decode ids to text.
//
// File format (little-endian, as llama2.c writes it):
//   int32 max_token_length
//   vocab_size times: float32 score, int32 len, len bytes (the piece, no NUL)
// The file does not store vocab_size; the model's vocab_size is passed in, and
// a file with bytes left over after vocab_size pieces is rejected.
//
// Encoding follows llama2.c's run.c exactly: a dummy-prefix " " token for
// non-empty text, one token per UTF-8 codepoint found in the vocabulary
// (otherwise one byte token per byte, id = byte + 3), then repeatedly merge
// the adjacent pair whose concatenation is the best-scoring vocabulary piece.
#ifndef EARNEST_TOKENIZER_H
#define EARNEST_TOKENIZER_H

#include "runtime/util.h"

#define TOKENIZER_BOS 1
#define TOKENIZER_EOS 2
#define TOKENIZER_BYTE_OFFSET 3 // ids 3..258 are the byte pieces <0x00>..<0xFF>

typedef struct {
    int vocab_size;
    int max_token_length;
    char **vocab;     // [vocab_size] NUL-terminated pieces
    float *scores;    // [vocab_size] merge scores
    int *sorted_ids;  // [vocab_size] ids ordered by piece (strcmp, then id), for bsearch
    int max_piece_len; // longest piece actually present, in bytes
    char byte_pieces[256][2]; // decoded <0xNN> pieces: one byte + NUL
} Tokenizer;

// Loads tokenizer.bin for a model with vocab_size entries. Errors name the
// file, the token index and the field (truncated file, negative length, ...).
int tokenizer_load(Tokenizer *t, const char *path, int vocab_size, Error *e);
// The parser behind tokenizer_load, on the file's bytes already in memory (the
// fuzz harness calls it); `path` names the file in messages. A file too short
// for vocab_size tokens (8 bytes each at least) fails before any allocation.
int tokenizer_parse(Tokenizer *t, const void *data, size_t len, const char *path, int vocab_size, Error *e);
void tokenizer_free(Tokenizer *t);
// The id of piece `s` (exact match), or -1. With duplicate pieces, the lowest id.
int tokenizer_lookup(const Tokenizer *t, const char *s);
// ids: room for strlen(text) + 3; bos/eos: prepend 1 / append 2 as llama2.c does.
// Like llama2.c, a leading space is added to non-empty text.
int tokenizer_encode(const Tokenizer *t, const char *text, int bos, int eos, int *ids, int *n_ids, Error *e);
// The piece for `id` given the previous id (strips the leading space after BOS,
// maps <0xNN> to the raw byte). NULL when id is out of range.
const char *tokenizer_decode(const Tokenizer *t, int prev, int id);

#endif
