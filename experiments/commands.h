// commands.h: the verbs of the `earnest` CLI, one cmd_*.c file each.
// Each takes the arguments after the verb (argv[0] is the verb itself) and
// returns the process exit status: 0 success, 1 failure (message printed), 2 usage.
#ifndef EARNEST_COMMANDS_H
#define EARNEST_COMMANDS_H

int cmd_forward(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_dump_attn(int argc, char **argv);
int cmd_prepare(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_analyze(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_teacher(int argc, char **argv);

#endif
