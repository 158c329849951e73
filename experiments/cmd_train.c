// cmd_train.c: `earnest train`: fine-tune (or train from scratch) a model for
// generative recommendation, plain (finetune) or with the EARN layer plan.
// The run lives in experiments/train_run.c; this file parses the flags.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/cli.h"
#include "experiments/commands.h"
#include "experiments/train_run.h"
#include "runtime/kd_loss.h"

static const char *TRAIN_ABOUT =
    "  Trains on every target of each user's train sequence (history = the items before it, last 20),\n"
    "  many targets of a user packed into one sequence (exactly equivalent to one prompt each).\n"
    "  method:  finetune   every layer sees every token (registers optional, default 0/0)\n"
    "           earn       layers >= k see only registers and targets (default k = N/4, 1 prefix +\n"
    "                      1 suffix register; at least one suffix register)\n"
    "           skiplayers the first --keep-layers M layers of the starting model, fine-tuned alone\n"
    "           gist       --suffix-regs G gist tokens (default 1) after the prompt; targets see only them\n"
    "           anllm      an anchor (<reg_suf_0>) after each history item; a token sees the earlier anchors,\n"
    "                      the instruction segment (<bos>, instruction words, targets) and its own\n"
    "                      segment (one item + its anchor); inference keeps only anchor and instruction KV\n"
    "           pod        --prefix-regs P learned soft-prompt vectors (default 1) replace the instruction\n"
    "                      words; a full model otherwise\n"
    "           compress500x  500xCompressor-style: --suffix-regs C compression tokens (default 1) after\n"
    "                      the prompt; the prompt and the compression tokens run with rank-r LoRA adapters\n"
    "                      (--lora-rank r, default 8; --lora-alpha, default r) on q/k/v/o_proj, the targets\n"
    "                      run the frozen base and see only the compression tokens' KV (and each other);\n"
    "                      only the adapters and the compression-token embeddings train; needs --init DIR,\n"
    "                      a fine-tuned full (finetune) model\n"
    "           draft      an AtSpeed draft (a full model, the draft preset by default) distilled from a\n"
    "                      target through --teacher FILE (earnest teacher) with --kd LOSS:\n"
    "                      (1 - alpha) CE(ground truth) + alpha KD; on the samples the file covers\n"
    "  model:   --preset gives the shape of a model trained from scratch; --init starts from a\n"
    "           checkpoint (its shape; --preset, if given, must match). A checkpoint without an earnest\n"
    "           vocab.txt (e.g. a converted llama2.c model) gets its vocabulary grown by the registers,\n"
    "           template words and code tokens (new rows random).\n"
    "  The same seed and thread count give the same run. MODEL_DIR receives the best checkpoint\n"
    "  (config.json, model.safetensors, vocab.txt), train_log.csv, eval_log.csv, train_args.json,\n"
    "  summary.json and state/ (what --resume needs).\n";

// --method draft: a full (finetune) model trained with --kd LOSS from --teacher FILE (the
// draft preset unless --preset/--init say otherwise). Returns 2 on a bad combination, else -1.
static int draft_options(TrainOptions *o, const char **method_s, const char *kd_s) {
    int draft = !strcmp(*method_s, "draft");
    if (!draft && (kd_s || o->teacher)) {
        fprintf(stderr, "earnest train: --kd and --teacher go with --method draft\n");
        return 2;
    }
    if (!draft) return -1;
    if (!kd_s) {
        fprintf(stderr, "earnest train: --method draft needs --kd sft|wordkd|tvdkd|seqkd|atspeed-s|atspeed-r\n");
        return 2;
    }
    KDLoss k;
    CHECK(kd_loss_parse(kd_s, &k) == 0, "train: --kd passed its choices");
    if (k != KD_SFT && !o->teacher) {
        fprintf(stderr, "earnest train: --kd %s needs --teacher FILE (make it with earnest teacher --model TARGET)\n",
                kd_s);
        return 2;
    }
    o->kd = (int)k;
    *method_s = "finetune";
    if (!o->preset && !o->init_dir) o->preset = "draft";
    return -1;
}

