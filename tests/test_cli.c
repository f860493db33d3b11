/* Tests of the mailagent command without Redis: every command's table and
 * JSON output against a database prepared through the library, exit codes,
 * help, bad arguments, a missing database, and `email flag` writing rows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include <mailagent/events.h>

#include "tests/cli/cli_run.h"

#ifndef MAE_TEST_TMPDIR
#define MAE_TEST_TMPDIR "/tmp"
#endif

#define NON_ASCII_SUBJECT "\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C \xE2\x80\x94 caf\xC3\xA9"

typedef struct fixture {
    char dir[256];
    char db[300];
    char db_arg[320];          /* MAILAGENT_DB=... */
    int64_t o_pending, o_done, o_dead, o_processing;
} fixture;

/* ---- database preparation, through the library only ---------------------- */

static mae_db *open_db(const char *path)
{
    mae_db_config cfg;
    mae_db *db = NULL;
    mae_db_config_init(&cfg);
    cfg.path = path;
    assert_int_equal(mae_db_open(&cfg, &db), MAE_OK);
    return db;
}

static void add_mail(mae_db *db, int64_t id, const char *subject, const char *date)
{
    char mid[64];
    snprintf(mid, sizeof mid, "<m%lld@example.com>", (long long)id);
    mae_email m = {.internal_id = id, .message_id = mid, .thread_id = "t-1",
                   .subject = subject, .sender = "alice@example.com", .sender_name = "Alice",
                   .to_addr = "bob@example.com", .date_received = date, .mailbox = "INBOX"};
    assert_int_equal(mae_sync_store_upsert(db, &m), MAE_OK);
}

static int64_t enqueue(mae_db *db, int64_t mail, const char *op, const char *target,
                       const char *payload, const char *source)
{
    int64_t id = 0;
    bool inserted = false;
    assert_int_equal(mae_outbox_enqueue(db, mail, op, target, payload, source, &id, &inserted),
                     MAE_OK);
    assert_true(inserted);
    return id;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    mkdir(MAE_TEST_TMPDIR, 0755);
    snprintf(f->dir, sizeof f->dir, "%s/cli-XXXXXX", MAE_TEST_TMPDIR);
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof f->db, "%s/mail.db", f->dir);
    snprintf(f->db_arg, sizeof f->db_arg, "MAILAGENT_DB=%s", f->db);

    mae_db *db = open_db(f->db);
    add_mail(db, 101, "Quarterly report", "2024-05-19 10:00:00");
    add_mail(db, 102, NON_ASCII_SUBJECT, "2024-05-19 11:00:00");
    add_mail(db, 103, "Retry me", "2024-05-19 09:00:00");
    add_mail(db, 104, "Dead", "2024-05-18 09:00:00");
    add_mail(db, 105, "Second synced", "2024-05-19 08:00:00");
    assert_int_equal(mae_sync_store_mark_synced(db, 101, "page-101", NULL, "new_watcher"), MAE_OK);
    assert_int_equal(mae_sync_store_mark_synced(db, 105, "page-105", NULL, NULL), MAE_OK);
    assert_int_equal(mae_sync_store_mark_failed(db, 103, "fetch_failed", "timeout", NULL), MAE_OK);
    for (int i = 0; i < 5; i++)
        assert_int_equal(mae_sync_store_mark_failed(db, 104, "failed", "boom", NULL), MAE_OK);

    f->o_pending = enqueue(db, 101, "flag", "notion", "{\"flagged\":true}", "ai_reviewed_handler");
    f->o_done = enqueue(db, 101, "mark_read", "mailapp", "{\"read\":true}", "cli");
    assert_int_equal(mae_outbox_mark_done(db, f->o_done), MAE_OK);
    f->o_dead = enqueue(db, 103, "move", "mailapp", "{\"mailbox\":\"Archive\"}", NULL);
    for (int i = 0; i < 5; i++)
        assert_int_equal(mae_outbox_mark_failed(db, f->o_dead, "no such mailbox", NULL), MAE_OK);
    f->o_processing = enqueue(db, 102, "flag", "mailapp", "{\"flagged\":true}", "cli");
    assert_int_equal(mae_outbox_mark_processing(db, f->o_processing), MAE_OK);

    mae_llm_usage u1 = {.model = "claude-haiku", .input_tokens = 100, .output_tokens = 20,
                        .cache_read_input_tokens = 5, .cache_creation_input_tokens = 7,
                        .latency_ms = 1000, .labels_json = "{\"category\":\"work\"}"};
    mae_llm_usage u2 = {.model = "claude-haiku", .input_tokens = 300, .output_tokens = 40,
                        .latency_ms = 3000};
    assert_int_equal(mae_llm_store_mark_success(db, 101, "page-101", &u1), MAE_OK);
    assert_int_equal(mae_llm_store_mark_success(db, 105, "page-105", &u2), MAE_OK);
    assert_int_equal(mae_llm_store_mark_failed(db, 103, "upstream 529", NULL), MAE_OK);
    assert_int_equal(mae_llm_store_mark_pending(db, 102, NULL, "INBOX"), MAE_OK);
    mae_db_close(db);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    const char *suffix[] = {"", "-wal", "-shm", "-journal"};
    char path[400];
    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s%s", f->db, suffix[i]);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/garbage.db", f->dir);
    unlink(path);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* ---- helpers --------------------------------------------------------------- */

