/* template/chat.c: the module's front door (tmpl_chat_*, see template.h:
 * messages -> prompt text for api/ and cli/, never tokens). Chat templates of
 * a model folder, found and fed the way transformers' apply_chat_template
 * does: which file wins, which named template is picked, which variables the
 * template sees, and continue_final_message. */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <dirent.h>

#include "template/template.h"
#include "template/jinja.h"

#define MAX_TEMPLATE_FILE (16u << 20)
#define MAX_NAMED 32

struct tmpl_chat {
    size_t n;
    char *names[MAX_NAMED];
    tmpl_template *t[MAX_NAMED];
    json_t *tokens; /* bos_token, eos_token, ... as transformers passes them */
};

static int add_template(tmpl_chat *c, const char *name, const char *src, size_t len,
                        inferd_error *e)
{
    if (c->n == MAX_NAMED) { err_set(e, "more than %d named chat templates", MAX_NAMED); return -1; }
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->names[i], name)) { err_set(e, "chat template '%s' given twice", name); return -1; }
    tmpl_template *t;
    if (tmpl_compile(src, len, &t, e)) {
        err_prefix(e, "chat template '%s'", name);
        return -1;
    }
    c->names[c->n] = strdup(name);
    c->t[c->n++] = t;
    return c->names[c->n - 1] ? 0 : -1;
}

/* chat_template as tokenizer_config.json or chat_template.json holds it: a
 * string, or a list of {"name", "template"}. */
static int add_json_templates(tmpl_chat *c, json_t *ct, const char *where, inferd_error *e)
{
    if (json_is_string(ct))
        return add_template(c, "default", json_string_value(ct), json_string_length(ct), e);
    if (!json_is_array(ct)) {
        err_set(e, "%s: chat_template must be a string or a list of named templates", where);
        return -1;
    }
    size_t i;
    json_t *x;
    json_array_foreach(ct, i, x) {
        json_t *nm = json_object_get(x, "name"), *src = json_object_get(x, "template");
        if (!json_is_string(nm) || !json_is_string(src)) {
            err_set(e, "%s: chat_template[%zu] needs string 'name' and 'template'", where, i);
            return -1;
        }
        if (add_template(c, json_string_value(nm), json_string_value(src), json_string_length(src), e))
            return -1;
    }
    return 0;
}

static int load_file_template(tmpl_chat *c, const char *name, const char *path, inferd_error *e)
{
    char *src;
    size_t len;
    if (file_read_all(path, MAX_TEMPLATE_FILE, &src, &len, e)) return -1;
    int rc = add_template(c, name, src, len, e);
    free(src);
    return rc;
}

/* Newer checkpoints keep extra templates as additional_chat_templates/NAME.jinja */
static int load_additional(tmpl_chat *c, const char *dir, inferd_error *e)
{
    char path[4096];
    if (path_join(path, sizeof path, dir, "additional_chat_templates")) return 0;
    DIR *d = opendir(path);
    if (!d) return 0;
    struct dirent *de;
    int rc = 0;
    while (!rc && (de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n <= 6 || strcmp(de->d_name + n - 6, ".jinja")) continue;
        char name[256], file[4096 + 256];
        snprintf(name, sizeof name, "%.*s", (int)(n - 6), de->d_name);
        snprintf(file, sizeof file, "%s/%s", path, de->d_name);
        rc = load_file_template(c, name, file, e);
    }
    closedir(d);
    return rc;
}

/* A token is a string or an AddedToken object {"content": ...}. */
static json_t *token_string(json_t *v)
{
    if (json_is_string(v)) return json_incref(v);
    if (json_is_object(v) && json_is_string(json_object_get(v, "content")))
        return json_incref(json_object_get(v, "content"));
    return NULL;
}

static const char *const SPECIAL[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                      "pad_token", "cls_token", "mask_token", NULL};

