// vocab.c: see vocab.h.
#include "datasets/vocab.h"

#include <stdlib.h>
#include <string.h>

static const char *SPECIALS[4] = {"<pad>", "<bos>", "<eos>", "<unk>"};

// Parses a decimal number without leading zeros filling exactly s[0..n) into
// *v (< limit). Returns 0 on success.
static int parse_index(const char *s, size_t n, int limit, int *v) {
    if (n == 0 || n > 9 || (s[0] == '0' && n > 1)) return -1;
    int x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        x = x * 10 + (s[i] - '0');
    }
    if (x >= limit) return -1;
    *v = x;
    return 0;
}

// A token's kind from its spelling; *level and *index as in Vocab.
static VocabKind classify(const char *t, int *level, int *index) {
    *level = -1;
    *index = -1;
    size_t n = strlen(t);
    for (int i = 0; i < 4; i++)
        if (!strcmp(t, SPECIALS[i])) { *index = i; return VOCAB_SPECIAL; }
    if (n < 3 || t[0] != '<' || t[n - 1] != '>') return VOCAB_WORD;
    if (n > 10 && !strncmp(t, "<reg_pre_", 9) && parse_index(t + 9, n - 10, VOCAB_MAX_REGS, index) == 0)
        return VOCAB_REG_PRE;
    if (n > 10 && !strncmp(t, "<reg_suf_", 9) && parse_index(t + 9, n - 10, VOCAB_MAX_REGS, index) == 0)
        return VOCAB_REG_SUF;
    if (n >= 5 && t[1] >= 'a' && t[1] < 'a' + DATASET_MAX_LEVELS && t[2] == '_' &&
        parse_index(t + 3, n - 4, DATASET_MAX_CODES, index) == 0) {
        *level = t[1] - 'a';
        return VOCAB_CODE;
    }
    *index = -1;
    return VOCAB_WORD;
}

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;   // FNV-1a
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

int vocab_id(const Vocab *v, const char *token) {
    if (!v->hash) return -1;
    size_t mask = v->hash_cap - 1;
    for (size_t h = (size_t)hash_str(token) & mask;; h = (h + 1) & mask) {
        int id = v->hash[h];
        if (id < 0) return -1;
        if (!strcmp(v->tokens[id], token)) return id;
    }
}

const char *vocab_token(const Vocab *v, int id) { return (id >= 0 && id < v->size) ? v->tokens[id] : "?"; }

int vocab_code_id(const Vocab *v, int level, int index) {
    if (level < 0 || level >= v->code_levels || index < 0 || index >= v->codes_per_level[level]) return -1;
    return v->code_ids[level][index];
}

// Fills everything derived from v->tokens[0..size): kinds, the hash table,
// register and code tables. `where` names the source in messages ("vocab.txt"
// gives "vocab.txt:LINE"; NULL for a built vocabulary).
static int vocab_index(Vocab *v, const char *where, Error *e) {
    const char *src = where ? where : "vocabulary";
    int n = v->size;
    v->kind = xmalloc((size_t)n);
    v->level = xmalloc((size_t)n * sizeof(int));
    v->index = xmalloc((size_t)n * sizeof(int));
    v->hash_cap = 16;
    while (v->hash_cap < 2 * (size_t)n + 2) v->hash_cap *= 2;
    v->hash = xmalloc(v->hash_cap * sizeof(int));
    for (size_t i = 0; i < v->hash_cap; i++) v->hash[i] = -1;
    v->pad = v->bos = v->eos = v->unk = -1;
    int max_pre = -1, max_suf = -1;
    for (int id = 0; id < n; id++) {
        size_t mask = v->hash_cap - 1;
        size_t h = (size_t)hash_str(v->tokens[id]) & mask;
        for (; v->hash[h] >= 0; h = (h + 1) & mask)
            if (!strcmp(v->tokens[v->hash[h]], v->tokens[id]))
                return err_set(e, "%s:%d: token '%s' duplicates line %d", src, id + 1, v->tokens[id],
                               v->hash[h] + 1);
        v->hash[h] = id;
        v->kind[id] = (uint8_t)classify(v->tokens[id], &v->level[id], &v->index[id]);
        switch (v->kind[id]) {
        case VOCAB_SPECIAL:
            if (v->index[id] == 0) v->pad = id;
            if (v->index[id] == 1) v->bos = id;
            if (v->index[id] == 2) v->eos = id;
            if (v->index[id] == 3) v->unk = id;
            break;
        case VOCAB_REG_PRE: if (v->index[id] > max_pre) max_pre = v->index[id]; break;
        case VOCAB_REG_SUF: if (v->index[id] > max_suf) max_suf = v->index[id]; break;
        case VOCAB_CODE:
            if (v->level[id] + 1 > v->code_levels) v->code_levels = v->level[id] + 1;
            if (v->index[id] + 1 > v->codes_per_level[v->level[id]])
                v->codes_per_level[v->level[id]] = v->index[id] + 1;
            break;
        default: break;
        }
    }
    for (int i = 0; i < 4; i++)
        if (vocab_id(v, SPECIALS[i]) < 0) return err_set(e, "%s: special token %s missing", src, SPECIALS[i]);
    // Registers are used as 0..P-1, so a gap would silently shorten the range.
    v->n_reg_pre = max_pre + 1;
    v->n_reg_suf = max_suf + 1;
    v->reg_pre = xmalloc((size_t)(v->n_reg_pre + 1) * sizeof(int));
    v->reg_suf = xmalloc((size_t)(v->n_reg_suf + 1) * sizeof(int));
    char name[64];
    for (int i = 0; i < v->n_reg_pre; i++) {
        snprintf(name, sizeof name, "<reg_pre_%d>", i);
        if ((v->reg_pre[i] = vocab_id(v, name)) < 0)
            return err_set(e, "%s: %s missing (registers must be numbered 0..%d)", src, name, max_pre);
    }
    for (int i = 0; i < v->n_reg_suf; i++) {
        snprintf(name, sizeof name, "<reg_suf_%d>", i);
        if ((v->reg_suf[i] = vocab_id(v, name)) < 0)
            return err_set(e, "%s: %s missing (registers must be numbered 0..%d)", src, name, max_suf);
    }
    for (int j = 0; j < v->code_levels; j++) {
        v->code_ids[j] = xmalloc((size_t)(v->codes_per_level[j] + 1) * sizeof(int));
        for (int i = 0; i < v->codes_per_level[j]; i++) v->code_ids[j][i] = -1;
    }
    for (int id = 0; id < n; id++)
        if (v->kind[id] == VOCAB_CODE) v->code_ids[v->level[id]][v->index[id]] = id;
    return 0;
}

