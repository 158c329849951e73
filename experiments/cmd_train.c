// cmd_train.c: `earnest train`: fine-tune (or train from scratch) a model for
// generative recommendation, plain (finetune) or with the EARN layer plan.
// The loop lives in runtime/trainer.c; this file parses the flags.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/cli.h"
#include "experiments/commands.h"
#include "runtime/trainer.h"

static const char *TRAIN_USAGE =
    "usage: earnest train --data DATA_DIR --preset tiny|small --method finetune|earn --out MODEL_DIR\n"
    "                     [--k K --prefix-regs P --suffix-regs S] [--init MODEL_DIR] [options]\n"
    "  Trains on every target of each user's train sequence (history = the items before it, last 20),\n"
    "  many targets of a user packed into one sequence (exactly equivalent to one prompt each).\n"
    "  method:  finetune   every layer sees every token (registers optional, default 0/0)\n"
    "           earn       layers >= k see only registers and targets (default k = N/4, 1 prefix +\n"
    "                      1 suffix register; at least one suffix register)\n"
    "  model:   --preset tiny|small      shape of a model trained from scratch\n"
    "           --init DIR               start from a checkpoint (its shape; --preset, if given, must match).\n"
    "                                    A checkpoint without an earnest vocab.txt (e.g. a converted\n"
    "                                    llama2.c model) gets its vocabulary grown by the registers,\n"
    "                                    template words and code tokens (new rows random).\n"
    "  options: --epochs 3 --lr 1e-3 --warmup 0.02 --weight-decay 0.01 --grad-clip 1.0 --min-lr-ratio 0\n"
    "           --batch-tokens 4096 (tokens per update) --pack-tokens 512 (cap of one packed sequence)\n"
    "           --template lcrec|tiger --max-history 20 --seed 1 --threads N (default: EARNEST_THREADS\n"
    "           or all cores; the same seed and thread count give the same run) --init-std 0.02\n"
    "           --patience 2 (epochs without a better valid Recall@10; 0: never stop early)\n"
    "           --eval-users 1000 (valid users scored each epoch, seeded subset; 0: all) --beam 20\n"
    "           --max-minutes M (stop after M minutes of training in this invocation, then validate\n"
    "           and save; --resume continues)\n"
    "           --save-every N (updates between state saves; default: every --save-minutes 5)\n"
    "           --resume (continue the interrupted run in MODEL_DIR: same options plus --resume)\n"
    "           --force (write into an existing non-empty MODEL_DIR that holds no run to resume)\n"
    "           --quiet (no progress on stderr) --dry-run (print the packing figures and the number\n"
    "           of updates, write nothing)\n"
    "  testing: --test-crash-after-step N kills the process (SIGKILL) right after update N.\n"
    "  MODEL_DIR receives the best checkpoint (config.json, model.safetensors, vocab.txt), train_log.csv,\n"
    "  eval_log.csv, train_args.json, summary.json and state/ (what --resume needs).\n";

int cmd_train(int argc, char **argv) {
    TrainOptions o;
    train_options_default(&o);
    const char *method_s = "finetune", *tmpl_s = "lcrec";
    int seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(TRAIN_USAGE, stdout); return 0; }
