/* This module implements the schema of docs/stores.md: the three tables and
 * their indexes, created where missing in one transaction. */
#include <stdio.h>

#include "db/db_internal.h"

/* The schema of docs/stores.md, column for column. Only IF NOT EXISTS: a file
 * made by the original system keeps its tables, extra columns and indexes. */
static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS email_metadata ("
    " internal_id INTEGER PRIMARY KEY, message_id TEXT UNIQUE, thread_id TEXT,"
    " subject TEXT, sender TEXT, sender_name TEXT, to_addr TEXT, cc_addr TEXT,"
    " date_received TEXT, mailbox TEXT, is_read INTEGER DEFAULT 0,"
    " is_flagged INTEGER DEFAULT 0, sync_status TEXT DEFAULT 'pending',"
    " notion_page_id TEXT, notion_thread_id TEXT, sync_error TEXT,"
    " retry_count INTEGER DEFAULT 0, next_retry_at REAL, created_at REAL,"
    " updated_at REAL);"
    "CREATE INDEX IF NOT EXISTS idx_email_message_id ON email_metadata(message_id);"
    "CREATE INDEX IF NOT EXISTS idx_email_thread_id ON email_metadata(thread_id);"
    "CREATE INDEX IF NOT EXISTS idx_email_date_received ON email_metadata(date_received DESC);"
    "CREATE INDEX IF NOT EXISTS idx_email_sync_status ON email_metadata(sync_status);"
    "CREATE INDEX IF NOT EXISTS idx_email_mailbox ON email_metadata(mailbox);"
    "CREATE INDEX IF NOT EXISTS idx_email_next_retry ON email_metadata(next_retry_at)"
    " WHERE sync_status IN ('fetch_failed','failed');"
    "CREATE TABLE IF NOT EXISTS email_outbox ("
    " outbox_id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " internal_id INTEGER NOT NULL REFERENCES email_metadata(internal_id) ON DELETE CASCADE,"
    " op_type TEXT NOT NULL,"
    " target TEXT NOT NULL CHECK (target IN ('mailapp','notion')),"
    " payload_json TEXT NOT NULL, source TEXT,"
    " status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN"
    " ('pending','processing','done','failed','dead_letter')),"
    " attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, next_retry_at REAL,"
    " created_at REAL NOT NULL, updated_at REAL NOT NULL);"
    "CREATE UNIQUE INDEX IF NOT EXISTS ux_outbox_pending_intent"
    " ON email_outbox(internal_id, op_type, target) WHERE status='pending';"
    "CREATE INDEX IF NOT EXISTS idx_outbox_status_retry ON email_outbox(status, next_retry_at)"
    " WHERE status IN ('pending','failed');"
    "CREATE INDEX IF NOT EXISTS idx_outbox_internal_id ON email_outbox(internal_id);"
    "CREATE INDEX IF NOT EXISTS idx_outbox_target_status ON email_outbox(target, status);"
    "CREATE TABLE IF NOT EXISTS llm_processing ("
    " internal_id INTEGER PRIMARY KEY, notion_page_id TEXT, mailbox TEXT, status TEXT,"
    " retry_count INTEGER DEFAULT 0, next_retry_at REAL, last_error TEXT, model TEXT,"
    " input_tokens INTEGER, output_tokens INTEGER, cache_read_input_tokens INTEGER,"
    " cache_creation_input_tokens INTEGER, latency_ms INTEGER, labels_json TEXT,"
    " created_at REAL, updated_at REAL);"
    "CREATE INDEX IF NOT EXISTS idx_llm_status ON llm_processing(status);"
    "CREATE INDEX IF NOT EXISTS idx_llm_next_retry ON llm_processing(next_retry_at)"
    " WHERE status='failed';";

int mae__db_create_schema(mae_db *db, char *msg, size_t size)
{
    /* One transaction, so concurrent first opens do not interleave. */
    int rc = sqlite3_exec(db->sql, mae__sql_begin, NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_exec(db->sql, schema_sql, NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(db->sql, mae__sql_commit, NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK) {
        /* Keep the first error's text: the rollback would replace it. */
        snprintf(msg, size, "%s", sqlite3_errmsg(db->sql));
        if (!sqlite3_get_autocommit(db->sql))
            sqlite3_exec(db->sql, mae__sql_rollback, NULL, NULL, NULL);
    }
    return rc;
}
