/* Internal interface of the command's HTTP/1.1 client for SSE streams
 * (`events tail --relay`): one GET on one connection, the response head
 * read and bounded, the body handed out decoded (chunked, sized, or to the
 * close). Plain http:// only: a relay is on this machine or behind a proxy
 * that terminates TLS. Not thread-safe; one per connection. */
#ifndef MAILAGENT_CLI_SSE_HTTP_H
#define MAILAGENT_CLI_SSE_HTTP_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stream/chunked.h"

/* The longest response head taken. */
#define CLI_HTTP_HEAD_MAX 16384

typedef struct cli_http_url {
    char host[256];     /* without brackets for IPv6 */
    int port;
    char path[1024];    /* with the query, starting with '/' */
} cli_http_url;

/* Parses http://host[:port][/path][?query] (port 80 by default). A URL
 * with no path, or "/", gets default_path. Returns false with the reason. */
bool cli_http_url_parse(const char *url, const char *default_path, cli_http_url *u, char *err,
                        size_t errlen);

typedef struct cli_http {
    int fd;
    int status;             /* the response's status code */
    bool chunked;
    bool sized;             /* Content-Length given */
    uint64_t left;          /* sized: body bytes still to come */
    bool done;              /* the body ended */
    mae__chunked ch;
    char buf[CLI_HTTP_HEAD_MAX];
    size_t len;             /* bytes in buf not yet handed out */
    char reason[128];       /* the status line's reason, for messages */
} cli_http;

/* Connects to u, sends GET u->path with the Host header, headers (each
 * "Name: value\r\n", may be NULL), and reads the response head, all within
 * timeout_ms, giving up early when *stop becomes non-zero. Returns true
 * with h->status set (any status: the caller decides); false with the
 * reason (nothing to close). */
bool cli_http_get(cli_http *h, const cli_http_url *u, const char *headers, int timeout_ms,
                  volatile sig_atomic_t *stop, char *err, size_t errlen);

/* Reads what the socket has (call when poll says h->fd is readable, or
 * while cli_http_buffered is true) and writes up to cap body bytes to
 * out. Returns 1 with *n (possibly 0) bytes, 0 when the body ended
 * (the peer closed, or the last chunk came), -1 with the reason. */
int cli_http_read(cli_http *h, char *out, size_t cap, size_t *n, char *err, size_t errlen);

/* True when body bytes already read are waiting to be handed out. */
bool cli_http_buffered(const cli_http *h);

/* Closes the connection; harmless twice. */
void cli_http_close(cli_http *h);

#endif
