#!/usr/bin/env python3
"""attention_summary.py RES_DIR: the attention study's tables (experiments/attention_study.sh).

Reads RES_DIR/<model>_<input>[_len<lo>-<hi>].csv (earnest analyze, header
layer,head,rows,metric,value) and their .summary.txt, and writes
  RES_DIR/summary.csv  model,input,bucket,n_samples,rows,scope,metric,value
                       (head mean; scope = a layer number, "early", "late"; bucket "all" or "50-100", ...)
  RES_DIR/summary.md   the decision-row table of the write-up, and the same by length bucket.
Early / late: layers l < N/2 / l >= N/2 as in `earnest analyze`, except for an EARN
model, whose layers >= k see only the registers: there early = layers < k and late
is left out (those rows are degenerate by construction). The uniform share of a
3-key sink window is 3 / n_keys (n_keys the mean visible keys of the row).
Standard library only.
"""
import csv, glob, os, re, sys

res = sys.argv[1] if len(sys.argv) > 1 else 'experiments/results/attention_study'
MODELS = ['before', 'finetune', 'earn', 'small']
INPUTS = ['nlp', 'rec', 'rectext']
BUCKETS = ['all', '50-100', '100-150', '150-200']
METRICS = ['density_eps', 'density_rel', 'keys_eps', 'sink_head', 'sink_tail', 'entropy_norm', 'n_keys']

def load(path):
    v = {}
    for r in csv.DictReader(open(path)):
        if int(r['head']) == -1:
            v[(int(r['layer']), r['rows'], r['metric'])] = float(r['value'])
    return v

def info(path):
    """(samples used, n_layers, k) from an analyze summary."""
    t = open(path).read()
    m = re.search(r': (\d+) samples, (\d+) layers x \d+ heads, method \w+(?: \(k = (\d+)\))?(?:, (\d+) with a prompt)?', t)
    n = int(m.group(4)) if m.group(4) is not None else int(m.group(1))
    return n, int(m.group(2)), int(m.group(3) or 0)

rows_out = []
table = {}
for model in MODELS:
    for inp in INPUTS:
        for b in BUCKETS:
            base = '%s/%s_%s%s' % (res, model, inp, '' if b == 'all' else '_len' + b)
            if not os.path.exists(base + '.csv'):
                continue
            n, L, k = info(base + '.summary.txt')
            v = load(base + '.csv')
            if n == 0:
                continue
            early = list(range(k)) if k else [l for l in range(L) if 2 * l < L]
            late = [] if k else [l for l in range(L) if 2 * l >= L]
            for rows in ('decision', 'all'):
                for m in METRICS:
                    for l in range(L):
                        if (l, rows, m) in v and not (k and l >= k):
                            rows_out.append([model, inp, b, n, rows, l, m, v[(l, rows, m)]])
                    for scope, ls in (('early', early), ('late', late)):
                        xs = [v[(l, rows, m)] for l in ls if (l, rows, m) in v]
                        if ls and len(xs) == len(ls):
                            val = sum(xs) / len(xs)
                            rows_out.append([model, inp, b, n, rows, scope, m, val])
                            table[(model, inp, b, rows, scope, m)] = val
            table[(model, inp, b, 'n')] = n
            table[(model, 'k')] = k

with open(res + '/summary.csv.tmp', 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['model', 'input', 'bucket', 'n_samples', 'rows', 'scope', 'metric', 'value'])
    for r in rows_out:
        w.writerow(r[:7] + ['%.6g' % r[7]])
os.replace(res + '/summary.csv.tmp', res + '/summary.csv')

INPUT_LABEL = {'nlp': 'NLP (text)', 'rec': 'Rec (beauty LC-Rec)',
               'rectext': 'Rec as text (LC-Rec spelled by the pretrained tokenizer, 1 item)'}
LABEL = {'before': 'stories260K before fine-tuning', 'finetune': 'after finetune', 'earn': 'after EARN (k=2)',
         'small': 'small preset from scratch, finetune (8 layers)'}
def cell(model, inp, b, scope, m, rows='decision', fmt='%.3f'):
    x = table.get((model, inp, b, rows, scope, m))
    return '-' if x is None else fmt % x
def pair(model, inp, b, m, rows='decision', fmt='%.3f'):
    return '%s / %s' % (cell(model, inp, b, 'early', m, rows, fmt), cell(model, inp, b, 'late', m, rows, fmt))
def unif(model, inp, b, rows='decision'):
    e = table.get((model, inp, b, rows, 'early', 'n_keys'))
    return '-' if e is None else '%.3f' % (3.0 / e)

out = []
out.append('Decision row (last prompt position), mean over heads; early / late = layers 0-2 / 3-4 of 5 '
           '(EARN: layers 0-1, before its split k = 2; its layers 2-4 see only registers and are left out; '
           'small: layers 0-3 / 4-7 of 8). '
           'density_rel = share of keys with p > 1/n; keys_eps = keys with p > 0.05 (density_eps x n); '
           'uniform = 3/n, the share a 3-key window gets from a uniform row (n = mean visible keys).\n')
hdr = ('| model | input | bucket | samples | density_eps early / late | density_rel early / late | '
       'keys_eps early / late | sink_head early / late | sink_tail early / late | uniform 3/n | n keys |')
for title, buckets in (('All prompts', ['all']), ('By prompt length (tokens)', ['50-100', '100-150', '150-200'])):
    out.append('### ' + title + '\n')
    out.append(hdr)
    out.append('|' + '---|' * 11)
    for b in buckets:
        for model in MODELS:
            for inp in INPUTS:
                if (model, inp, b, 'n') not in table:
                    continue
                out.append('| %s | %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |' % (
                    LABEL[model], INPUT_LABEL[inp], b,
                    table[(model, inp, b, 'n')], pair(model, inp, b, 'density_eps'),
                    pair(model, inp, b, 'density_rel'), pair(model, inp, b, 'keys_eps', fmt='%.2f'),
                    pair(model, inp, b, 'sink_head'), pair(model, inp, b, 'sink_tail'), unif(model, inp, b),
                    cell(model, inp, b, 'early', 'n_keys', fmt='%.0f')))
    out.append('')
with open(res + '/summary.md.tmp', 'w') as f:
    f.write('\n'.join(out) + '\n')
os.replace(res + '/summary.md.tmp', res + '/summary.md')
print('\n'.join(out))
