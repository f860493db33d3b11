/* Shared declarations of the benchmark harness: timing and latency
 * statistics, the loopback redis-server it starts and stops itself, a
 * counting subscriber, and the result records the five parts fill in. */
#ifndef MAE_BENCH_H
#define MAE_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define BENCH_CHANNEL "mailagent:events:v1"
/* The event every latency and throughput call publishes: the watcher's most
 * common one, with a realistic Notion page id. */
#define BENCH_EVENT "email.synced"
#define BENCH_DATA "{\"notion_page_id\":\"1f3c9a2e-7b4d-4e21-9c0a-5d8e6f7a8b9c\"}"
#define BENCH_SOURCE "new_watcher"

/* ---- time and CPU (util.c) ------------------------------------------------ */
uint64_t now_ns(void);                 /* CLOCK_MONOTONIC */
double now_s(void);
void sleep_ms(int ms);
void sleep_until_ns(uint64_t t);       /* absolute CLOCK_MONOTONIC deadline */
double cpu_thread_s(void);             /* this thread's user+sys */
double cpu_process_s(void);            /* the whole process's user+sys */
uint64_t minflt_thread(void);          /* this thread's minor page faults */
uint64_t task_runtime_ns(pid_t pid, pid_t tid); /* from schedstat; 0 if unknown */
pid_t bench_gettid(void);
/* VmRSS / VmHWM of this process in KiB; 0 when unreadable. */
uint64_t rss_kib(void);
uint64_t hwm_kib(void);
bool reset_hwm(void);                  /* writes 5 to /proc/self/clear_refs */
/* Runs argv (no shell) with stdout and stderr captured into out (the tail
 * when longer); returns its exit status, or -1. */
int run_capture(char *const argv[], char *out, size_t len);

/* ---- latency samples (util.c) ---------------------------------------------- */
typedef struct lat {
    uint64_t *ns;
    size_t n, cap;
    bool sorted;
} lat;

int lat_init(lat *l, size_t cap);      /* pre-touches the array; 0 or -1 */
void lat_free(lat *l);
static inline void lat_add(lat *l, uint64_t ns)
{
    if (l->n < l->cap)
        l->ns[l->n++] = ns;
}
/* The p-quantile (0..1) by nearest rank; 0 when empty. Sorts once. */
uint64_t lat_pct(lat *l, double p);
uint64_t lat_max(lat *l);
double lat_mean(const lat *l);

/* A summary of a latency distribution, copied out of a lat. */
typedef struct lat_summary {
    size_t n;
    double p50, p99, p999, max, mean; /* ns */
} lat_summary;
lat_summary lat_summarise(lat *l);

/* Appends the CDF of l to f as one gnuplot block (two blank lines after):
 * columns latency_ns, fraction, nines (-log10(1-fraction)). */
void lat_write_cdf(lat *l, FILE *f, const char *title);

/* ---- progress and text (util.c) --------------------------------------------- */
/* One line on stderr, rewritten in place on a terminal. */
void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void progress_done(void);
/* "812 ns", "3.4 µs", "2.00 s" */
const char *fmt_ns(double ns, char *buf, size_t len);
/* "1.2e6", "35 000" style compact numbers */
const char *fmt_num(double v, char *buf, size_t len);

/* ---- redis-server on loopback (redis.c) ------------------------------------- */
typedef struct bench_redis {
    pid_t pid;        /* 0 when not running */
    int port;
    bool stopped;     /* SIGSTOPped */
    char dir[256];
    /* Set tls_dir (server.pem, server.key, ca.pem) before redis_start to
     * listen with TLS on tls_port too (picked by redis_start). */
    char tls_dir[128];
    int tls_port;
} bench_redis;

/* Starts redis-server on 127.0.0.1 (port 0: a free one; else that port,
 * after a stop), without persistence, and waits until it answers PING.
 * Returns 0 or -1. */
int redis_start(bench_redis *r, int port);
void redis_stop(bench_redis *r);       /* SIGTERM (SIGKILL after 3 s), wait */
void redis_hang(bench_redis *r);       /* SIGSTOP */
void redis_unhang(bench_redis *r);     /* SIGCONT */
void redis_cleanup(bench_redis *r);    /* stop and remove its directory */
void redis_kill_all(void);             /* every server still running (exit path) */
/* Reads one integer field of INFO (e.g. "total_net_input_bytes"); 0 or -1. */
int redis_info_u64(int port, const char *section, const char *field, uint64_t *out);

/* A SUBSCRIBE connection on its own thread that counts messages and their
 * bytes and remembers the first message and the time of the first and last. */
typedef struct bench_sub bench_sub;
bench_sub *sub_open(int port, const char *channel);  /* NULL on failure */
void sub_reset(bench_sub *s);
uint64_t sub_count(bench_sub *s);
uint64_t sub_bytes(bench_sub *s);      /* sum of message lengths */
/* What the PUBLISH commands of those messages weigh in RESP. */
uint64_t sub_resp_bytes(bench_sub *s);
uint64_t sub_first_ns(bench_sub *s);
uint64_t sub_last_ns(bench_sub *s);
pid_t sub_tid(bench_sub *s);
/* Copies the first message received since the last reset; 0 or -1. */
int sub_first_message(bench_sub *s, char *buf, size_t len);
/* Waits until count >= n, or no message came for idle_ms, or total_ms
 * passed. Returns the count. */