int cmd_train(int argc, char **argv) {
    TrainOptions o;
    train_options_default(&o);
    const char *method_s = "finetune", *tmpl_s = "lcrec", *kd_s = NULL;
    int seed = 1, crash_after = 0, quiet = 0;
    CliFlag flags[] = {
        {"--data", CLI_STRING, &o.data_dir, .meta = "DIR", .required = 1, .help = "prepared dataset directory"},
        {"--out", CLI_STRING, &o.out_dir, .meta = "MODEL_DIR", .required = 1, .help = "model directory to write"},
        {"--init", CLI_STRING, &o.init_dir, .meta = "DIR", .help = "start from this checkpoint"},
        {"--preset", CLI_STRING, &o.preset, .choices = "tiny|small|draft|base", .help = "shape of a model trained from scratch (draft: an AtSpeed draft)"},
        {"--method", CLI_STRING, &method_s, .choices = "finetune|earn|skiplayers|gist|anllm|pod|compress500x|draft", .help = "training method"},
        {"--teacher", CLI_STRING, &o.teacher, .meta = "FILE", .help = "draft: the teacher file (earnest teacher)"},
        {"--kd", CLI_STRING, &kd_s, .choices = "sft|wordkd|tvdkd|seqkd|atspeed-s|atspeed-r",
         .help = "draft: the loss mixed with the ground truth's cross-entropy"},
        {"--kd-alpha", CLI_FLOAT, &o.kd_alpha, .lo = 0, .hi = 1, .help = "draft: (1 - a) CE + a KD"},
        {"--kd-temp", CLI_FLOAT, &o.kd_temp, .lo = 1e-3, .hi = 1e3, .help = "draft: temperature of atspeed-s/-r"},
        {"--kd-topk", CLI_INT, &o.kd_topk, .lo = 0, .hi = 1 << 20, .help = "draft: atspeed-s's K (0: the teacher's beam)"},
        {"--k", CLI_INT, &o.k, .lo = 1, .hi = 4096, .help = "EARN layer split (default N/4)"},
        {"--keep-layers", CLI_INT, &o.keep_layers, .lo = 1, .hi = 4096,
         .help = "skiplayers: the first M layers of the starting model are kept and trained"},
        {"--lora-rank", CLI_INT, &o.lora_rank, .lo = 0, .hi = 65536,
         .help = "compress500x: rank r of the LoRA adapters on q/k/v/o_proj (default 8)"},
        {"--lora-alpha", CLI_FLOAT, &o.lora_alpha, .lo = 1e-6, .hi = 1e6,
         .help = "compress500x: LoRA alpha; the low-rank term is scaled by alpha / r (default r)"},
        {"--prefix-regs", CLI_INT, &o.prefix_regs, .lo = 0, .hi = 1024, .help = "prefix registers (default: finetune 0, earn 1); pod: its soft-prompt vectors (1)"},
        {"--suffix-regs", CLI_INT, &o.suffix_regs, .lo = 0, .hi = 1024, .help = "suffix registers (default: finetune 0, earn 1); gist: its gist tokens (1); compress500x: its compression tokens (1)"},
        {"--template", CLI_STRING, &tmpl_s, .choices = "lcrec|tiger", .help = "prompt template"},
        {"--max-history", CLI_INT, &o.max_history, .lo = 0, .hi = 100000, .help = "history items kept per prompt"},
        {"--epochs", CLI_INT, &o.epochs, .lo = 1, .hi = 100000, .help = "epochs"},
        {"--lr", CLI_FLOAT, &o.opt.lr, .help = "peak learning rate (> 0)"},
        {"--warmup", CLI_FLOAT, &o.opt.warmup_ratio, .lo = 0, .hi = 1, .help = "warmup fraction of the updates"},
        {"--weight-decay", CLI_FLOAT, &o.opt.weight_decay, .help = "AdamW weight decay (>= 0)"},
        {"--grad-clip", CLI_FLOAT, &o.opt.grad_clip, .help = "clip the gradient norm to this (<= 0: never)"},
        {"--min-lr-ratio", CLI_FLOAT, &o.opt.min_lr_ratio, .lo = 0, .hi = 1, .help = "cosine floor / peak"},
        {"--batch-tokens", CLI_INT, &o.batch_tokens, .lo = 1, .hi = 1 << 24, .help = "tokens per update"},
        {"--pack-tokens", CLI_INT, &o.pack_tokens, .lo = 0, .hi = 1 << 20, .help = "cap of one packed sequence"},
        {"--seed", CLI_INT, &seed, .lo = 0, .hi = 1 << 30, .help = "seed of the init, the shuffles, the valid users"},
        {"--threads", CLI_INT, &o.threads, .lo = 1, .hi = 4096, .help = "threads (default: EARNEST_THREADS or all cores)"},
        {"--init-std", CLI_FLOAT, &o.init_std, .help = "N(0, std) for new weights (> 0)"},
        {"--patience", CLI_INT, &o.patience, .lo = 0, .hi = 100000,
         .help = "epochs without a better valid Recall@10 before stopping (0: never)"},
        {"--eval-users", CLI_INT, &o.eval_users, .lo = 0, .hi = 1 << 30,
         .help = "valid users scored each epoch, a seeded subset (0: all)"},
        {"--beam", CLI_INT, &o.beam, .lo = 1, .hi = 4096, .help = "beam width of the validation"},
        {"--max-minutes", CLI_DOUBLE, &o.max_minutes, .lo = 0, .hi = 1e9,
         .help = "stop after M minutes of training in this invocation, validate and save\n(0: no limit; --resume continues)"},
        {"--save-every", CLI_INT, &o.save_every, .lo = 0, .hi = 1 << 30, .help = "updates between state saves (0: by time)"},
        {"--save-minutes", CLI_DOUBLE, &o.save_minutes, .lo = 0, .hi = 1e9, .help = "minutes between state saves"},
        {"--resume", CLI_FLAG, &o.resume, .help = "continue the interrupted run in MODEL_DIR (same options)"},
        {"--force", CLI_FLAG, &o.force, .help = "write into a non-empty MODEL_DIR that holds no run to resume"},
        {"--quiet", CLI_FLAG, &quiet, .help = "no progress on stderr"},
        {"--dry-run", CLI_FLAG, &o.dry_run, .help = "print the packing figures and the update count, write nothing"},
        {"--test-crash-after-step", CLI_INT, &crash_after, .lo = 1, .hi = 1 << 30,
         .help = "tests: SIGKILL the process right after update N"},
    };
    CliSpec cli = {.verb = "train",
                   .synopsis = "--data DATA_DIR (--preset tiny|small|draft | --init DIR) --method finetune|earn|skiplayers|gist|anllm|pod|compress500x --out MODEL_DIR\n"
                               "                     [--k K --prefix-regs P --suffix-regs S] [options]\n"
                               "       earnest train --data DATA_DIR --method draft --teacher FILE --kd LOSS --out MODEL_DIR\n"
                               "                     [--kd-alpha 0.7 --kd-temp 1 --kd-topk K] [options]",
                   .about = TRAIN_ABOUT, .flags = flags, .n_flags = CLI_COUNT(flags)};
    int st = cli_parse(&cli, argc, argv);
    if (st >= 0) return st;
    if ((st = draft_options(&o, &method_s, kd_s)) >= 0) return st;
    if (!o.preset && !o.init_dir && !o.resume) {
        fprintf(stderr, "earnest train: give --preset (train from scratch) or --init (start from a checkpoint)\n");
        return 2;
    }
    CHECK(config_method_parse(method_s, &o.method) == 0 && prompt_template_parse(tmpl_s, &o.tmpl) == 0,
          "train: --method/--template passed their choices");
    if (!(o.init_std > 0) || !(o.opt.lr > 0) || !(o.opt.weight_decay >= 0)) {
        fprintf(stderr, "earnest train: need --lr > 0, --weight-decay >= 0, --init-std > 0\n");
        return 2;
    }
    o.seed = (uint64_t)seed;
    o.crash_after_step = crash_after;
    o.progress = !quiet;
    Error e;
    int rc = train_run(&o, &e);
    if (rc < 0) return cli_fail("train", &e);
    return rc;
}
