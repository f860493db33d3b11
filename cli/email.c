/* The `mailagent email` commands: list mails, show one mail with its outbox
 * intents and LLM row, and flag or unflag a mail through the outbox. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define MAX_ID INT64_MAX

static const char *const mail_statuses[] = {"pending", "synced", "fetch_failed", "failed",
                                            "dead_letter", NULL};

static bool known(const char *const *values, const char *v)
{
    for (; *values; values++)
        if (strcmp(*values, v) == 0)
            return true;
    return false;
}

/* ---- shared by list and get ------------------------------------------------ */

static json_object *mail_json(const mae_email_row *m)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "internal_id", json_object_new_int64(m->internal_id));
    json_object_object_add(o, "message_id", cli_json_string(m->message_id));
    json_object_object_add(o, "thread_id", cli_json_string(m->thread_id));
    json_object_object_add(o, "subject", cli_json_string(m->subject));
    json_object_object_add(o, "sender", cli_json_string(m->sender));
    json_object_object_add(o, "sender_name", cli_json_string(m->sender_name));
    json_object_object_add(o, "to_addr", cli_json_string(m->to_addr));
    json_object_object_add(o, "cc_addr", cli_json_string(m->cc_addr));
    json_object_object_add(o, "date_received", cli_json_string(m->date_received));
    json_object_object_add(o, "mailbox", cli_json_string(m->mailbox));
    json_object_object_add(o, "is_read", json_object_new_boolean(m->is_read));
    json_object_object_add(o, "is_flagged", json_object_new_boolean(m->is_flagged));
    json_object_object_add(o, "sync_status", cli_json_string(m->sync_status));
    json_object_object_add(o, "notion_page_id", cli_json_string(m->notion_page_id));
    json_object_object_add(o, "notion_thread_id", cli_json_string(m->notion_thread_id));
    json_object_object_add(o, "sync_error", cli_json_string(m->sync_error));
    json_object_object_add(o, "retry_count", json_object_new_int64(m->retry_count));
    json_object_object_add(o, "next_retry_at", cli_json_time(m->next_retry_at));
    json_object_object_add(o, "created_at", cli_json_time(m->created_at));
    json_object_object_add(o, "updated_at", cli_json_time(m->updated_at));
    return o;
}

static json_object *intent_json(const mae_outbox_row *r)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "outbox_id", json_object_new_int64(r->outbox_id));
    json_object_object_add(o, "internal_id", json_object_new_int64(r->internal_id));
    json_object_object_add(o, "op_type", cli_json_string(r->op_type));
    json_object_object_add(o, "target", cli_json_string(r->target));
    json_object_object_add(o, "payload", cli_json_embed(r->payload_json));
    json_object_object_add(o, "source", cli_json_string(r->source));
    json_object_object_add(o, "status", cli_json_string(r->status));
    json_object_object_add(o, "attempts", json_object_new_int64(r->attempts));
    json_object_object_add(o, "last_error", cli_json_string(r->last_error));
    json_object_object_add(o, "next_retry_at", cli_json_time(r->next_retry_at));
    json_object_object_add(o, "created_at", cli_json_time(r->created_at));
    json_object_object_add(o, "updated_at", cli_json_time(r->updated_at));
    return o;
}

static json_object *llm_json(const mae_llm_row *r)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "internal_id", json_object_new_int64(r->internal_id));
    json_object_object_add(o, "notion_page_id", cli_json_string(r->notion_page_id));
    json_object_object_add(o, "mailbox", cli_json_string(r->mailbox));
    json_object_object_add(o, "status", cli_json_string(r->status));
    json_object_object_add(o, "retry_count", json_object_new_int64(r->retry_count));
    json_object_object_add(o, "next_retry_at", cli_json_time(r->next_retry_at));
    json_object_object_add(o, "last_error", cli_json_string(r->last_error));
    json_object_object_add(o, "model", cli_json_string(r->model));
    json_object_object_add(o, "input_tokens", json_object_new_int64(r->input_tokens));
    json_object_object_add(o, "output_tokens", json_object_new_int64(r->output_tokens));
    json_object_object_add(o, "cache_read_input_tokens",
                           json_object_new_int64(r->cache_read_input_tokens));
    json_object_object_add(o, "cache_creation_input_tokens",
                           json_object_new_int64(r->cache_creation_input_tokens));
    json_object_object_add(o, "latency_ms", json_object_new_int64(r->latency_ms));
    json_object_object_add(o, "labels", cli_json_embed(r->labels_json));
    json_object_object_add(o, "created_at", cli_json_time(r->created_at));
    json_object_object_add(o, "updated_at", cli_json_time(r->updated_at));
    return o;
}