/* Runs with MAILAGENT_DB set to the fixture's database. */
static int run_db(fixture *f, cli_proc *p, const char *const *args)
{
    const char *env[] = {f->db_arg, NULL};
    return cli_run(p, env, args);
}

static json_object *parse_out(const cli_proc *p)
{
    json_object *o = json_tokener_parse(p->out);
    if (!o)
        fail_msg("stdout is not JSON:\n%s", p->out);
    return o;
}

static json_object *get(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v))
        fail_msg("no key %s in %s", key, json_object_to_json_string(o));
    return v;
}

static int64_t get_int(json_object *o, const char *key)
{
    return json_object_get_int64(get(o, key));
}

static const char *get_str(json_object *o, const char *key)
{
    return json_object_get_string(get(o, key));
}

/* The line of text that contains needle, copied into buf. */
static const char *line_with(const char *text, const char *needle, char *buf, size_t size)
{
    const char *hit = strstr(text, needle);
    if (!hit)
        fail_msg("no line with '%s' in:\n%s", needle, text);
    const char *start = hit;
    while (start > text && start[-1] != '\n')
        start--;
    size_t n = strcspn(start, "\n");
    snprintf(buf, size, "%.*s", (int)n, start);
    return buf;
}

/* An error is one "mailagent..." line, plus the usage line for usage errors. */
static void assert_usage_error(const cli_proc *p)
{
    if (p->status != 2)
        fail_msg("exit %d, stderr: %s", p->status, p->err);
    assert_string_equal(p->out, "");
    assert_int_equal(strncmp(p->err, "mailagent", 9), 0);
    assert_non_null(strstr(p->err, "\nusage: mailagent"));
    assert_int_equal(cli_lines(p->err), 2);
}

static void assert_one_line_failure(const cli_proc *p)
{
    if (p->status != 1)
        fail_msg("exit %d, stderr: %s", p->status, p->err);
    assert_string_equal(p->out, "");
    assert_int_equal(strncmp(p->err, "mailagent: ", 11), 0);
    assert_int_equal(cli_lines(p->err), 1);
}

/* ---- help and usage ---------------------------------------------------------- */