#define VAL() do { if (!(v = cli_value(argc, argv, &i))) return 2; } while (0)
#define INT(lo, hi, dst) do { VAL(); if (cli_int("train", a, v, lo, hi, dst)) return 2; } while (0)
#define FLT(dst) do { VAL(); if (cli_float("train", a, v, dst)) return 2; } while (0)
        else if (!strcmp(a, "--data")) { VAL(); o.data_dir = v; }
        else if (!strcmp(a, "--out")) { VAL(); o.out_dir = v; }
        else if (!strcmp(a, "--init")) { VAL(); o.init_dir = v; }
        else if (!strcmp(a, "--preset")) { VAL(); o.preset = v; }
        else if (!strcmp(a, "--method")) { VAL(); method_s = v; }
        else if (!strcmp(a, "--template")) { VAL(); tmpl_s = v; }
        else if (!strcmp(a, "--k")) INT(1, 4096, &o.k);
        else if (!strcmp(a, "--prefix-regs")) INT(0, 1024, &o.prefix_regs);
        else if (!strcmp(a, "--suffix-regs")) INT(0, 1024, &o.suffix_regs);
        else if (!strcmp(a, "--max-history")) INT(0, 100000, &o.max_history);
        else if (!strcmp(a, "--epochs")) INT(1, 100000, &o.epochs);
        else if (!strcmp(a, "--lr")) FLT(&o.opt.lr);
        else if (!strcmp(a, "--warmup")) FLT(&o.opt.warmup_ratio);
        else if (!strcmp(a, "--weight-decay")) FLT(&o.opt.weight_decay);
        else if (!strcmp(a, "--grad-clip")) FLT(&o.opt.grad_clip);
        else if (!strcmp(a, "--min-lr-ratio")) FLT(&o.opt.min_lr_ratio);
        else if (!strcmp(a, "--batch-tokens")) INT(1, 1 << 24, &o.batch_tokens);
        else if (!strcmp(a, "--pack-tokens")) INT(0, 1 << 20, &o.pack_tokens);
        else if (!strcmp(a, "--seed")) INT(0, 1 << 30, &seed);
        else if (!strcmp(a, "--threads")) INT(1, 4096, &o.threads);
        else if (!strcmp(a, "--patience")) INT(0, 100000, &o.patience);
        else if (!strcmp(a, "--eval-users")) INT(0, 1 << 30, &o.eval_users);
        else if (!strcmp(a, "--beam")) INT(1, 4096, &o.beam);
        else if (!strcmp(a, "--save-every")) INT(0, 1 << 30, &o.save_every);
        else if (!strcmp(a, "--init-std")) FLT(&o.init_std);
        else if (!strcmp(a, "--max-minutes")) {
            float m;
            FLT(&m);
            o.max_minutes = m;
        } else if (!strcmp(a, "--save-minutes")) {
            float m;
            FLT(&m);
            o.save_minutes = m;
        } else if (!strcmp(a, "--test-crash-after-step")) {
            int s;
            INT(1, 1 << 30, &s);
            o.crash_after_step = s;
        }
        else if (!strcmp(a, "--resume")) o.resume = 1;
        else if (!strcmp(a, "--force")) o.force = 1;
        else if (!strcmp(a, "--quiet")) o.progress = 0;
        else if (!strcmp(a, "--dry-run")) o.dry_run = 1;
        else {
            fprintf(stderr, "earnest train: unknown option '%s'\n%s", a, TRAIN_USAGE);
            return 2;
        }
#undef FLT
#undef INT
#undef VAL
    }
    if (!o.data_dir || !o.out_dir) {
        fprintf(stderr, "earnest train: --data and --out are required\n%s", TRAIN_USAGE);
        return 2;
    }
    if (!o.preset && !o.init_dir && !o.resume) {
        fprintf(stderr, "earnest train: give --preset (train from scratch) or --init (start from a checkpoint)\n");
        return 2;
    }
    if (config_method_parse(method_s, &o.method)) {
        fprintf(stderr, "earnest train: --method: unknown method '%s' (known: finetune, earn)\n", method_s);
        return 2;
    }
    if (prompt_template_parse(tmpl_s, &o.tmpl)) {
        fprintf(stderr, "earnest train: --template: unknown template '%s' (known: lcrec, tiger)\n", tmpl_s);
        return 2;
    }
    if (!(o.init_std > 0) || !(o.opt.lr > 0) || !(o.opt.warmup_ratio >= 0 && o.opt.warmup_ratio <= 1) ||
        !(o.opt.weight_decay >= 0) || !(o.opt.min_lr_ratio >= 0 && o.opt.min_lr_ratio <= 1)) {
        fprintf(stderr, "earnest train: need --lr > 0, --warmup in [0, 1], --weight-decay >= 0, --min-lr-ratio in "
                "[0, 1], --init-std > 0\n");
        return 2;
    }
    o.seed = (uint64_t)seed;
    Error e;
    int rc = trainer_run(&o, &e);
    if (rc < 0) return cli_fail("train", &e);
    return rc;
}
