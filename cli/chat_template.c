/* inferd chat-template DIR: renders a chat request with the model's chat
 * template exactly as the server will, for checking prompts by hand and
 * for the parity tests against transformers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "cli/cli.h"
#include "template/template.h"

static void usage(FILE *f)
{
    fprintf(f,
        "usage: inferd chat-template DIR [--chat-template FILE] [--jsonl]\n\n"
        "Reads one JSON request on stdin:\n"
        "  {\"messages\": [...], \"tools\": [...], \"documents\": [...],\n"
        "   \"add_generation_prompt\": true, \"continue_final_message\": false,\n"
        "   \"chat_template_kwargs\": {...}}   (all but messages optional)\n"
        "and prints the rendered prompt exactly, with no added newline.\n\n"
        "  DIR                   model folder (tokenizer_config.json, chat_template.jinja)\n"
        "  --chat-template FILE  use this template file instead of the model's\n"
        "  --jsonl               read one request per line; print one JSON line each:\n"
        "                        {\"text\": ...}, {\"raised\": ...} or {\"error\": ...}\n\n"
        "Exits 1 when the template raises (its message on stderr) or fails.\n");
}

static int run_jsonl(tmpl_chat *c)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        if (n == 1 && line[0] == '\n') continue;
        json_error_t je;
        json_t *req = json_loadb(line, (size_t)n, 0, &je), *res = json_object();
        inferd_error e = {{0}};
        char *out = NULL;
        size_t len = 0;
        int raised = 0;
        if (!req) json_object_set_new(res, "error", json_sprintf("bad JSON: %s", je.text));
        else if (tmpl_chat_render(c, req, &out, &len, &raised, &e))
            json_object_set_new(res, raised ? "raised" : "error", json_string(e.msg));
        else
            json_object_set_new(res, "text", json_stringn(out, len));
        char *s = json_dumps(res, JSON_COMPACT | JSON_ENSURE_ASCII);
        printf("%s\n", s ? s : "{\"error\": \"cannot encode\"}");
        free(s);
        free(out);
        json_decref(req);
        json_decref(res);
    }
    free(line);
    return 0;
}

int cli_chat_template(int argc, char **argv)
{
    const char *dir = NULL, *override = NULL;
    int jsonl = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); return 0; }
        if (!strcmp(argv[i], "--chat-template") && i + 1 < argc) override = argv[++i];
        else if (!strcmp(argv[i], "--jsonl")) jsonl = 1;
        else if (argv[i][0] == '-') {
            fprintf(stderr, "inferd chat-template: unknown flag '%s'\n\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (!dir) dir = argv[i];
        else { usage(stderr); return 2; }
    }
    if (!dir) { usage(stderr); return 2; }
    inferd_error e = {{0}};
    tmpl_chat *c = NULL;
    if (tmpl_chat_load(dir, override, &c, &e)) {
        fprintf(stderr, "inferd chat-template: %s\n", e.msg);
        return 1;
    }
    if (jsonl) {
        int rc = run_jsonl(c);
        tmpl_chat_free(c);
        return rc;
    }
    json_error_t je;
    json_t *req = json_loadf(stdin, 0, &je);
    int rc = 1;
    char *out = NULL;
    size_t len = 0;
    int raised = 0;
    if (!req) {
        fprintf(stderr, "inferd chat-template: stdin is not JSON: %s (line %d)\n", je.text, je.line);
    } else if (tmpl_chat_render(c, req, &out, &len, &raised, &e)) {
        if (raised) fprintf(stderr, "%s\n", e.msg);
        else fprintf(stderr, "inferd chat-template: %s\n", e.msg);
    } else {
        fwrite(out, 1, len, stdout);
        rc = 0;
    }
    free(out);
    json_decref(req);
    tmpl_chat_free(c);
    return rc;
}