static void test_help_everywhere(void **state)
{
    (void)state;
    const char *const *cases[] = {
        ARGS("--help"), ARGS("-h"), ARGS("help"),
        ARGS("email", "--help"), ARGS("admin", "--help"), ARGS("llm", "--help"),
        ARGS("events", "--help"),
        ARGS("email", "list", "--help"), ARGS("email", "get", "--help"),
        ARGS("email", "flag", "--help"), ARGS("admin", "queue-depth", "--help"),
        ARGS("admin", "stats", "--help"), ARGS("admin", "retry-dead-letter", "--help"),
        ARGS("llm", "stats", "--help"), ARGS("events", "tail", "--help"),
        ARGS("email", "get", "-h"),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cli_proc p;
        assert_int_equal(cli_run(&p, NULL, cases[i]), 0);
        assert_int_equal(strncmp(p.out, "usage: mailagent", 16), 0);
        assert_string_equal(p.err, "");
        cli_free(&p);
    }
    /* The top-level help names every command. */
    cli_proc p;
    cli_run(&p, NULL, ARGS("--help"));
    const char *names[] = {"email list", "email get", "email flag", "admin queue-depth",
                           "admin stats", "admin retry-dead-letter", "llm stats",
                           "events tail"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        assert_non_null(strstr(p.out, names[i]));
    cli_free(&p);
    /* A leaf's help lists its options. */
    cli_run(&p, NULL, ARGS("events", "tail", "--help"));
    assert_non_null(strstr(p.out, "--count N"));
    assert_non_null(strstr(p.out, "--timeout SECONDS"));
    assert_non_null(strstr(p.out, "--type PREFIX"));
    cli_free(&p);
    cli_run(&p, NULL, ARGS("--version"));
    assert_int_equal(p.status, 0);
    assert_non_null(strstr(p.out, MAE_VERSION_STRING));
    cli_free(&p);
}

static void test_usage_errors(void **state)
{
    fixture *f = *state;
    const char *const *cases[] = {
        ARGS("bogus"),
        ARGS("--bogus"),
        ARGS("email"),
        ARGS("email", "bogus"),
        ARGS("email", "--bogus", "list"),
        ARGS("email", "list", "--bogus"),
        ARGS("email", "list", "-x"),
        ARGS("email", "list", "extra"),
        ARGS("email", "list", "--limit"),
        ARGS("email", "list", "--limit", "abc"),
        ARGS("email", "list", "--limit", "-5"),
        ARGS("email", "list", "--limit", "0"),
        ARGS("email", "list", "--limit", "99999999999999999999"),
        ARGS("email", "list", "--limit", "5x"),
        ARGS("email", "list", "--status", "nope"),
        ARGS("email", "list", "--json=yes"),
        ARGS("email", "get"),
        ARGS("email", "get", "abc"),
        ARGS("email", "get", "-5"),
        ARGS("email", "get", "0"),
        ARGS("email", "get", "99999999999999999999"),
        ARGS("email", "get", "101", "102"),
        ARGS("email", "flag"),
        ARGS("email", "flag", "101", "--target", "nope"),
        ARGS("email", "flag", "x1"),
        ARGS("admin", "queue-depth", "extra"),
        ARGS("admin", "stats", "--limit", "3"),
        ARGS("admin", "retry-dead-letter"),
        ARGS("admin", "retry-dead-letter", "abc"),
        ARGS("llm", "stats", "1"),
        ARGS("events", "tail"),                          /* no Redis URL */
        ARGS("events", "tail", "--count", "abc"),
        ARGS("events", "tail", "--timeout", "-1"),
        ARGS("--channel", "", "admin", "stats"),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cli_proc p;
        run_db(f, &p, cases[i]);
        assert_usage_error(&p);
        cli_free(&p);
    }
    /* A bad value is named on the error line. */
    cli_proc p;
    run_db(f, &p, ARGS("email", "list", "--limit", "abc"));
    assert_non_null(strstr(p.err, "'abc'"));
    cli_free(&p);
    run_db(f, &p, ARGS("email", "list", "--frobnicate"));
    assert_non_null(strstr(p.err, "--frobnicate"));
    cli_free(&p);
}

/* ---- database problems --------------------------------------------------------- */

static void test_missing_database(void **state)
{
    fixture *f = *state;
    char path[400], arg[420];
    struct stat st;
    snprintf(path, sizeof path, "%s/nope.db", f->dir);
    snprintf(arg, sizeof arg, "MAILAGENT_DB=%s", path);
    const char *env[] = {arg, NULL};
    const char *const *cases[] = {
        ARGS("email", "list"), ARGS("email", "get", "101"), ARGS("email", "flag", "101"),
        ARGS("admin", "queue-depth"), ARGS("admin", "stats"),
        ARGS("admin", "retry-dead-letter", "1"), ARGS("llm", "stats", "--json"),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cli_proc p;
        cli_run(&p, env, cases[i]);
        assert_one_line_failure(&p);
        assert_non_null(strstr(p.err, "nope.db"));
        assert_int_not_equal(stat(path, &st), 0);   /* not created */
        cli_free(&p);
    }
    /* --db wins over the environment, before or after the command. */
    cli_proc p;
    run_db(f, &p, ARGS("--db", path, "admin", "stats"));
    assert_one_line_failure(&p);
    cli_free(&p);
    run_db(f, &p, ARGS("admin", "stats", "--db", path));
    assert_one_line_failure(&p);
    cli_free(&p);
    assert_int_not_equal(stat(path, &st), 0);
    /* No database configured at all is a usage problem. */
    cli_run(&p, NULL, ARGS("admin", "stats"));
    assert_int_equal(p.status, 2);
    assert_int_equal(cli_lines(p.err), 1);
    assert_non_null(strstr(p.err, "MAILAGENT_DB"));
    cli_free(&p);
}

static void test_not_a_database(void **state)
{
    fixture *f = *state;
    char path[400];
    snprintf(path, sizeof path, "%s/garbage.db", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    for (int i = 0; i < 200; i++)
        fputs("this is not an SQLite database at all\n", fp);
    fclose(fp);
    cli_proc p;
    cli_run(&p, NULL, ARGS("--db", path, "email", "list", "--json"));
    assert_one_line_failure(&p);
    cli_free(&p);
    cli_run(&p, NULL, ARGS("--db", f->dir, "admin", "stats"));   /* a directory */
    assert_one_line_failure(&p);
    cli_free(&p);
}

/* ---- email list ------------------------------------------------------------------ */

static void test_email_list_table(void **state)
{
    fixture *f = *state;
    cli_proc p;
    char line[512];
    assert_int_equal(run_db(f, &p, ARGS("email", "list")), 0);
    assert_string_equal(p.err, "");
    assert_int_equal(cli_lines(p.out), 6);   /* header + 5 mails */
    line_with(p.out, "ID", line, sizeof line);
    assert_non_null(strstr(line, "STATUS"));
    assert_non_null(strstr(line, "SUBJECT"));
    line_with(p.out, "Quarterly report", line, sizeof line);
    assert_non_null(strstr(line, "101"));
    assert_non_null(strstr(line, "synced"));
    assert_non_null(strstr(line, "page-101"));
    assert_non_null(strstr(line, "alice@example.com"));
    line_with(p.out, "Dead", line, sizeof line);
    assert_non_null(strstr(line, "dead_letter"));
    /* Non-ASCII is printed raw, and newest first puts 102 on the first row. */
    line_with(p.out, NON_ASCII_SUBJECT, line, sizeof line);
    assert_non_null(strstr(line, "102"));
    assert_true(strstr(p.out, NON_ASCII_SUBJECT) < strstr(p.out, "Quarterly report"));
    /* The columns are aligned: STATUS starts at the same offset everywhere. */
    const char *hdr = p.out;
    size_t col = (size_t)(strstr(hdr, "STATUS") - hdr);
    line_with(p.out, "Quarterly report", line, sizeof line);
    assert_int_equal(strncmp(line + col, "synced", 6), 0);
    cli_free(&p);

    assert_int_equal(run_db(f, &p, ARGS("email", "list", "--status", "synced")), 0);
    assert_int_equal(cli_lines(p.out), 3);
    assert_null(strstr(p.out, "Dead"));
    cli_free(&p);

    assert_int_equal(run_db(f, &p, ARGS("email", "list", "--status", "failed")), 0);
    assert_string_equal(p.out, "no mails with status failed\n");
    cli_free(&p);
}

static void test_email_list_json(void **state)
{
    fixture *f = *state;
    cli_proc p;
    assert_int_equal(run_db(f, &p, ARGS("email", "list", "--json")), 0);
    json_object *arr = parse_out(&p);
    assert_true(json_object_is_type(arr, json_type_array));
    assert_int_equal(json_object_array_length(arr), 5);
    const int64_t order[] = {102, 101, 103, 105, 104};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(get_int(json_object_array_get_idx(arr, i), "internal_id"), order[i]);
    json_object *m102 = json_object_array_get_idx(arr, 0);
    assert_string_equal(get_str(m102, "subject"), NON_ASCII_SUBJECT);
    assert_string_equal(get_str(m102, "sync_status"), "pending");
    assert_null(get(m102, "notion_page_id"));
    json_object *m101 = json_object_array_get_idx(arr, 1);
    assert_string_equal(get_str(m101, "sync_status"), "synced");
    assert_string_equal(get_str(m101, "notion_page_id"), "page-101");
    assert_string_equal(get_str(m101, "message_id"), "<m101@example.com>");
    assert_string_equal(get_str(m101, "sender_name"), "Alice");
    json_object *m103 = json_object_array_get_idx(arr, 2);
    assert_string_equal(get_str(m103, "sync_status"), "fetch_failed");
    assert_int_equal(get_int(m103, "retry_count"), 1);
    assert_true(json_object_get_double(get(m103, "next_retry_at")) > 0);
    json_object *m104 = json_object_array_get_idx(arr, 4);
    assert_string_equal(get_str(m104, "sync_status"), "dead_letter");
    assert_string_equal(get_str(m104, "sync_error"), "Max retries exceeded: boom");
    json_object_put(arr);
    /* Non-ASCII is raw in the JSON text, not \u-escaped. */
    assert_non_null(strstr(p.out, NON_ASCII_SUBJECT));
    cli_free(&p);

    assert_int_equal(run_db(f, &p, ARGS("email", "list", "--json", "--limit", "2",
                                        "--status", "synced")), 0);
    arr = parse_out(&p);
    assert_int_equal(json_object_array_length(arr), 2);
    json_object_put(arr);
    cli_free(&p);

    assert_int_equal(run_db(f, &p, ARGS("email", "list", "--limit", "1", "--json")), 0);
    arr = parse_out(&p);
    assert_int_equal(json_object_array_length(arr), 1);
    json_object_put(arr);
    cli_free(&p);

    assert_int_equal(run_db(f, &p, ARGS("email", "list", "--json", "--status", "failed")), 0);
    arr = parse_out(&p);
    assert_int_equal(json_object_array_length(arr), 0);
    json_object_put(arr);
    cli_free(&p);
}

/* ---- email get ------------------------------------------------------------------ */

static void test_email_get(void **state)
{
    fixture *f = *state;
    cli_proc p;
    char line[512];
    assert_int_equal(run_db(f, &p, ARGS("email", "get", "101")), 0);
    assert_string_equal(p.err, "");
    assert_int_equal(strncmp(p.out, "Mail #101\n", 10), 0);
    line_with(p.out, "sync_status", line, sizeof line);
    assert_non_null(strstr(line, "synced"));
    line_with(p.out, "notion_page_id", line, sizeof line);
    assert_non_null(strstr(line, "page-101"));
    line_with(p.out, "from", line, sizeof line);
    assert_non_null(strstr(line, "Alice <alice@example.com>"));
    assert_non_null(strstr(p.out, "Outbox intents: 2\n"));
    line_with(p.out, "ai_reviewed_handler", line, sizeof line);
    assert_non_null(strstr(line, "flag"));
    assert_non_null(strstr(line, "notion"));
    assert_non_null(strstr(line, "pending"));
    assert_non_null(strstr(line, "{\"flagged\":true}"));
    line_with(p.out, "mark_read", line, sizeof line);
    assert_non_null(strstr(line, "done"));
    line_with(p.out, "model", line, sizeof line);
    assert_non_null(strstr(line, "claude-haiku"));
    line_with(p.out, "input_tokens", line, sizeof line);
    assert_non_null(strstr(line, "100"));
    cli_free(&p);

    /* --json before or after the id. */
    assert_int_equal(run_db(f, &p, ARGS("email", "get", "--json", "101")), 0);
    json_object *o = parse_out(&p);
    json_object *mail = get(o, "email");
    assert_int_equal(get_int(mail, "internal_id"), 101);
    assert_string_equal(get_str(mail, "subject"), "Quarterly report");
    json_object *outbox = get(o, "outbox");
    assert_int_equal(json_object_array_length(outbox), 2);
    json_object *i0 = json_object_array_get_idx(outbox, 0);
    assert_int_equal(get_int(i0, "outbox_id"), f->o_pending);
    assert_string_equal(get_str(i0, "op_type"), "flag");
    assert_string_equal(get_str(i0, "target"), "notion");
    assert_string_equal(get_str(i0, "status"), "pending");
    assert_string_equal(get_str(i0, "source"), "ai_reviewed_handler");
    assert_true(json_object_get_boolean(get(get(i0, "payload"), "flagged")));
    json_object *i1 = json_object_array_get_idx(outbox, 1);
    assert_int_equal(get_int(i1, "outbox_id"), f->o_done);
    assert_string_equal(get_str(i1, "status"), "done");
    json_object *llm = get(o, "llm");
    assert_string_equal(get_str(llm, "status"), "success");
    assert_string_equal(get_str(llm, "model"), "claude-haiku");
    assert_int_equal(get_int(llm, "input_tokens"), 100);
    assert_int_equal(get_int(llm, "output_tokens"), 20);
    assert_int_equal(get_int(llm, "latency_ms"), 1000);
    assert_string_equal(get_str(get(llm, "labels"), "category"), "work");
    json_object_put(o);
    cli_free(&p);

    assert_int_equal(run_db(f, &p, ARGS("email", "get", "104", "--json")), 0);
    o = parse_out(&p);
    assert_null(get(o, "llm"));
    assert_int_equal(json_object_array_length(get(o, "outbox")), 0);
    assert_string_equal(get_str(get(o, "email"), "sync_status"), "dead_letter");
    json_object_put(o);
    cli_free(&p);

    assert_int_equal(run_db(f, &p, ARGS("email", "get", "104")), 0);
    assert_non_null(strstr(p.out, "Outbox intents: 0\n"));
    assert_non_null(strstr(p.out, "LLM processing: none\n"));
    cli_free(&p);

    /* Not found: exit 1 and one line. */
    run_db(f, &p, ARGS("email", "get", "999"));
    assert_one_line_failure(&p);
    assert_non_null(strstr(p.err, "999"));
    cli_free(&p);
    run_db(f, &p, ARGS("email", "get", "999", "--json"));
    assert_one_line_failure(&p);
    cli_free(&p);
}

/* ---- email flag ------------------------------------------------------------------ */

static mae_outbox_list *intents_of(fixture *f, int64_t mail)
{
    mae_db *db = open_db(f->db);
    mae_outbox_list *list = NULL;
    assert_int_equal(mae_outbox_list_for_email(db, mail, &list), MAE_OK);
    mae_db_close(db);
    return list;
}

static const mae_outbox_row *find_intent(const mae_outbox_list *l, const char *op,
                                         const char *target, const char *status)
{
    for (size_t i = 0; i < l->count; i++)
        if (strcmp(l->rows[i].op_type, op) == 0 && strcmp(l->rows[i].target, target) == 0 &&
            strcmp(l->rows[i].status, status) == 0)
            return &l->rows[i];
    return NULL;
}

static void test_email_flag_writes(void **state)
{
    fixture *f = *state;
    cli_proc p;
    /* Default target both: one intent per target, no Redis: exit 0 anyway. */
    assert_int_equal(run_db(f, &p, ARGS("email", "flag", "105")), 0);
    assert_int_equal(cli_lines(p.out), 2);
    assert_non_null(strstr(p.out, "notion"));
    assert_non_null(strstr(p.out, "mailapp"));
    assert_int_equal(cli_lines(p.err), 1);
    assert_non_null(strstr(p.err, "not published"));
    cli_free(&p);

    mae_outbox_list *l = intents_of(f, 105);
    assert_int_equal(l->count, 2);
    const mae_outbox_row *n = find_intent(l, "flag", "notion", "pending");
    const mae_outbox_row *m = find_intent(l, "flag", "mailapp", "pending");
    assert_non_null(n);
    assert_non_null(m);
    assert_string_equal(n->payload_json, "{\"flagged\":true}");
    assert_string_equal(m->payload_json, "{\"flagged\":true}");
    assert_string_equal(n->source, "cli");
    assert_string_equal(m->source, "cli");
    int64_t notion_id = n->outbox_id;
    mae_outbox_list_free(l);

    /* --unflag on one target merges into the pending intent: same id. */
    assert_int_equal(run_db(f, &p, ARGS("email", "flag", "--unflag", "--target", "notion",
                                        "--json", "105")), 0);
    json_object *o = parse_out(&p);
    assert_int_equal(get_int(o, "internal_id"), 105);
    assert_false(json_object_get_boolean(get(o, "flagged")));
    json_object *arr = get(o, "intents");
    assert_int_equal(json_object_array_length(arr), 1);
    assert_int_equal(get_int(json_object_array_get_idx(arr, 0), "outbox_id"), notion_id);
    assert_false(json_object_get_boolean(get(json_object_array_get_idx(arr, 0), "inserted")));
    json_object_put(o);
    assert_string_equal(p.err, "");   /* merged: there was no event to publish */
    cli_free(&p);

    l = intents_of(f, 105);
    assert_int_equal(l->count, 2);
    n = find_intent(l, "flag", "notion", "pending");
    assert_non_null(n);
    assert_string_equal(n->payload_json, "{\"flagged\":false}");
    mae_outbox_list_free(l);

    /* mailapp only, on a mail with a processing flag intent: a new row. */
    assert_int_equal(run_db(f, &p, ARGS("email", "flag", "102", "--target", "mailapp")), 0);
    cli_free(&p);
    l = intents_of(f, 102);
    assert_int_equal(l->count, 2);
    assert_non_null(find_intent(l, "flag", "mailapp", "pending"));
    assert_non_null(find_intent(l, "flag", "mailapp", "processing"));
    mae_outbox_list_free(l);

    /* A mail that does not exist: exit 1, nothing written. */
    run_db(f, &p, ARGS("email", "flag", "999"));
    assert_one_line_failure(&p);
    cli_free(&p);
    l = intents_of(f, 999);
    assert_int_equal(l->count, 0);
    mae_outbox_list_free(l);

    /* A malformed Redis URL is refused before anything is written. */
    run_db(f, &p, ARGS("email", "flag", "104", "--redis", "http://nope"));
    assert_int_equal(p.status, 2);
    assert_int_equal(cli_lines(p.err), 1);
    cli_free(&p);
    l = intents_of(f, 104);
    assert_int_equal(l->count, 0);
    mae_outbox_list_free(l);
}

/* ---- admin ----------------------------------------------------------------------- */

static void test_admin_queue_depth(void **state)
{
    fixture *f = *state;
    cli_proc p;
    char line[512];
    assert_int_equal(run_db(f, &p, ARGS("admin", "queue-depth")), 0);
    assert_string_equal(p.err, "");
    assert_non_null(strstr(p.out, "OUTBOX STATUS"));
    line_with(p.out, "processing ", line, sizeof line);
    assert_non_null(strstr(line, "1"));
    line_with(p.out, "dead_letter", line, sizeof line);
    assert_non_null(strstr(line, "1"));
    line_with(p.out, "TARGET", line, sizeof line);
    assert_non_null(strstr(line, "PENDING"));
    line_with(p.out, "notion ", line, sizeof line);
    assert_int_equal(strncmp(line, "notion", 6), 0);
    line_with(p.out, "under 1 min", line, sizeof line);
    assert_non_null(strstr(line, " 1"));
    assert_string_equal(line + strlen(line) - 2, " 1");
    cli_free(&p);

    assert_int_equal(run_db(f, &p, ARGS("admin", "queue-depth", "--json")), 0);
    json_object *o = parse_out(&p);
    json_object *s = get(o, "by_status");
    assert_int_equal(get_int(s, "pending"), 1);
    assert_int_equal(get_int(s, "processing"), 1);
    assert_int_equal(get_int(s, "done"), 1);
    assert_int_equal(get_int(s, "failed"), 0);
    assert_int_equal(get_int(s, "dead_letter"), 1);
    json_object *t = get(o, "by_target");
    assert_int_equal(get_int(get(t, "notion"), "pending"), 1);
    assert_int_equal(get_int(get(t, "mailapp"), "pending"), 0);
    assert_int_equal(get_int(get(t, "mailapp"), "processing"), 1);
    json_object *ages = get(o, "pending_age");
    assert_int_equal(get_int(ages, "under_1m"), 1);
    assert_int_equal(get_int(ages, "over_30m"), 0);
    assert_true(json_object_get_double(get(o, "oldest_pending_age_s")) >= 0);
    json_object_put(o);
    cli_free(&p);
}

static void test_admin_stats(void **state)
{
    fixture *f = *state;
    cli_proc p;
    char line[512];
    assert_int_equal(run_db(f, &p, ARGS("admin", "stats", "--json")), 0);
    json_object *o = parse_out(&p);
    assert_int_equal(get_int(o, "emails_synced"), 2);
    json_object *e = get(o, "emails");
    assert_int_equal(get_int(e, "total"), 5);
    assert_int_equal(get_int(get(e, "by_status"), "synced"), 2);
    assert_int_equal(get_int(get(e, "by_status"), "pending"), 1);
    assert_int_equal(get_int(get(e, "by_status"), "fetch_failed"), 1);
    assert_int_equal(get_int(get(e, "by_status"), "dead_letter"), 1);
    json_object *ob = get(o, "outbox");
    assert_int_equal(get_int(ob, "total"), 4);
    assert_int_equal(get_int(get(ob, "by_status"), "dead_letter"), 1);
    json_object *l = get(o, "llm");
    assert_int_equal(get_int(l, "total"), 4);
    assert_int_equal(get_int(get(l, "by_status"), "success"), 2);
    assert_int_equal(get_int(get(l, "tokens"), "input"), 400);
    json_object_put(o);
    cli_free(&p);

    assert_int_equal(run_db(f, &p, ARGS("admin", "stats")), 0);
    assert_int_equal(strncmp(p.out, "emails_synced  2 of 5 mails\n", 28), 0);
    line_with(p.out, "fetch_failed", line, sizeof line);
    assert_non_null(strstr(line, "1"));
    assert_non_null(strstr(p.out, "MAIL STATUS"));
    assert_non_null(strstr(p.out, "OUTBOX STATUS"));
    assert_non_null(strstr(p.out, "LLM STATUS"));
    cli_free(&p);
}

static void test_admin_retry_dead_letter(void **state)
{
    fixture *f = *state;
    cli_proc p;
    char id[32], missing[32], pending[32];
    snprintf(id, sizeof id, "%lld", (long long)f->o_dead);
    snprintf(pending, sizeof pending, "%lld", (long long)f->o_pending);
    snprintf(missing, sizeof missing, "%lld", (long long)f->o_dead + 1000);

    assert_int_equal(run_db(f, &p, ARGS("admin", "retry-dead-letter", id)), 0);
    assert_non_null(strstr(p.out, "pending"));
    cli_free(&p);
    mae_db *db = open_db(f->db);
    mae_outbox_row *row = NULL;
    assert_int_equal(mae_outbox_get(db, f->o_dead, &row), MAE_OK);
    assert_string_equal(row->status, "pending");
    assert_int_equal(row->attempts, 0);
    mae_outbox_row_free(row);
    mae_db_close(db);

    /* Not (any more) a dead letter: exit 1, one line. */
    run_db(f, &p, ARGS("admin", "retry-dead-letter", id));
    assert_one_line_failure(&p);
    assert_non_null(strstr(p.err, "not a dead letter"));
    cli_free(&p);
    run_db(f, &p, ARGS("admin", "retry-dead-letter", pending, "--json"));
    assert_one_line_failure(&p);
    cli_free(&p);
    run_db(f, &p, ARGS("admin", "retry-dead-letter", missing));
    assert_one_line_failure(&p);
    cli_free(&p);
}

/* ---- llm stats ------------------------------------------------------------------- */

static void test_llm_stats(void **state)
{
    fixture *f = *state;
    cli_proc p;
    char line[512];
    assert_int_equal(run_db(f, &p, ARGS("llm", "stats", "--json")), 0);
    json_object *o = parse_out(&p);
    assert_int_equal(get_int(o, "total"), 4);
    json_object *s = get(o, "by_status");
    assert_int_equal(get_int(s, "success"), 2);
    assert_int_equal(get_int(s, "failed"), 1);
    assert_int_equal(get_int(s, "pending"), 1);
    assert_int_equal(get_int(o, "successes"), 2);
    json_object *t = get(o, "tokens");
    assert_int_equal(get_int(t, "input"), 400);
    assert_int_equal(get_int(t, "output"), 60);
    assert_int_equal(get_int(t, "cache_read_input"), 5);
    assert_int_equal(get_int(t, "cache_creation_input"), 7);
    json_object *lat = get(o, "latency_ms");
    assert_true(json_object_get_double(get(lat, "mean")) == 2000.0);
    double p95 = json_object_get_double(get(lat, "p95"));
    assert_true(p95 >= 1000.0 && p95 <= 3000.0);
    json_object_put(o);
    cli_free(&p);

    assert_int_equal(run_db(f, &p, ARGS("llm", "stats")), 0);
    line_with(p.out, "input tokens", line, sizeof line);
    assert_non_null(strstr(line, "400"));
    line_with(p.out, "latency mean ms", line, sizeof line);
    assert_non_null(strstr(line, "2000.0"));
    line_with(p.out, "success ", line, sizeof line);
    assert_non_null(strstr(line, "2"));
    line_with(p.out, "total", line, sizeof line);
    assert_non_null(strstr(line, "4"));
    cli_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_help_everywhere),
        T(test_usage_errors),
        T(test_missing_database),
        T(test_not_a_database),
        T(test_email_list_table),
        T(test_email_list_json),
        T(test_email_get),
        T(test_email_flag_writes),
        T(test_admin_queue_depth),
        T(test_admin_stats),
        T(test_admin_retry_dead_letter),
        T(test_llm_stats),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