void vocab_free(Vocab *v) {
    if (v->tokens)
        for (int i = 0; i < v->size; i++) free(v->tokens[i]);
    free(v->tokens);
    free(v->kind);
    free(v->level);
    free(v->index);
    free(v->reg_pre);
    free(v->reg_suf);
    for (int j = 0; j < DATASET_MAX_LEVELS; j++) free(v->code_ids[j]);
    free(v->hash);
    memset(v, 0, sizeof *v);
}

// ---- build ----------------------------------------------------------------

typedef struct {
    char **tokens;
    int n, cap;
} TokenList;

static void list_push(TokenList *l, const char *s) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->tokens = xrealloc(l->tokens, (size_t)l->cap * sizeof(char *));
    }
    l->tokens[l->n++] = xstrdup(s);
}

int vocab_build(Vocab *v, const VocabSpec *spec, Error *e) {
    memset(v, 0, sizeof *v);
    if (spec->code_levels < 0 || spec->code_levels > DATASET_MAX_LEVELS)
        return err_set(e, "vocabulary: code_levels %d out of range 0..%d", spec->code_levels, DATASET_MAX_LEVELS);
    if (spec->n_reg_pre < 0 || spec->n_reg_pre > VOCAB_MAX_REGS || spec->n_reg_suf < 0 ||
        spec->n_reg_suf > VOCAB_MAX_REGS)
        return err_set(e, "vocabulary: register counts %d, %d out of range 0..%d", spec->n_reg_pre,
                       spec->n_reg_suf, VOCAB_MAX_REGS);
    for (int j = 0; j < spec->code_levels; j++)
        if (spec->codes_per_level[j] < 1 || spec->codes_per_level[j] > DATASET_MAX_CODES)
            return err_set(e, "vocabulary: codes_per_level[%d] = %d out of range 1..%d", j,
                           spec->codes_per_level[j], DATASET_MAX_CODES);
    for (int w = 0; w < spec->n_words; w++) {
        const char *s = spec->words[w];
        int level, index;
        if (!s[0] || strlen(s) >= VOCAB_MAX_TOKEN_LEN || strpbrk(s, " \t\r\n"))
            return err_set(e, "vocabulary: template word '%s' is empty, too long or has blanks", s);
        if (classify(s, &level, &index) != VOCAB_WORD)
            return err_set(e, "vocabulary: template word '%s' is spelled like a special, register or code token", s);
    }
    TokenList l = {0};
    char name[64];
    for (int i = 0; i < 4; i++) list_push(&l, SPECIALS[i]);
    for (int i = 0; i < spec->n_reg_pre; i++) {
        snprintf(name, sizeof name, "<reg_pre_%d>", i);
        list_push(&l, name);
    }
    for (int i = 0; i < spec->n_reg_suf; i++) {
        snprintf(name, sizeof name, "<reg_suf_%d>", i);
        list_push(&l, name);
    }
    for (int w = 0; w < spec->n_words; w++) {
        int dup = 0;   // quadratic, but templates have a few dozen words
        for (int i = 0; i < l.n && !dup; i++) dup = !strcmp(l.tokens[i], spec->words[w]);
        if (!dup) list_push(&l, spec->words[w]);
    }
    for (int j = 0; j < spec->code_levels; j++)
        for (int i = 0; i < spec->codes_per_level[j]; i++) {
            snprintf(name, sizeof name, "<%c_%d>", 'a' + j, i);
            list_push(&l, name);
        }
    v->tokens = l.tokens;
    v->size = l.n;
    if (vocab_index(v, NULL, e) != 0) {
        vocab_free(v);
        return -1;
    }
    return 0;
}

