// cmd_teacher.c: `earnest teacher`: the teacher file of draft distillation
// (experiments/teacher.h has the format): the target's constrained beam
// search and its distributions over the code tokens, for every train sample.
#include <stdio.h>

#include "experiments/cli.h"
#include "experiments/commands.h"
#include "experiments/teacher.h"
#include "runtime/beam.h"
#include "datasets/samples.h"

static const char *TEACHER_ABOUT =
    "  For each train sample (every position >= 1 of a user's train sequence; history = the items\n"
    "  before it, last --max-history), from the target's own prompt: its constrained beam search\n"
    "  (--beam beams: tokens, scores, per-step log-probabilities) and its log-probabilities of every\n"
    "  code token of the level at each node of the tree the beams and the ground truth form.\n"
    "  `earnest train --method draft --teacher FILE --kd LOSS` reads it, for every loss. FILE is\n"
    "  written atomically; the format is in experiments/teacher.h and the README.\n";

int cmd_teacher(int argc, char **argv) {
    TeacherOptions o = {.beam = BEAM_DEFAULT_WIDTH, .max_history = SAMPLES_MAX_HISTORY, .batch = 16, .progress = 1};
    int quiet = 0;
    CliFlag flags[] = {
        {"--model", CLI_STRING, &o.model_dir, .meta = "DIR", .required = 1, .help = "the target model"},
        {"--data", CLI_STRING, &o.data_dir, .meta = "DIR", .required = 1, .help = "prepared dataset (its train split)"},
        {"--out", CLI_STRING, &o.out, .meta = "FILE", .required = 1, .help = "teacher file to write"},
        {"--template", CLI_STRING, &o.tmpl, .choices = "lcrec|tiger", .help = "prompt template (default: the model's)"},
        {"--beam", CLI_INT, &o.beam, .lo = 1, .hi = 4096, .help = "beam width (the K of top-K)"},
        {"--users", CLI_INT, &o.users, .lo = 0, .hi = 1 << 30, .help = "only the first N users with train samples (0: all)"},
        {"--max-history", CLI_INT, &o.max_history, .lo = 0, .hi = 100000, .help = "history items kept per prompt"},
        {"--batch", CLI_INT, &o.batch, .lo = 1, .hi = 4096, .help = "samples per beam-search call"},
        {"--threads", CLI_INT, &o.threads, .lo = 1, .hi = 4096, .help = "threads (default: EARNEST_THREADS or all cores)"},
        {"--quiet", CLI_FLAG, &quiet, .help = "no progress on stderr"},
    };
    CliSpec cli = {.verb = "teacher", .synopsis = "--model TARGET_DIR --data DATA_DIR --out FILE [--beam 20 --users N]",
                   .about = TEACHER_ABOUT, .flags = flags, .n_flags = CLI_COUNT(flags)};
    int st = cli_parse(&cli, argc, argv);
    if (st >= 0) return st;
    o.progress = !quiet;
    threads_init(o.threads);
    Error e;
    OutputLock lock = {.fd = -1};
    if (output_lock(&lock, o.out, &e)) return cli_fail("teacher", &e);
    int rc = teacher_generate(&o, &e);
    output_unlock(&lock);
    return rc ? cli_fail("teacher", &e) : 0;
}