static int load_tokens(tmpl_chat *c, json_t *cfg, inferd_error *e)
{
    if (!(c->tokens = json_object())) { err_set(e, "out of memory"); return -1; }
    if (!cfg) return 0;
    for (int i = 0; SPECIAL[i]; i++) {
        json_t *s = token_string(json_object_get(cfg, SPECIAL[i]));
        if (s) json_object_set_new(c->tokens, SPECIAL[i], s);
    }
    json_t *extra = json_object_get(cfg, "additional_special_tokens");
    if (json_is_array(extra) && json_array_size(extra)) {
        json_t *l = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(extra, i, x) {
            json_t *s = token_string(x);
            if (s) json_array_append_new(l, s);
        }
        json_object_set_new(c->tokens, "additional_special_tokens", l);
    }
    return 0;
}

int tmpl_chat_load(const char *model_dir, const char *override_path, tmpl_chat **out,
                   inferd_error *e)
{
    tmpl_chat *c = calloc(1, sizeof *c);
    json_t *cfg = NULL, *ctj = NULL;
    char path[4096];
    if (!c) { err_set(e, "out of memory"); return -1; }
    if (model_dir && !path_join(path, sizeof path, model_dir, "tokenizer_config.json") &&
        file_exists(path)) {
        json_error_t je;
        if (!(cfg = json_load_file(path, JSON_DECODE_INT_AS_REAL, &je))) {
            err_set(e, "%s:%d: %s", path, je.line, je.text);
            goto err;
        }
    }
    if (load_tokens(c, cfg, e)) goto err;
    if (override_path) {
        if (load_file_template(c, "default", override_path, e)) goto err;
    } else if (model_dir && !path_join(path, sizeof path, model_dir, "chat_template.jinja") &&
               file_exists(path)) {
        /* transformers lets the separate file win over tokenizer_config */
        if (load_file_template(c, "default", path, e) || load_additional(c, model_dir, e)) goto err;
    } else if (model_dir && !path_join(path, sizeof path, model_dir, "chat_template.json") &&
               file_exists(path)) {
        json_error_t je;
        if (!(ctj = json_load_file(path, 0, &je))) {
            err_set(e, "%s:%d: %s", path, je.line, je.text);
            goto err;
        }
        if (add_json_templates(c, json_object_get(ctj, "chat_template"), path, e)) goto err;
    } else if (cfg && json_object_get(cfg, "chat_template") &&
               !json_is_null(json_object_get(cfg, "chat_template"))) {
        if (add_json_templates(c, json_object_get(cfg, "chat_template"), "tokenizer_config.json", e))
            goto err;
        if (load_additional(c, model_dir, e)) goto err;
    } else if (model_dir && load_additional(c, model_dir, e)) {
        goto err;
    }
    json_decref(cfg);
    json_decref(ctj);
    *out = c;
    return 0;
err:
    json_decref(cfg);
    json_decref(ctj);
    tmpl_chat_free(c);
    return -1;
}

void tmpl_chat_free(tmpl_chat *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) {
        free(c->names[i]);
        tmpl_free(c->t[i]);
    }
    json_decref(c->tokens);
    free(c);
}

static const tmpl_template *pick(const tmpl_chat *c, int has_tools, const char *want,
                                  inferd_error *e)
{
    if (!c->n) {
        err_set(e, "this model has no chat template (tokenizer_config.json has no chat_template "
                   "and there is no chat_template.jinja); pass one with --chat-template");
        return NULL;
    }
    const char *order[3] = {want, has_tools ? "tool_use" : NULL, "default"};
    for (int k = 0; k < 3; k++) {
        if (!order[k]) continue;
        for (size_t i = 0; i < c->n; i++)
            if (!strcmp(c->names[i], order[k])) return c->t[i];
        if (k == 0) {
            err_set(e, "the model has no chat template named '%s'", want);
            return NULL;
        }
    }
    err_set(e, "this model has multiple chat templates with no default specified");
    return NULL;
}

/* Python's str.strip() bounds on UTF-8 text. */
static void py_strip(const char *s, size_t n, size_t *a, size_t *z)
{
    size_t i = 0, j = n;
    uint32_t cp;
    int k;
    while (i < j && (k = utf8_decode(s + i, j - i, &cp)) > 0 && py_isspace(cp)) i += (size_t)k;
    while (j > i) {
        size_t st = j - 1;
        while (st > i && ((unsigned char)s[st] & 0xC0) == 0x80) st--;
        if ((k = utf8_decode(s + st, j - st, &cp)) <= 0 || !py_isspace(cp)) break;
        j = st;
    }
    *a = i;
    *z = j;
}

