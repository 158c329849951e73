// pack.c: see pack.h.
#include "datasets/pack.h"

#include <stdlib.h>
#include <string.h>

// Tokens of the shared part: the prompt of m history items up to the last code token.
static int shared_length(const Prompter *p, int m) {
    return prompter_length(p, m, 0) - p->n_after - p->n_suffix_regs;
}

// Tokens of one target's group: words after, suffix registers, code minus its last token.
static int group_length(const Prompter *p) { return p->n_after + p->n_suffix_regs + p->code_levels - 1; }

int pack_length(const Prompter *p, int window, int first, int last) {
    return shared_length(p, last - window) + (last - first + 1) * group_length(p);
}

void pack_plan_build(PackPlan *pp, const Dataset *d, const Prompter *p, int max_history, int max_tokens) {
    memset(pp, 0, sizeof *pp);
    pp->max_history = max_history;
    pp->max_tokens = max_tokens;
    size_t cap = 1024;
    pp->packs = xmalloc(cap * sizeof(Pack));
    for (int u = 1; u <= d->n_users; u++) {
        int len;
        dataset_user_items(d, SPLIT_TRAIN, u, &len);
        int mh = max_history > 0 ? max_history : len; // whole histories: every window starts at item 0
        for (int i = 1; i < len;) {
            Pack pk = {.user = u, .first = i};
            if (i <= mh) {
                // Window at the user's first item: extend while the cap allows.
                pk.window = 0;
                pk.last = i;
                while (pk.last + 1 < len && pk.last + 1 <= mh &&
                       (max_tokens <= 0 || pack_length(p, 0, i, pk.last + 1) <= max_tokens))
                    pk.last++;
            } else {
                // Sliding window: a sequence of its own (its prompt).
                pk.window = i - mh;
                pk.last = i;
            }
            pk.n_tokens = pack_length(p, pk.window, pk.first, pk.last);
            if (pp->n_packs == cap) {
                cap *= 2;
                pp->packs = xrealloc(pp->packs, cap * sizeof(Pack));
            }
            pp->packs[pp->n_packs++] = pk;
            pp->tokens_packed += (size_t)pk.n_tokens;
            for (int t = pk.first; t <= pk.last; t++) {
                int h = t < mh ? t : mh;
                pp->tokens_unpacked += (size_t)prompter_length(p, h, 1);
            }
            pp->n_targets += (size_t)(pk.last - pk.first + 1);
            i = pk.last + 1;
        }
    }
}

void pack_plan_free(PackPlan *pp) {
    free(pp->packs);
    memset(pp, 0, sizeof *pp);
}

static void packed_seq_reserve(PackedSeq *s, size_t n_tokens, size_t n_targets, size_t levels) {
    if (n_tokens > s->cap_tokens) {
        s->tokens = xrealloc(s->tokens, n_tokens * sizeof(int));
        s->kinds = xrealloc(s->kinds, n_tokens);
        s->positions = xrealloc(s->positions, n_tokens * sizeof(int));
        s->labels = xrealloc(s->labels, n_tokens * sizeof(int));
        s->cap_tokens = n_tokens;
    }
    if (n_targets > s->cap_targets) {
        s->targets = xrealloc(s->targets, n_targets * sizeof(int));
        s->label_at = xrealloc(s->label_at, n_targets * (levels ? levels : 1) * sizeof(int));
        s->cap_targets = n_targets;
    }
}

