/* This module implements the size handshake of the structs a caller
 * allocates for the database side (docs/api.md, "ABI"): what a program that
 * loads the library at run time asks before it hands one over. */
#include <mailagent/db.h>
#include <mailagent/llm.h>
#include <mailagent/outbox.h>

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
