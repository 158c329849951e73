// tokenizer.c: see tokenizer.h. Behaviour matches llama2.c's run.c (encode,
// decode); the code is our own.
#include "runtime/tokenizer.h"

#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------
// Loading

typedef struct {
    const char *piece;
    int id;
} PieceId;

static int piece_id_cmp(const void *a, const void *b) {
    const PieceId *x = a, *y = b;
    int c = strcmp(x->piece, y->piece);
    if (c) return c;
    return (x->id > y->id) - (x->id < y->id); // duplicates: lowest id first
}

// A read cursor over the file's bytes.
typedef struct {
    const uint8_t *p;
    size_t len, pos;
    const char *path;
} Cursor;

// Copies exactly n bytes or fails with a message naming the file, token and field.
static int read_exact(void *dst, size_t n, Cursor *c, int token, const char *field, Error *e) {
    if (n <= c->len - c->pos) {
        if (n) memcpy(dst, c->p + c->pos, n);
        c->pos += n;
        return 0;
    }
    if (token < 0) return err_set(e, "%s: truncated file: missing %s", c->path, field);
    return err_set(e, "%s: truncated file at token %d: missing %s", c->path, token, field);
}

// Reads the pieces and scores of t->vocab_size tokens (t->vocab, t->scores allocated).
static int parse_pieces(Tokenizer *t, Cursor *c, Error *e) {
    int32_t max_len = 0;
    if (read_exact(&max_len, sizeof max_len, c, -1, "max_token_length", e)) return -1;
    // 64 KiB is far beyond any SentencePiece piece; a larger value is a corrupt file.
    if (max_len <= 0 || max_len > 65536)
        return err_set(e, "%s: max_token_length %d out of range (1..65536)", c->path, (int)max_len);
    t->max_token_length = max_len;
    for (int i = 0; i < t->vocab_size; i++) {
        int32_t len = 0;
        if (read_exact(&t->scores[i], sizeof(float), c, i, "score", e)) return -1;
        if (read_exact(&len, sizeof len, c, i, "length", e)) return -1;
        if (len < 0 || len > max_len)
            return err_set(e, "%s: token %d: length %d out of range (0..max_token_length=%d)", c->path, i,
                           (int)len, (int)max_len);
        t->vocab[i] = xmalloc((size_t)len + 1);
        if (read_exact(t->vocab[i], (size_t)len, c, i, "piece bytes", e)) return -1;
        t->vocab[i][len] = '\0';
        // Pieces are C strings from here on: an embedded NUL would silently cut one short.
        if (strlen(t->vocab[i]) != (size_t)len)
            return err_set(e, "%s: token %d: piece contains a NUL byte", c->path, i);
        if (len > t->max_piece_len) t->max_piece_len = len;
    }
    // The file does not record vocab_size; leftover bytes mean it belongs to another model.
    if (c->pos != c->len)
        return err_set(e, "%s: bytes left after %d tokens: the tokenizer's vocabulary is larger than the model's "
                       "vocab_size %d", c->path, t->vocab_size, t->vocab_size);
    return 0;
}

int tokenizer_parse(Tokenizer *t, const void *data, size_t len, const char *path, int vocab_size, Error *e) {
    memset(t, 0, sizeof *t);
    if (vocab_size <= TOKENIZER_EOS)
        return err_set(e, "%s: vocab_size %d is too small for a tokenizer (needs <unk>, <s>, </s>)", path,
                       vocab_size);
    // Every token takes at least 8 bytes (score, length): a shorter file cannot
    // hold vocab_size of them, so nothing is allocated for it.
    if (len < 4) return err_set(e, "%s: truncated file: missing max_token_length", path);
    if ((len - 4) / 8 < (size_t)vocab_size)
        return err_set(e, "%s: truncated file: %zu bytes cannot hold the model's vocab_size %d tokens (8 bytes "
                       "each at least)", path, len, vocab_size);
    Cursor c = {data, len, 0, path};
    t->vocab_size = vocab_size;
    t->vocab = xcalloc((size_t)vocab_size, sizeof(char *));
    t->scores = xmalloc((size_t)vocab_size * sizeof(float));
    if (parse_pieces(t, &c, e)) {
        tokenizer_free(t);
        return -1;
    }
    PieceId *order = xmalloc((size_t)vocab_size * sizeof(PieceId));
    for (int i = 0; i < vocab_size; i++) order[i] = (PieceId){t->vocab[i], i};
    qsort(order, (size_t)vocab_size, sizeof(PieceId), piece_id_cmp);
    t->sorted_ids = xmalloc((size_t)vocab_size * sizeof(int));
    for (int i = 0; i < vocab_size; i++) t->sorted_ids[i] = order[i].id;
    free(order);

    for (int b = 0; b < 256; b++) {
        t->byte_pieces[b][0] = (char)b;
        t->byte_pieces[b][1] = '\0';
    }
    return 0;
}

int tokenizer_load(Tokenizer *t, const char *path, int vocab_size, Error *e) {
    memset(t, 0, sizeof *t);
    char *data;
    size_t len;
    if (file_read_all(path, &data, &len, e)) return -1;
    int rc = tokenizer_parse(t, data, len, path, vocab_size, e);
    free(data);
    return rc;
}

