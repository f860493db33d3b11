/* The relay's log (relay/log.c): one line on stderr per mae__relay_say
 * (declared in relay/server.h), rate-limited per kind of line. */
#ifndef MAE_RELAY_LOG_H
#define MAE_RELAY_LOG_H

/* Lines of one kind written per second before the rest are counted
 * instead (relay.md, "Log lines"). */
#define MAE__RELAY_LOG_BURST 10

/* Writes the count of each kind whose second is over (called from the
 * relay's periodic limits check, so a burst's count comes out within a
 * second or two even when nothing else is logged). */
void mae__relay_log_tick(void);

/* Writes every pending count now (at exit; also registered with atexit at
 * the first line). */
void mae__relay_log_flush(void);

#endif