/* continue_final_message: cut the prompt right after the last message's
 * text so the model continues it instead of starting a new turn. */
static int continue_final(json_t *messages, char *out, size_t *len, inferd_error *e)
{
    json_t *last = json_array_get(messages, json_array_size(messages) - 1);
    json_t *content = json_object_get(last, "content");
    if (json_is_array(content)) {
        json_t *txt = NULL;
        for (size_t i = json_array_size(content); i-- > 0;)
            if ((txt = json_object_get(json_array_get(content, i), "text"))) break;
        content = txt;
    }
    if (!json_is_string(content)) {
        err_set(e, "continue_final_message is set but we could not find any text to continue in the final message!");
        return -1;
    }
    const char *m = json_string_value(content);
    size_t mn = json_string_length(content), a, z;
    py_strip(m, mn, &a, &z);
    const char *found = NULL;
    for (size_t i = *len + 1; i-- > 0;)
        if (i + (z - a) <= *len && !memcmp(out + i, m + a, z - a)) { found = out + i; break; }
    if (!found) {
        err_set(e, "continue_final_message is set but the final message does not appear in the chat after applying the chat template!");
        return -1;
    }
    /* transformers keeps the message's own trailing whitespace only when the
     * rendering kept the whole message verbatim */
    size_t loc = (size_t)(found - out);
    if (a == 0 && loc + mn <= *len && !memcmp(out + loc, m, mn)) *len = loc + mn;
    else *len = loc + (z - a);
    out[*len] = 0;
    return 0;
}

int tmpl_chat_render(const tmpl_chat *c, json_t *request, char **out, size_t *len,
                     int *raised, inferd_error *e)
{
    if (raised) *raised = 0;
    json_t *messages = json_object_get(request, "messages");
    if (!json_is_array(messages)) { err_set(e, "request: 'messages' must be a list"); return -1; }
    json_t *tools = json_object_get(request, "tools");
    json_t *kw = json_object_get(request, "chat_template_kwargs");
    json_t *name = json_object_get(request, "chat_template_name");
    int has_tools = tools && !json_is_null(tools);
    const tmpl_template *t = pick(c, has_tools, json_is_string(name) ? json_string_value(name) : NULL, e);
    if (!t) return -1;
    int agp = json_is_true(json_object_get(request, "add_generation_prompt"));
    int cont = json_is_true(json_object_get(request, "continue_final_message"));
    if (agp && cont) {
        err_set(e, "continue_final_message and add_generation_prompt are not compatible. Use "
                   "continue_final_message when you want the model to continue the final message, "
                   "and add_generation_prompt when you want to add a header that will prompt it to "
                   "generate a new assistant message instead.");
        return -1;
    }
    if (cont && !json_array_size(messages)) { err_set(e, "continue_final_message needs a message"); return -1; }
    /* {**special_tokens_map, **kwargs}, then the named arguments */
    /* a deep copy: HTTP threads render at once and must share nothing */
    json_t *vars = json_deep_copy(c->tokens);
    if (!vars) { err_set(e, "out of memory"); return -1; }
    if (json_is_object(kw)) json_object_update(vars, kw);
    else if (kw && !json_is_null(kw)) {
        json_decref(vars);
        err_set(e, "request: 'chat_template_kwargs' must be an object");
        return -1;
    }
    json_object_set(vars, "messages", messages);
    json_object_set_new(vars, "tools", has_tools ? json_incref(tools) : json_null());
    json_t *docs = json_object_get(request, "documents");
    json_object_set_new(vars, "documents", docs ? json_incref(docs) : json_null());
    json_object_set_new(vars, "add_generation_prompt", json_boolean(agp));
    int rc = tmpl_render(t, vars, out, len, raised, e);
    json_decref(vars);
    if (rc == 0 && cont && continue_final(messages, *out, len, e)) {
        free(*out);
        *out = NULL;
        return -1;
    }
    return rc;
}