void tokenizer_free(Tokenizer *t) {
    if (t->vocab)
        for (int i = 0; i < t->vocab_size; i++) free(t->vocab[i]);
    free(t->vocab);
    free(t->scores);
    free(t->sorted_ids);
    memset(t, 0, sizeof *t);
}

// Binary search (lower bound) over the sorted vocabulary.
int tokenizer_lookup(const Tokenizer *t, const char *s) {
    int lo = 0, hi = t->vocab_size; // answer in [lo, hi]
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (strcmp(t->vocab[t->sorted_ids[mid]], s) < 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo < t->vocab_size && strcmp(t->vocab[t->sorted_ids[lo]], s) == 0) return t->sorted_ids[lo];
    return -1;
}

// ---------------------------------------------------------------------------
// Encoding

static int is_utf8_continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

// Splits text into tokens: one per UTF-8 codepoint that is a vocabulary piece,
// else one byte token per byte. A codepoint is a byte plus at most 3 following
// continuation bytes (stray continuation bytes start a codepoint of their own).
static int encode_codepoints(int *ids, int *n, const Tokenizer *t, const char *text, Error *e) {
    const unsigned char *s = (const unsigned char *)text;
    char cp[5];
    for (size_t i = 0; s[i];) {
        size_t len = 1;
        while (len < 4 && is_utf8_continuation(s[i + len])) len++;
        memcpy(cp, s + i, len);
        cp[len] = '\0';
        int id = tokenizer_lookup(t, cp);
        if (id >= 0) {
            ids[(*n)++] = id;
        } else {
            for (size_t j = 0; j < len; j++) {
                int byte_id = (int)s[i + j] + TOKENIZER_BYTE_OFFSET;
                if (byte_id >= t->vocab_size)
                    return err_set(e, "tokenizer: byte 0x%02X needs byte token %d but vocab_size is %d",
                                   s[i + j], byte_id, t->vocab_size);
                ids[(*n)++] = byte_id;
            }
        }
        i += len;
    }
    return 0;
}

// Repeatedly merges the adjacent pair whose concatenation is the vocabulary
// piece with the highest score (the first such pair on ties), until no pair
// concatenates to a piece. Scores at or below -1e10 never merge (as in llama2.c).
static void encode_merge(int *ids, int *n, const Tokenizer *t, char *buf) {
    for (;;) {
        float best_score = -1e10f;
        int best_id = -1, best_i = -1;
        for (int i = 0; i + 1 < *n; i++) {
            size_t la = strlen(t->vocab[ids[i]]), lb = strlen(t->vocab[ids[i + 1]]);
            memcpy(buf, t->vocab[ids[i]], la);
            memcpy(buf + la, t->vocab[ids[i + 1]], lb + 1);
            int id = tokenizer_lookup(t, buf);
            if (id >= 0 && t->scores[id] > best_score) {
                best_score = t->scores[id];
                best_id = id;
                best_i = i;
            }
        }
        if (best_i < 0) return;
        ids[best_i] = best_id;
        memmove(ids + best_i + 1, ids + best_i + 2, (size_t)(*n - best_i - 2) * sizeof(int));
        (*n)--;
    }
}

int tokenizer_encode(const Tokenizer *t, const char *text, int bos, int eos, int *ids, int *n_ids, Error *e) {
    *n_ids = 0;
    if (!text) return err_set(e, "tokenizer_encode: NULL text");
    int n = 0;
    if (bos) ids[n++] = TOKENIZER_BOS;
    if (text[0] != '\0') {
        // SentencePiece's add_dummy_prefix: the text is encoded as " " + text.
        int space = tokenizer_lookup(t, " ");
        if (space < 0) return err_set(e, "tokenizer: the vocabulary has no \" \" piece for the dummy prefix");
        ids[n++] = space;
    }
    if (encode_codepoints(ids, &n, t, text, e)) return -1;
    // Like llama2.c, BOS takes part in the merges (no real vocabulary has a piece
    // that starts with BOS's piece, so this only matters for exactness).
    char *buf = xmalloc(2 * (size_t)t->max_piece_len + 1);
    encode_merge(ids, &n, t, buf);
    free(buf);
    if (eos) ids[n++] = TOKENIZER_EOS;
    *n_ids = n;
    return 0;
}

// ---------------------------------------------------------------------------
// Decoding

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

const char *tokenizer_decode(const Tokenizer *t, int prev, int id) {
    if (id < 0 || id >= t->vocab_size) return NULL;
    const char *piece = t->vocab[id];
    // After BOS, SentencePiece's decoder drops the dummy-prefix space.
    if (prev == TOKENIZER_BOS && piece[0] == ' ') piece++;
    // Byte pieces are spelled "<0xNN>"; they stand for the raw byte.
    if (piece[0] == '<' && piece[1] == '0' && piece[2] == 'x' && piece[3] && piece[4] && piece[5] == '>' &&
        piece[6] == '\0') {
        int hi = hex_digit(piece[3]), lo = hex_digit(piece[4]);
        if (hi >= 0 && lo >= 0) return t->byte_pieces[hi * 16 + lo];
    }
    return piece;
}