/* One "key  value" line of a record; NULL or "" values print "-". */
static void kv(const char *key, const char *value)
{
    char cell[1024];
    printf("  %-20s %s\n", key,
           value && *value ? cli_fmt_cell(value, 300, cell, sizeof cell) : "-");
}

static void kv_int(const char *key, int64_t v)
{
    char buf[32];
    kv(key, cli_fmt_int(v, buf, sizeof buf));
}

static void kv_time(const char *key, double t)
{
    char buf[64];
    kv(key, cli_fmt_time(t, buf, sizeof buf));
}

/* ---- email list ------------------------------------------------------------ */

static int list_table(const mae_email_list *list)
{
    static const char *const head[] = {"ID", "STATUS", "RETRIES", "RECEIVED", "MAILBOX",
                                       "FROM", "NOTION PAGE", "SUBJECT"};
    cli_table *t = cli_table_new("rlrlllll", head);
    if (!t) {
        cli_error("out of memory");
        return CLI_FAIL;
    }
    for (size_t i = 0; i < list->count; i++) {
        const mae_email_row *m = &list->rows[i];
        char id[32], retries[32], date[128], box[128], from[128], page[128], subj[256];
        const char *cells[] = {
            cli_fmt_int(m->internal_id, id, sizeof id),
            m->sync_status,
            cli_fmt_int(m->retry_count, retries, sizeof retries),
            cli_fmt_cell(m->date_received, 25, date, sizeof date),
            cli_fmt_cell(m->mailbox, 20, box, sizeof box),
            cli_fmt_cell(m->sender, 30, from, sizeof from),
            cli_fmt_cell(m->notion_page_id, 36, page, sizeof page),
            cli_fmt_cell(m->subject, 50, subj, sizeof subj),
        };
        if (!cli_table_row(t, cells)) {
            cli_table_free(t);
            cli_error("out of memory");
            return CLI_FAIL;
        }
    }
    cli_table_print(t);
    cli_table_free(t);
    return cli_finish_stdout();
}

