/* This module implements the relay's log: one line on stderr per call
 * (relay.md, "Log lines"). At the bottom of the relay's modules: it calls
 * none of them. */
#include <stdarg.h>
#include <stdio.h>

#include "relay/server.h"

void mae__relay_say(const char *fmt, ...)
{
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}