uint64_t sub_wait(bench_sub *s, uint64_t n, int idle_ms, int total_ms);
void sub_close(bench_sub *s);

/* ---- options and results ------------------------------------------------------ */
typedef struct bench_opts {
    bool full;
    size_t lat_calls;          /* part 1, ours, per state */
    size_t cold_calls;         /* part 1, ours from a cold start, per state */
    int idle_s;                /* part 6 */
    int isolated_events;       /* part 7, per measure */
    int isolated_gap_ms;
    size_t stream_events;      /* part 8, per mode; part 9 too */
    double replaced_cap_s;     /* part 1, replaced, where it does not stall */
    size_t replaced_stall_calls;
    double replaced_stall_cap_s;
    size_t tput_events;        /* part 2 */
    size_t store_ops;          /* part 3, per op and state */
    double store_cap_s;
    int day_mails;             /* part 4 */
    int mem_down_s;            /* part 5 */
    int mem_rate;
    int mem_recover_s;
    const char *results_dir;
    const char *plot_script;
} bench_opts;

enum { ST_HEALTHY, ST_SLOW, ST_HUNG, ST_REFUSED, ST_COUNT };
extern const char *const state_names[ST_COUNT];

typedef struct lat_result {
    lat_summary ours, ours_typed, replaced;
    uint64_t calls, enqueued, published, dropped_queue_full, dropped_disabled,
        dropped_invalid, dropped_send_error;
    uint64_t replaced_errors;
    double replaced_wall_s;
    /* Minor page faults on the caller's thread during the timed calls: the
     * queue's first touch of fresh heap pages shows up here. */
    uint64_t minflt, minflt_typed;
    /* The first cold_calls calls on a publisher just opened (default bounds). */
    lat_summary ours_cold;
    uint64_t minflt_cold, dropped_cold;
    /* A 190-byte memcpy timed the same way, interleaved with ours (warm,
     * and in the cold-start run). */
    lat_summary control, control_cold;
} lat_result;

typedef struct tput_result {
    uint64_t events, received, dropped;
    double ours_eps;           /* first publish -> last received */
    double ours_acked_eps;     /* first publish -> flush returned */
    double caller_eps;         /* how fast the caller's loop ran */
    double rb16_eps, rb128_eps;    /* redis-benchmark's own figure */
    double rb16_sub_eps, rb128_sub_eps; /* as our subscriber saw them */
    uint64_t rb16_received, rb128_received;
    size_t payload_len;
} tput_result;

enum { OP_SYNCED, OP_FAILED, OP_ENQUEUE, OP_DONE, OP_LLM, OP_COUNT };
extern const char *const op_names[OP_COUNT];
enum { PS_HEALTHY, PS_HUNG, PS_ABSENT, PS_COUNT };
extern const char *const pub_state_names[PS_COUNT];

/* Part 3 runs twice: with SQLite's default synchronous=FULL (every commit
 * waits for fsync) and with synchronous=NORMAL (WAL's usual setting, no
 * fsync per commit), where the writes are cheapest and publishing's share
 * is largest. */
enum { SYNC_FULL, SYNC_NORMAL, SYNC_COUNT };
typedef struct store_result {
    struct store_cfg {
        struct store_cell {
            size_t ops;
            double ops_per_s, p50_ns, p99_ns, mean_ns, sd_ns;
        } cell[OP_COUNT][PS_COUNT];
        uint64_t enqueued[PS_COUNT], dropped_queue_full[PS_COUNT], published[PS_COUNT];
        char sqlite_sync[32];
        double cap_s;
    } cfg[SYNC_COUNT];
} store_result;

typedef struct day_result {
    int mails;
    uint64_t events, published, calls;
    double wall_s[2], caller_cpu_s[2], process_cpu_s[2]; /* [0] absent, [1] healthy */
    double io_thread_cpu_s, sub_cpu_s, redis_cpu_s;
    uint64_t line_bytes, resp_bytes, net_input_bytes;
    double headroom;
} day_result;

typedef struct mem_result {
    int down_s, rate, recover_s;
    uint64_t rss_before_kib, rss_peak_kib, hwm_kib, rss_end_down_kib, rss_end_kib;
    uint64_t queued_end_down, queued_bytes_end_down, queued_end, max_queued;
    uint64_t queue_max_events, queue_max_bytes;
    uint64_t dropped_queue_full, published_after;
    double drain_s;            /* restart -> queued < 1 % of bound */
    double rss_growth_recover_kib; /* last - first sample of the recovery */
    uint64_t calls;
    /* Samples every 100 ms: seconds since the outage began (negative never),
     * RSS and queued events; "restart_t" marks Redis coming back. */
    struct { float t; uint32_t rss_kib, queued; } series[1200];
    size_t nseries;
    double restart_t;
} mem_result;