static int run_list(const cli_command *cmd, cli_config *cfg, int argc, char **argv)
{
    static const struct option opts[] = {
        {"status", required_argument, NULL, 's'},
        {"limit", required_argument, NULL, 'n'},
        {"json", no_argument, NULL, 'j'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    const char *status = NULL;
    int64_t limit = 50;
    bool json = false;
    int c, rc;
    mae_db *db = NULL;
    mae_email_list *list = NULL;

    while ((c = cli_getopt(cmd, cfg, argc, argv, "s:n:", opts)) != -1) {
        switch (c) {
        case 's':
            if (!known(mail_statuses, optarg))
                return cli_usage_error(cmd, "unknown status '%s' (pending, synced, "
                                       "fetch_failed, failed, dead_letter)", optarg);
            status = optarg;
            break;
        case 'n':
            if (!cli_parse_int64(optarg, 1, 1000000, &limit))
                return cli_usage_error(cmd, "--limit wants a number from 1 to 1000000, not '%s'",
                                       optarg);
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            return CLI_OK;
        default:
            return CLI_USAGE;
        }
    }
    if (!cli_positionals(cmd, argc, argv, 0, 0))
        return CLI_USAGE;
    if ((rc = cli_open_db(cfg, true, NULL, &db)) != CLI_OK)
        return rc;
    rc = mae_sync_store_list(db, status, (int)limit, &list);
    if (rc != MAE_OK) {
        rc = cli_db_failure(db, "cannot list mails", rc);
        mae_db_close(db);
        return rc;
    }
    mae_db_close(db);
    if (json) {
        json_object *arr = json_object_new_array();
        for (size_t i = 0; i < list->count; i++)
            json_object_array_add(arr, mail_json(&list->rows[i]));
        rc = cli_json_print(arr);
    } else if (list->count == 0) {
        printf("no mails%s%s\n", status ? " with status " : "", status ? status : "");
        rc = cli_finish_stdout();
    } else {
        rc = list_table(list);
    }
    mae_email_list_free(list);
    return rc;
}

const cli_command cli_email_list = {
    "email", "list", "[--status S] [--limit N] [--json]",
    "List mails, newest first, with their sync state.",
    "Options:\n"
    "  --status S       only mails in this sync status: pending, synced,\n"
    "                   fetch_failed, failed, dead_letter\n"
    "  --limit N        at most N mails (default 50)\n"
    "  --json           a JSON array of mails instead of the table\n",
    run_list,
};

/* ---- email get ------------------------------------------------------------- */

static void print_mail(const mae_email_row *m, const mae_outbox_list *intents,
                       const mae_llm_row *llm)
{
    char from[512];
    printf("Mail #%lld\n", (long long)m->internal_id);
    kv("message_id", m->message_id);
    kv("subject", m->subject);
    if (m->sender_name && *m->sender_name && m->sender && *m->sender)
        snprintf(from, sizeof from, "%s <%s>", m->sender_name, m->sender);
    else
        snprintf(from, sizeof from, "%s", m->sender ? m->sender : "");
    kv("from", from);
    kv("to", m->to_addr);
    kv("cc", m->cc_addr);
    kv("date_received", m->date_received);
    kv("mailbox", m->mailbox);
    kv("thread_id", m->thread_id);
    kv("read", m->is_read ? "yes" : "no");
    kv("flagged", m->is_flagged ? "yes" : "no");
    kv("sync_status", m->sync_status);
    kv("notion_page_id", m->notion_page_id);
    kv("notion_thread_id", m->notion_thread_id);
    kv_int("retry_count", m->retry_count);
    kv_time("next_retry_at", m->next_retry_at);
    kv("sync_error", m->sync_error);
    kv_time("created_at", m->created_at);
    kv_time("updated_at", m->updated_at);

    printf("\nOutbox intents: %zu\n", intents->count);
    if (intents->count > 0) {
        static const char *const head[] = {"ID", "OP", "TARGET", "STATUS", "ATTEMPTS",
                                           "SOURCE", "NEXT RETRY", "UPDATED", "PAYLOAD",
                                           "LAST ERROR"};
        cli_table *t = cli_table_new("rlllrlllll", head);
        for (size_t i = 0; t && i < intents->count; i++) {
            const mae_outbox_row *r = &intents->rows[i];
            char id[32], att[32], next[64], upd[64], pay[256], err[256];
            const char *cells[] = {
                cli_fmt_int(r->outbox_id, id, sizeof id), r->op_type, r->target, r->status,
                cli_fmt_int(r->attempts, att, sizeof att), r->source,
                cli_fmt_time(r->next_retry_at, next, sizeof next),
                cli_fmt_time(r->updated_at, upd, sizeof upd),
                cli_fmt_cell(r->payload_json, 40, pay, sizeof pay),
                cli_fmt_cell(r->last_error, 60, err, sizeof err),
            };
            cli_table_row(t, cells);
        }
        cli_table_print(t);
        cli_table_free(t);
    }

    printf("\nLLM processing:%s\n", llm ? "" : " none");
    if (llm) {
        kv("status", llm->status);
        kv("model", llm->model);
        kv_int("input_tokens", llm->input_tokens);
        kv_int("output_tokens", llm->output_tokens);
        kv_int("cache_read_tokens", llm->cache_read_input_tokens);
        kv_int("cache_write_tokens", llm->cache_creation_input_tokens);
        kv_int("latency_ms", llm->latency_ms);
        kv_int("retry_count", llm->retry_count);
        kv_time("next_retry_at", llm->next_retry_at);
        kv("last_error", llm->last_error);
        kv("labels", llm->labels_json);
        kv_time("updated_at", llm->updated_at);
    }
}

static int run_get(const cli_command *cmd, cli_config *cfg, int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    bool json = false;
    int64_t id;
    int c, rc;
    mae_db *db = NULL;
    mae_email_row *mail = NULL;
    mae_outbox_list *intents = NULL;
    mae_llm_row *llm = NULL;

    while ((c = cli_getopt(cmd, cfg, argc, argv, "", opts)) != -1) {
        if (c == 'h')
            return CLI_OK;
        if (c != 'j')
            return CLI_USAGE;
        json = true;
    }
    if (!cli_positionals(cmd, argc, argv, 1, 1))
        return CLI_USAGE;
    if (!cli_parse_int64(argv[optind], 1, MAX_ID, &id))
        return cli_usage_error(cmd, "invalid mail id '%s' (a positive integer)", argv[optind]);
    if ((rc = cli_open_db(cfg, true, NULL, &db)) != CLI_OK)
        return rc;

    rc = mae_sync_store_get(db, id, &mail);
    if (rc == MAE_ENOTFOUND) {
        cli_error("no mail with id %lld", (long long)id);
        rc = CLI_FAIL;
        goto out;
    }
    if (rc != MAE_OK) {
        rc = cli_db_failure(db, "cannot read the mail", rc);
        goto out;
    }
    if ((rc = mae_outbox_list_for_email(db, id, &intents)) != MAE_OK) {
        rc = cli_db_failure(db, "cannot read the outbox", rc);
        goto out;
    }
    rc = mae_llm_store_get(db, id, &llm);
    if (rc != MAE_OK && rc != MAE_ENOTFOUND) {
        rc = cli_db_failure(db, "cannot read the LLM store", rc);
        goto out;
    }
    if (json) {
        json_object *o = json_object_new_object();
        json_object *arr = json_object_new_array();
        for (size_t i = 0; i < intents->count; i++)
            json_object_array_add(arr, intent_json(&intents->rows[i]));
        json_object_object_add(o, "email", mail_json(mail));
        json_object_object_add(o, "outbox", arr);
        json_object_object_add(o, "llm", llm ? llm_json(llm) : NULL);
        rc = cli_json_print(o);
    } else {
        print_mail(mail, intents, llm);
        rc = cli_finish_stdout();
    }
out:
    mae_llm_row_free(llm);
    mae_outbox_list_free(intents);
    mae_email_row_free(mail);
    mae_db_close(db);
    return rc;
}

const cli_command cli_email_get = {
    "email", "get", "[--json] ID",
    "Show one mail: its sync state, its outbox intents and its LLM row.",
    "Arguments:\n"
    "  ID               the mail's internal_id\n"
    "Options:\n"
    "  --json           one JSON object {\"email\", \"outbox\", \"llm\"}\n"
    "Exits 1 when there is no such mail.\n",
    run_get,
};

/* ---- email flag ------------------------------------------------------------ */

/* How long the publisher may take to deliver the events before the command
 * gives up on them: the intents are written either way. */
#define FLUSH_TIMEOUT_MS 2000

typedef struct flag_result {
    const char *target;
    int64_t outbox_id;
    bool inserted;
} flag_result;

static int open_publisher(const cli_config *cfg, mae_publisher **out)
{
    char err[256] = "";
    mae_publisher_config pc;
    mae_publisher_config_init(&pc);
    pc.redis_url = cfg->redis_url;
    /* No Redis URL: the hub of a one-machine install, when there is one. */
    if (!cfg->redis_url && cfg->relay_error) {
        cli_error("%s", cfg->relay_error);
        return CLI_USAGE;
    }
    if (!cfg->redis_url) {
        pc.relay_url = cfg->relay_url;
        pc.relay_token = cfg->relay_token;
    }
    pc.channel = cfg->channel;
    /* MAILAGENT_STREAM / --stream: the event goes to the stream too, so a
     * relay in stream mode sees it. */
    pc.stream_key = cfg->stream_key;
    pc.error_buf = err;
    pc.error_buf_size = sizeof err;
    int rc = mae_publisher_open(&pc, out);
    if (rc == MAE_EINVAL) {
        cli_error("cannot start the publisher: %s", err[0] ? err : mae_strerror(rc));
        return CLI_USAGE;
    }
    if (rc != MAE_OK) {
        cli_error("cannot start the publisher: %s", mae_strerror(rc));
        return CLI_FAIL;
    }
    return CLI_OK;
}

/* Writes one intent per target in one transaction, so that "both" leaves
 * both or neither; the events go out after the commit. */
static int enqueue_all(mae_db *db, int64_t id, const char *const *targets, const char *payload,
                       flag_result *res, size_t *nres)
{
    int rc = mae_db_begin(db);
    if (rc != MAE_OK)
        return cli_db_failure(db, "cannot start a transaction", rc);
    for (size_t i = 0; targets[i]; i++) {
        res[i].target = targets[i];
        rc = mae_outbox_enqueue(db, id, "flag", targets[i], payload, MAE_SOURCE_CLI,
                                &res[i].outbox_id, &res[i].inserted);
        if (rc == MAE_ENOTFOUND) {
            mae_db_rollback(db);
            cli_error("no mail with id %lld", (long long)id);
            return CLI_FAIL;
        }
        if (rc != MAE_OK) {
            rc = cli_db_failure(db, "cannot enqueue the intent", rc);
            mae_db_rollback(db);
            return rc;
        }
        *nres = i + 1;
    }
    if ((rc = mae_db_commit(db)) != MAE_OK) {
        rc = cli_db_failure(db, "cannot commit the intents", rc);
        mae_db_rollback(db);
        return rc;
    }
    return CLI_OK;
}

/* Says on stderr what became of the events; never changes the exit code. */
static void report_delivery(const cli_config *cfg, mae_publisher *pub, size_t expected)
{
    mae_publisher_stats st;
    if (expected == 0)
        return;
    if (!cfg->redis_url && !cfg->relay_url) {
        cli_error("no Redis URL (MAILAGENT_REDIS_URL or --redis) and no relay URL "
                  "(MAILAGENT_RELAY_URL): the outbox.enqueued event was not published");
        return;
    }
    mae_publisher_flush(pub, FLUSH_TIMEOUT_MS);
    mae_publisher_stats_get(pub, &st);
    uint64_t delivered = st.published < expected ? st.published : expected;
    if (delivered < expected)
        cli_error("warning: %llu of %zu events could not be delivered to %s%s%s "
                  "(the intents are written)",
                  (unsigned long long)(expected - delivered), expected,
                  cfg->redis_url ? "Redis" : "the relay",
                  st.last_error[0] ? ": " : "", st.last_error);
}

/* What `email flag` was asked to do. */
typedef struct flag_args {
    const char *const *targets; /* NULL-terminated */
    bool unflag, json;
    int64_t id;
} flag_args;

/* Parses the options and the mail id into a. True to go on; false when the
 * command ends here with *rc (help shown, or a usage error printed). */
static bool parse_flag(const cli_command *cmd, cli_config *cfg, int argc, char **argv,
                       flag_args *a, int *rc)
{
    static const struct option opts[] = {
        {"target", required_argument, NULL, 't'},
        {"unflag", no_argument, NULL, 'u'},
        {"json", no_argument, NULL, 'j'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    static const char *const both[] = {"notion", "mailapp", NULL};
    static const char *const notion[] = {"notion", NULL};
    static const char *const mailapp[] = {"mailapp", NULL};
    int c;

    a->targets = both;
    a->unflag = a->json = false;
    *rc = CLI_USAGE;
    while ((c = cli_getopt(cmd, cfg, argc, argv, "", opts)) != -1) {
        switch (c) {
        case 't':
            if (strcmp(optarg, "both") == 0)
                a->targets = both;
            else if (strcmp(optarg, "notion") == 0)
                a->targets = notion;
            else if (strcmp(optarg, "mailapp") == 0)
                a->targets = mailapp;
            else {
                *rc = cli_usage_error(cmd, "unknown target '%s' (notion, mailapp, both)", optarg);
                return false;
            }
            break;
        case 'u':
            a->unflag = true;
            break;
        case 'j':
            a->json = true;
            break;
        case 'h':
            *rc = CLI_OK;
            return false;
        default:
            return false;
        }
    }
    if (!cli_positionals(cmd, argc, argv, 1, 1))
        return false;
    if (!cli_parse_int64(argv[optind], 1, MAX_ID, &a->id)) {
        *rc = cli_usage_error(cmd, "invalid mail id '%s' (a positive integer)", argv[optind]);
        return false;
    }
    return true;
}

/* Prints the intents written for a, as JSON or as one line each. */
static int print_flag(const flag_args *a, const flag_result *res, size_t nres)
{
    if (!a->json) {
        for (size_t i = 0; i < nres; i++)
            printf("%s mail #%lld for %s: outbox #%lld %s\n", a->unflag ? "unflag" : "flag",
                   (long long)a->id, res[i].target, (long long)res[i].outbox_id,
                   res[i].inserted ? "enqueued" : "merged into the pending intent");
        return cli_finish_stdout();
    }
    json_object *o = json_object_new_object();
    json_object *arr = json_object_new_array();
    for (size_t i = 0; i < nres; i++) {
        json_object *r = json_object_new_object();
        json_object_object_add(r, "outbox_id", json_object_new_int64(res[i].outbox_id));
        json_object_object_add(r, "target", json_object_new_string(res[i].target));
        json_object_object_add(r, "inserted", json_object_new_boolean(res[i].inserted));
        json_object_array_add(arr, r);
    }
    json_object_object_add(o, "internal_id", json_object_new_int64(a->id));
    json_object_object_add(o, "flagged", json_object_new_boolean(!a->unflag));
    json_object_object_add(o, "intents", arr);
    return cli_json_print(o);
}

static int run_flag(const cli_command *cmd, cli_config *cfg, int argc, char **argv)
{
    flag_args a;
    int rc;
    flag_result res[2];
    size_t nres = 0, inserted = 0;
    mae_publisher *pub = NULL;
    mae_db *db = NULL;
    mae_email_row *mail = NULL;

    if (!parse_flag(cmd, cfg, argc, argv, &a, &rc))
        return rc;
    if ((rc = open_publisher(cfg, &pub)) != CLI_OK)
        return rc;
    if ((rc = cli_open_db(cfg, false, pub, &db)) != CLI_OK)
        goto out;
    /* Looked up first for a clear "no mail" rather than a foreign-key error. */
    rc = mae_sync_store_get(db, a.id, &mail);
    if (rc == MAE_ENOTFOUND) {
        cli_error("no mail with id %lld", (long long)a.id);
        rc = CLI_FAIL;
        goto out;
    }
    if (rc != MAE_OK) {
        rc = cli_db_failure(db, "cannot read the mail", rc);
        goto out;
    }
    rc = enqueue_all(db, a.id, a.targets, a.unflag ? "{\"flagged\":false}" : "{\"flagged\":true}",
                     res, &nres);
    mae_db_close(db);
    db = NULL;
    if (rc != CLI_OK)
        goto out;

    for (size_t i = 0; i < nres; i++)
        inserted += res[i].inserted;
    rc = print_flag(&a, res, nres);
    report_delivery(cfg, pub, inserted);
out:
    mae_email_row_free(mail);
    mae_db_close(db);
    /* The flush already waited; closing must not wait again for a Redis
     * that did not answer. */
    mae_publisher_close(pub, 100);
    return rc;
}

const cli_command cli_email_flag = {
    "email", "flag", "[--target notion|mailapp|both] [--unflag] [--json] ID",
    "Flag (or unflag) a mail: enqueue an outbox intent per target.",
    "Writes an outbox intent with op_type \"flag\", payload {\"flagged\":true} (or\n"
    "false with --unflag) and source \"cli\"; a pending intent for the same mail\n"
    "and target is merged into instead. Each new intent is announced as an\n"
    "outbox.enqueued event on Redis; when that cannot be delivered it is said on\n"
    "stderr, and the command still succeeds, since the intent is written.\n"
    "Arguments:\n"
    "  ID               the mail's internal_id\n"
    "Options:\n"
    "  --target T       notion, mailapp or both (default both: one intent each)\n"
    "  --unflag         clear the flag instead\n"
    "  --json           the intents written, as JSON\n",
    run_flag,
};
