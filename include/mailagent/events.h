/* mailagent-events: record mail-sync state in SQLite and announce every
 * change as a JSON event on Redis pub/sub. This header includes them all. */
#ifndef MAILAGENT_EVENTS_H
#define MAILAGENT_EVENTS_H

#include <mailagent/version.h>
#include <mailagent/common.h>
#include <mailagent/publisher.h>
#include <mailagent/db.h>
#include <mailagent/sync_store.h>
#include <mailagent/outbox.h>
#include <mailagent/llm.h>

#endif