int vocab_grow(Vocab *v, int n_orig, const Vocab *tail, Error *e) {
    memset(v, 0, sizeof *v);
    TokenList l = {0};
    char name[64];
    for (int i = 0; i < n_orig; i++) {
        snprintf(name, sizeof name, "<orig_%d>", i);
        list_push(&l, name);
    }
    for (int i = 0; i < tail->size; i++) list_push(&l, tail->tokens[i]);
    v->tokens = l.tokens;
    v->size = l.n;
    if (vocab_index(v, "the grown vocabulary", e) != 0) {
        vocab_free(v);
        return -1;
    }
    return 0;
}

// ---- save / load ----------------------------------------------------------

int vocab_save(const Vocab *v, const char *path, Error *e) {
    AtomicFile af;
    if (atomic_open(&af, path, e) != 0) return -1;
    for (int i = 0; i < v->size; i++) fprintf(af.f, "%s\n", v->tokens[i]);
    return atomic_commit(&af, e);
}

int vocab_parse(Vocab *v, const char *text, size_t len, const char *path, Error *e) {
    memset(v, 0, sizeof *v);
    if (len == 0) return err_set(e, "%s: empty file", path);
    TokenList l = {0};
    size_t pos = 0;
    int line = 0, rc = -1;
    while (pos < len) {
        line++;
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + (nl ? 1 : 0);
        if (n > 0 && s[n - 1] == '\r') n--;
        if (n == 0) { err_set(e, "%s:%d: empty line (every line is one token)", path, line); goto done; }
        if (n >= VOCAB_MAX_TOKEN_LEN) { err_set(e, "%s:%d: token longer than %d bytes", path, line, VOCAB_MAX_TOKEN_LEN - 1); goto done; }
        for (size_t i = 0; i < n; i++)
            if (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\0') {
                err_set(e, "%s:%d: token contains a blank or NUL byte", path, line);
                goto done;
            }
        char tok[VOCAB_MAX_TOKEN_LEN];
        memcpy(tok, s, n);
        tok[n] = 0;
        list_push(&l, tok);
    }
    v->tokens = l.tokens;
    v->size = l.n;
    l.tokens = NULL;
    rc = vocab_index(v, path, e);
done:
    if (l.tokens) {
        for (int i = 0; i < l.n; i++) free(l.tokens[i]);
        free(l.tokens);
    }
    if (rc != 0) vocab_free(v);
    return rc;
}

int vocab_load(Vocab *v, const char *path, Error *e) {
    memset(v, 0, sizeof *v);
    char *text;
    size_t len;
    if (file_read_all(path, &text, &len, e) != 0) return -1;
    int rc = vocab_parse(v, text, len, path, e);
    free(text);
    return rc;
}

// ---- helpers --------------------------------------------------------------

int vocab_item_tokens(int *out, const Vocab *v, const Dataset *d, Error *e) {
    size_t L = (size_t)d->code_levels;
    for (size_t j = 0; j < L; j++) out[j] = -1;
    for (int item = 1; item <= d->n_items; item++) {
        const int *code = dataset_item_code(d, item);
        for (size_t j = 0; j < L; j++) {
            int id = vocab_code_id(v, (int)j, code[j]);
            if (id < 0)
                return err_set(e, "vocabulary has no token <%c_%d> (item %d's code): model made for another dataset?",
                               'a' + (int)j, code[j], item);
            out[(size_t)item * L + j] = id;
        }
    }
    return 0;
}

int vocab_code_string(char *out, const Vocab *v, const int *tokens, int levels) {
    size_t at = 0;
    out[0] = 0;
    for (int l = 0; l < levels; l++) {
        const char *tok = vocab_token(v, tokens[l]);
        size_t n = strlen(tok);
        if (at + n + 1 > DATASET_CODE_STR_MAX) break;
        memcpy(out + at, tok, n + 1);
        at += n;
    }
    return (int)at;
}

void vocab_decode(char *out, size_t n, const Vocab *v, const int *ids, int n_ids) {
    size_t k = 0;
    if (n == 0) return;
    out[0] = 0;
    for (int i = 0; i < n_ids && k + 1 < n; i++) {
        int w = snprintf(out + k, n - k, "%s%s", i ? " " : "", vocab_token(v, ids[i]));
        if (w < 0) break;
        k += (size_t)w;
    }
}
