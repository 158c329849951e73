#!/usr/bin/env python3
"""lcrec_text_prompts.py DATA_DIR N OUT.txt: LC-Rec prompts of N test users as plain text, one a line.

For the attention study's control input "Rec as text": the pretrained model reads the
LC-Rec prompt through its own tokenizer (earnest dump-attn --text-file), so every token,
instruction words and item codes alike (`<a_47>` spelled as sub-word pieces), has a
pretrained embedding, unlike the study's Rec input, whose template words and codes are
new rows of the grown vocabulary. The template is datasets/prompt.c's (LC-Rec, as used by
AtSpeed), with its line breaks as spaces (one prompt per line). History = the user's
train + valid items (the test-sample convention), of which only the last one is kept: the
512-piece stories260K tokenizer spells the template in ~165 pieces and each item's 4 codes
in ~28, so one item gives ~193 tokens, inside the study's 150-200 bucket, and each further
item ~28 more. Users: N of those with test items, spread evenly. HIST=H keeps H items.
"""
import os, sys

data, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
BEFORE = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
          "request. ### Instruction: The user has interacted with items")
AFTER = "in chronological order. Can you predict the next possible item that the user may expect? ### Response:"

def read_seqs(name):
    seqs = {}
    for line in open(os.path.join(data, name)):
        f = line.split()
        if f:
            seqs[f[0]] = f[1:]
    return seqs
codes = dict(line.rstrip('\n').split('\t') for line in open(os.path.join(data, 'codes.tsv')) if line.strip())
train, valid, test = read_seqs('train.txt'), read_seqs('valid.txt'), read_seqs('test.txt')
users = [u for u in test if test[u] and (train.get(u) or valid.get(u))]
picked = [users[i * len(users) // n] for i in range(min(n, len(users)))]
lines = []
for u in picked:
    hist = (train.get(u, []) + valid.get(u, []))[-20:]
    h = int(os.environ.get('HIST', '1'))
    items = ', '.join(codes[i] for i in hist[-h:])
    lines.append('%s %s %s' % (BEFORE, items, AFTER))
tmp = out + '.tmp'
with open(tmp, 'w') as f:
    f.write('\n'.join(lines) + '\n')
os.replace(tmp, out)
print('wrote %s: %d prompts' % (out, len(lines)))