int pack_build(PackedSeq *s, const Pack *pk, const Dataset *d, const Prompter *p) {
    int len;
    const int *items = dataset_user_items(d, SPLIT_TRAIN, pk->user, &len);
    CHECK(pk->window >= 0 && pk->window < pk->first && pk->first <= pk->last && pk->last < len,
          "pack_build: bad pack (user %d, window %d, targets %d..%d of %d)", pk->user, pk->window, pk->first,
          pk->last, len);
    const int L = p->code_levels, sep = p->comma >= 0 ? 1 : 0, a = p->anchor >= 0 ? 1 : 0; // a: AnLLM's anchor
    const int m = pk->last - pk->window;       // history items in the shared part
    const int n_shared = shared_length(p, m);
    const int n_group = group_length(p);
    const int n_targets = pk->last - pk->first + 1;
    const int n = n_shared + n_targets * n_group;
    const int n_lead = p->n_after + p->n_suffix_regs; // group tokens before the code
    // prompter_build writes the whole inference prompt; the shared part is its head.
    int full = prompter_length(p, m, 0);
    packed_seq_reserve(s, (size_t)(n > full ? n : full), (size_t)n_targets, (size_t)L);
    prompter_build(s->tokens, s->kinds, p, items + pk->window, m, 0);
    for (int t = 0; t < n_shared; t++) {
        s->positions[t] = t;
        s->labels[t] = -1;
    }
    // Where item j (relative to the window) ends: its last code token (AnLLM: its anchor).
    const int base = 1 + p->n_prefix_regs + p->n_before;
    int at = n_shared;
    for (int k = 0; k < n_targets; k++) {
        int i = pk->first + k;
        int end = base + (i - 1 - pk->window) * (L + a + sep) + L - 1 + a;
        const int *code = p->item_tokens + (size_t)items[i] * (size_t)L;
        int pos = end + 1;
        for (int w = 0; w < p->n_after; w++, at++) {
            s->tokens[at] = p->after[w];
            s->kinds[at] = TOKEN_KIND_INSTRUCTION;
            s->positions[at] = pos++;
            s->labels[at] = -1;
        }
        for (int r = 0; r < p->n_suffix_regs; r++, at++) {
            s->tokens[at] = p->reg_suf[r];
            s->kinds[at] = TOKEN_KIND_SUFFIX_REG;
            s->positions[at] = pos++;
            s->labels[at] = -1;
        }
        for (int j = 0; j + 1 < L; j++, at++) {
            s->tokens[at] = code[j];
            s->kinds[at] = TOKEN_KIND_TARGET;
            s->positions[at] = pos++;
            s->labels[at] = -1;
        }
        int g0 = at - n_group; // this group's first token
        s->targets[k] = items[i];
        for (int j = 0; j < L; j++) {
            int who = j == 0 ? (n_lead > 0 ? g0 + n_lead - 1 : end) : g0 + n_lead + j - 1;
            s->label_at[(size_t)k * (size_t)L + (size_t)j] = who;
            s->labels[who] = code[j];
        }
    }
    CHECK(at == n, "pack_build: built %d tokens, planned %d", at, n);
    s->n = n;
    s->n_targets = n_targets;

    // One target whose shared part ends at its history's end: plainly causal.
    if (n_targets == 1) {
        s->mask = NULL;
        return n;
    }
    size_t nn = (size_t)n * (size_t)n;
    if (nn > s->cap_mask) {
        free(s->mask_buf);
        s->mask_buf = xmalloc(nn);
        s->cap_mask = nn;
    }
    s->mask = s->mask_buf;
    memset(s->mask, 0, nn);
    for (int r = 0; r < n_shared; r++) memset(s->mask + (size_t)r * (size_t)n, 1, (size_t)r + 1);
    for (int k = 0; k < n_targets; k++) {
        int i = pk->first + k;
        int end = base + (i - 1 - pk->window) * (L + a + sep) + L - 1 + a;
        int g0 = n_shared + k * n_group;
        for (int r = g0; r < g0 + n_group; r++) {
            uint8_t *row = s->mask + (size_t)r * (size_t)n;
            memset(row, 1, (size_t)end + 1);
            memset(row + g0, 1, (size_t)(r - g0) + 1);
        }
    }
    return n;
}

void pack_mask_materialise(PackedSeq *s) {
    if (s->mask) return;
    size_t n = (size_t)s->n, nn = n * n;
    if (nn > s->cap_mask) {
        free(s->mask_buf);
        s->mask_buf = xmalloc(nn);
        s->cap_mask = nn;
    }
    memset(s->mask_buf, 0, nn);
    for (size_t r = 0; r < n; r++) memset(s->mask_buf + r * n, 1, r + 1);
    s->mask = s->mask_buf;
}

void packed_seq_free(PackedSeq *s) {
    free(s->tokens);
    free(s->kinds);
    free(s->positions);
    free(s->labels);
    free(s->mask_buf);
    free(s->targets);
    free(s->label_at);
    memset(s, 0, sizeof *s);
}

void pack_shuffle(size_t *order, size_t n, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) order[i] = i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(rng_u64(&r) % i);
        size_t t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
}

size_t pack_batches(size_t *starts, const size_t *order, size_t n, const PackPlan *pp, size_t batch_tokens) {
    size_t nb = 0, fill = 0;
    for (size_t i = 0; i < n; i++) {
        size_t t = (size_t)pp->packs[order[i]].n_tokens;
        if (i == 0 || fill + t > batch_tokens) {
            starts[nb++] = i;
            fill = 0;
        }
        fill += t;
    }
    starts[nb] = n;
    return nb;
}
