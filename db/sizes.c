/* This module implements the size handshake of the structs a caller
 * allocates for the database side (docs/api.md, "ABI"): what a program that
 * loads the library at run time asks before it hands one over: the
 * configs, the outcome and totals the stores write, the mail and usage
 * they read. */
#include <mailagent/db.h>
#include <mailagent/llm.h>
#include <mailagent/outbox.h>
#include <mailagent/sync_store.h>

size_t mae_db_config_size(void)
{
    return sizeof(mae_db_config);
}

size_t mae_outbox_depth_size(void)
{
    return sizeof(mae_outbox_depth);
}

size_t mae_llm_totals_size(void)
{
    return sizeof(mae_llm_totals);
}

size_t mae_retry_outcome_size(void)
{
    return sizeof(mae_retry_outcome);
}

size_t mae_email_size(void)
{
    return sizeof(mae_email);
}

size_t mae_llm_usage_size(void)
{
    return sizeof(mae_llm_usage);
}
