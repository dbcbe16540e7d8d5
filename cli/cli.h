/* cli: the inferd command line, the top of the program: it wires the modules
 * together (hub -> loader -> model/engine -> api -> server) and is the only
 * place that reads argv and picks an exit status (the modules below return
 * errors and never exit); no module includes this header. Each subcommand
 * lives in its own file and takes the arguments after its name; it returns
 * the process exit status. */
#ifndef INFERD_CLI_H
#define INFERD_CLI_H

int cli_serve(int argc, char **argv);
int cli_generate(int argc, char **argv);
int cli_run(int argc, char **argv);
int cli_pull(int argc, char **argv);
int cli_list(int argc, char **argv);
int cli_rm(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_perplexity(int argc, char **argv);
int cli_embed(int argc, char **argv);
int cli_chat_template(int argc, char **argv);
int cli_tokenize(int argc, char **argv);
int cli_detokenize(int argc, char **argv);

/* Shared helpers for subcommands. */
int cli_parse_int(const char *flag, const char *s, long min, long max, long *out);
int cli_parse_double(const char *flag, const char *s, double *out);

#endif