/* Part 6: the I/O thread of a publisher with nothing to send, Redis healthy. */
typedef struct idle_result {
    double seconds;
    uint64_t voluntary, involuntary;   /* context switches of the I/O thread */
    uint64_t runtime_ns;               /* its CPU time (schedstat) */
    double wakeups_per_s, cpu_ms_per_hour;
} idle_result;

/* Part 7: isolated events, one every gap_ms: from the call to Redis's
 * acknowledgement (the counter published moving) and to a subscriber. */
typedef struct isolated_result {
    int events, gap_ms;
    lat_summary ack, sub;
    lat_summary sync_ack, sync_sub;    /* the replaced design, same run */
    lat_summary hop;                   /* an eventfd wake-up between two threads */
    uint64_t io_voluntary;             /* I/O thread wake-ups over the subscriber pass */
    uint64_t lost;
} isolated_result;

/* Part 8: pub/sub mode ([0]) and stream mode ([1]) on one server. */
typedef struct stream_mode_result {
    lat_summary call;                  /* the publish call, paced flat out */
    uint64_t events, received, dropped;
    double eps;                        /* first call -> last received */
    double redis_cpu_ms_per_100k;
    uint64_t mem_per_100k;             /* used_memory growth for 100 000 events */
} stream_mode_result;
typedef struct stream_result {
    stream_mode_result mode[2];
} stream_result;

/* The hubcall part: the publish call in hub mode, the hub healthy, hung
 * (listening, never answering) and absent (nothing listening). */
enum { HUB_HEALTHY, HUB_HUNG, HUB_ABSENT, HUB_STATES };
extern const char *const hub_state_names[HUB_STATES];
typedef struct hub_call_result {
    lat_summary call;
    uint64_t calls, published, dropped, connects, connect_failures;
    double close_ms;                   /* close(p, 300) when hung or absent */
} hub_call_result;
typedef struct hubcall_result {
    hub_call_result state[HUB_STATES];
} hubcall_result;
/* Part 10: the same publisher over plain TCP and over TLS (rediss://) to
 * one redis-server, and what a reconnect's handshake costs. */
typedef struct tls_mode_result {
    lat_summary call;                  /* the publish call, paced flat out */
    uint64_t events, received, dropped;
    double eps;                        /* first call -> last received */
} tls_mode_result;
typedef struct tls_result {
    tls_mode_result mode[2];           /* [0] redis://, [1] rediss:// */
    /* Connect + PING, each on a fresh connection: plain TCP, TLS with a
     * full handshake, TLS resuming the previous session. */
    lat_summary connect_plain, connect_full, connect_resumed;
    uint64_t resumed;                  /* of the resumed tries, how many were */
} tls_result;

/* The parts, each known by its name: on the command line (--only
 * latency,stores), in have[] and in the table's headings. */
#define BENCH_PARTS(X)                                                                      \
    X(LATENCY, "latency")                                                                   \
    X(THROUGHPUT, "throughput")                                                             \
    X(STORES, "stores")                                                                     \
    X(DAY, "day")                                                                           \
    X(MEMORY, "memory")                                                                     \
    X(IDLE, "idle")                                                                         \
    X(ISOLATED, "isolated")                                                                 \
    X(STREAM, "stream")                                                                     \
    X(HUBCALL, "hubcall")                                                                   \
    X(TLS, "tls")

enum {
#define BENCH_PART_ENUM(id, name) PART_##id,
    BENCH_PARTS(BENCH_PART_ENUM)
#undef BENCH_PART_ENUM
    PART_COUNT
};

typedef struct bench_results {
    double timer_overhead_ns;
    lat_result lat[ST_COUNT];
    tput_result tput;
    store_result store;
    day_result day;
    mem_result mem;
    idle_result idle;
    isolated_result iso;
    stream_result stream;
    hubcall_result hubcall;
    tls_result tls;
    bool have[PART_COUNT];
    double total_s;
} bench_results;

/* The parts. Each returns 0 or -1 (with a message on stderr). cdf may be
 * NULL; part 1 writes its distributions there. */
int part_latency(const bench_opts *o, bench_results *r, FILE *cdf);
int part_throughput(const bench_opts *o, bench_results *r);
int part_stores(const bench_opts *o, bench_results *r);
int part_day(const bench_opts *o, bench_results *r);
int part_memory(const bench_opts *o, bench_results *r);
int part_idle(const bench_opts *o, bench_results *r);
int part_isolated(const bench_opts *o, bench_results *r);
int part_stream(const bench_opts *o, bench_results *r);
int part_hubcall(const bench_opts *o, bench_results *r);
int part_tls(const bench_opts *o, bench_results *r);

/* The id of the thread p's I/O thread runs on, found by listing this
 * process's threads around mae_publisher_open (wakeup.c). */
struct mae_publisher_config;
struct mae_publisher;
int open_with_tid(const struct mae_publisher_config *cfg, struct mae_publisher **out, pid_t *tid);
/* voluntary_ctxt_switches / nonvoluntary of this process's thread tid. */
void ctxt_switches(pid_t tid, uint64_t *vol, uint64_t *invol);

#endif
