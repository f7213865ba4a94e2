/*
 * ternbench: the load generator. Private header shared by its files:
 *
 *   ternbench.c  scenarios (pubsub, conns, retained), the run's clock and the report
 *   cli.c        command line
 *   conns.c      one client connection: TCP, reads, batched writes; MQTT CONNECT/SUBSCRIBE
 *   stomp.c      the same connection speaking STOMP 1.2: CONNECT, SUBSCRIBE, SEND, ACK, frames in
 *   amqp.c       the same connection speaking AMQP 1.0 through qpid-proton's connection driver:
 *                a sending or a receiving link, transfers, credit, dispositions
 *   pubsub.c     publishers (windows, pacing, QoS 1/2 flows, receipts) and subscribers (acks,
 *                bookkeeping), whichever the protocol
 *   stats.c      latency histogram, CPU and memory of this process and of the broker
 *   skip.c       --discard: subscribers that have the kernel drop large payloads unread
 *   stall.c      --stall: subscribers that stop reading, the healthy ones' latency per 100 ms
 *                window, recover_ms, and how long publishers could not send (pub_block_max_ms)
 *   retained.c   the retained scenario: publish N retained messages, then count what a new
 *                subscriber gets, then clear them
 *   xport.c      MQTT over TLS (mqtts://), WebSocket (ws://) or both (wss://): OpenSSL on
 *                memory BIOs and an RFC 6455 client between conns.c's socket and its MQTT
 *                reader and batched writes; plain TCP connections never enter it
 *
 * Everything runs on one libuv loop, on one thread. Encoded packets are appended to a
 * per-connection buffer and written once per loop turn (the uv_prepare callback), so a turn that
 * encodes a thousand messages costs one write(2). No allocation happens per message: buffers
 * reach their working size in the first turns and stay there (AMQP: proton's own deliveries and
 * buffers, which it pools, and the copy of its output into that buffer).
 */
#ifndef TN_BENCH_H
#define TN_BENCH_H

#include "core/base/base.h"
#include "protocols/mqtt/codec.h"
#include "protocols/stomp/codec.h"

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/* Payload header: run id (u32), publisher (u32), sequence (u64), send time in ns from
 * CLOCK_MONOTONIC (u64), in host byte order (only this process reads it). The rest is filler. */
#define TN_BENCH_HEADER 24
#define TN_BENCH_MAX_CONNECTING 500       /* connects in flight at once */
#define TN_BENCH_READ_SIZE 65536          /* one read */
#define TN_BENCH_MAX_OUT (64u << 20)      /* bytes waiting to be written, per connection */
#define TN_BENCH_DRAIN_NS 5000000000ull   /* no progress after the publishers finished: stop */
#define TN_BENCH_LINGER_MS 5000           /* then give DISCONNECTs this long before closing */
#define TN_BENCH_MAX_SEEN (1ull << 30)    /* bytes of duplicate-tracking bitmaps, at most */
#define TN_BENCH_WINDOW_NS 100000000ull   /* --stall: the latency timeline's window */
#define TN_BENCH_SILENCE_NS 5000000000ull /* retained: no retained message this long: stop */
#define TN_BENCH_SKIP_BUF 8192            /* --discard: the shortened copy of a message's head */
#define TN_BENCH_MAX_BROKER_PIDS 16       /* --broker-pid PID,PID,...: a broker's processes */
#define TN_BENCH_MAX_ADDRESS 64           /* --address-prefix: the AMQP address's first part */
#define TN_BENCH_MAX_WS_PATH 128          /* ws://HOST:PORT/PATH: the request's path */

typedef enum { TN_BENCH_PUBSUB, TN_BENCH_CONNS, TN_BENCH_RETAINED } tn_bench_scenario;
typedef enum { TN_BENCH_SHARED, TN_BENCH_PER_PUBLISHER } tn_bench_topics;
typedef enum { TN_BENCH_MQTT, TN_BENCH_STOMP, TN_BENCH_AMQP } tn_bench_proto;
/* STOMP destinations: a queue's subscribers compete for its messages, a topic's each get all. */
typedef enum { TN_BENCH_QUEUE, TN_BENCH_TOPIC } tn_bench_dest;
typedef enum { TN_BENCH_ACK_AUTO, TN_BENCH_ACK_CLIENT_INDIVIDUAL } tn_bench_ack;

typedef struct tn_bench_opts {
    struct sockaddr_in addr; /* the broker */
    char host[64];           /* as given in --url, for STOMP's host header and AMQP's hostname */
    tn_bench_proto proto;
    const char *scheme;                 /* of --url: mqtt, mqtts, ws, wss, stomp or amqp */
    bool tls;                           /* mqtts://, wss:// */
    bool ws;                            /* ws://, wss://: MQTT over WebSocket, subprotocol mqtt */
    char ws_path[TN_BENCH_MAX_WS_PATH]; /* the upgrade request's path (default /mqtt) */
    const char *tls_ca;             /* verify the broker's certificate against it; NULL: no check */
    const char *tls_cert, *tls_key; /* a client certificate, or NULL */
    tn_bench_scenario scenario;
    tn_bench_topics topics;
    uint32_t pubs, subs;
    uint8_t qos;                 /* MQTT only */
    tn_bench_dest dest;          /* STOMP only */
    tn_bench_ack ack;            /* STOMP only: the subscribers' ack mode */
    bool receipts;               /* STOMP only: SENDs ask for a RECEIPT (the window counts them) */
    uint32_t credit;             /* AMQP only: link credit of each receiving link */
    const char *address_prefix;  /* AMQP only: addresses are this, then bench.t or bench.<i> */
    const char *user, *password; /* AMQP only: SASL PLAIN with these; NULL: ANONYMOUS */
    uint32_t size;               /* payload bytes, >= TN_BENCH_HEADER */
    uint64_t count;              /* messages per publisher */
    double duration;             /* seconds, hard bound for the whole run */
    uint32_t inflight; /* per publisher: unacked QoS 1/2 messages, SENDs awaiting RECEIPT or
                          AMQP transfers awaiting their disposition; QoS 0 and STOMP without
                          receipts: see qos0_window */
    double rate;       /* messages/s across publishers; 0: as fast as the windows allow */
    bool persistent;   /* MQTT: subscribers keep sessions (clean session 0); STOMP: SENDs carry
                          persistent:true (persistent messages); AMQP: header durable=true */
    const char *prefix;
    uint16_t keepalive;
    int broker_pid;                            /* the first of broker_pids; 0: unknown */
    int broker_pids[TN_BENCH_MAX_BROKER_PIDS]; /* CPU and RSS are their sums */
    uint32_t n_broker_pids;
    uint32_t conns;
    double hold;
    uint32_t src_first, src_n; /* source addresses (host order) for conns; 0: the kernel's */
    bool quiet;
    bool discard;       /* pubsub: subscribers take a payload's first TN_BENCH_HEADER bytes
                           and have the kernel drop the rest unread (skip.c) */
    uint32_t stall;     /* pubsub, MQTT: subscribers 0..stall-1 stop reading at stall_after */
    double stall_after; /* seconds from the first publish */
    uint64_t retained;  /* retained: messages (also count) */
} tn_bench_opts;

/* Latency histogram, log-linear like HDR: values below 256 are exact, above that each power of
 * two is cut in 128 buckets, so a reported value is within 0.8% of the true one. Fixed size:
 * adding a sample never allocates. */
#define TN_BENCH_HIST_BUCKETS 7424
typedef struct tn_bench_hist {
    uint64_t n, max;
    uint64_t counts[TN_BENCH_HIST_BUCKETS];
} tn_bench_hist;

void tn_bench_hist_add(tn_bench_hist *h, uint64_t v);
/* The value at percentile pct (0..100], the top of its bucket capped at the maximum; 0 when
 * empty. */
uint64_t tn_bench_hist_percentile(const tn_bench_hist *h, double pct);

uint64_t tn_bench_now_ns(void);
/* CPU seconds (user + system) of this process. */
double tn_bench_self_cpu(void);
/* CPU seconds of process pid from /proc/PID/stat, or -1. */
double tn_bench_proc_cpu(int pid);
/* VmRSS of process pid in KiB from /proc/PID/status, or -1. */
long tn_bench_proc_rss_kb(int pid);
/* The CPU seconds of each of the broker's processes (--broker-pid) into cpu[i], -1 for one that
 * cannot be read. */
void tn_bench_broker_cpu(const tn_bench_opts *o, double *cpu);
/* The CPU seconds they used since cpu0 (from tn_bench_broker_cpu), summed over the processes
 * readable both times: a helper that ended meanwhile (a broker's short-lived child) is left
 * out rather than spoiling the sum. -1 when none was. */
double tn_bench_broker_cpu_since(const tn_bench_opts *o, const double *cpu0);
/* VmRSS summed over the broker's processes that can be read; -1 when none can. */
long tn_bench_broker_rss_kb(const tn_bench_opts *o);

/* One (publisher, subscriber) pair: what the subscriber has seen of that publisher. */
typedef struct tn_bench_stream {
    uint64_t top;   /* highest sequence seen + 1; 0 before the first */
    uint64_t *seen; /* count bits, or NULL when duplicate tracking is off; shared by the
                       streams of one publisher when the subscribers compete (STOMP queue) */
} tn_bench_stream;

typedef enum { TN_BENCH_PUB, TN_BENCH_SUB, TN_BENCH_IDLE } tn_bench_role;

typedef enum {
    TN_BENCH_CS_NEW = 0,
    TN_BENCH_CS_CONNECTING, /* TCP connect pending */
    TN_BENCH_CS_CONNACK,    /* CONNECT sent; waiting for CONNACK (MQTT) or CONNECTED (STOMP) */
    TN_BENCH_CS_SUBACK,     /* SUBSCRIBE sent; waiting for SUBACK or the subscription's RECEIPT */
    TN_BENCH_CS_READY,
    TN_BENCH_CS_CLOSING, /* DISCONNECT queued; the handle closes once it is written */
    TN_BENCH_CS_FAILED,  /* closed on an error */
} tn_bench_conn_state;

typedef struct tn_bench tn_bench;
typedef struct tn_bench_amqp tn_bench_amqp;   /* amqp.c: a connection's proton driver and link */
typedef struct tn_bench_xport tn_bench_xport; /* xport.c: a connection's TLS and WebSocket state */

/* --stall: one 100 ms window of the healthy subscribers' deliveries, by receive time. */
typedef struct tn_bench_window {
    uint64_t n, p99_ns, max_ns;
    uint64_t outstanding; /* expected - unique when the window closed */
} tn_bench_window;

typedef struct tn_bench_conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    tn_bench *b;
    uint32_t id; /* publisher, subscriber or connection number */
    tn_bench_role role;
    tn_bench_conn_state state;
    bool open;  /* tcp initialized and its close callback not yet run */
    bool ready; /* got its CONNACK (and SUBACK): set-up is over for it */
    bool writing, dirty;
    bool close_when_written; /* CLOSING: close the handle once c->out is written (MQTT after its
                                DISCONNECT, AMQP once the driver has finished) */
    tn_buf out;              /* encoded this turn, not yet handed to uv_write */
    tn_buf wbuf;             /* being written (one uv_write in flight at most); swapped with out */
    tn_buf in; /* the start of a packet that did not fit in the last read (MQTT; STOMP only
                  under --discard: the decoder keeps partial frames itself) */
    tn_mqtt_decoder dec;
    tn_stomp_decoder sdec;  /* STOMP only */
    tn_bench_amqp *amqp;    /* AMQP only: from the TCP connect to the handle's close */
    tn_bench_xport *x;      /* TLS and/or WebSocket: from the TCP connect to the handle's close;
                               NULL over plain TCP */
    uint64_t last_tx_ms;    /* loop time of the last write, for PINGREQ */
    uint64_t last_write_ns; /* publisher: the last write the kernel took (some bytes) */
    uint64_t block_max_ns;  /* publisher: longest gap between such writes, or (with --rate)
                               longest time behind its schedule */

    /* publisher */
    char topic[TN_BENCH_MAX_ADDRESS + 24];
    uint16_t topic_len;
    uint64_t sent, acked;
    uint64_t fanout; /* subscribers that get each message (a queue: 1, or 0 without consumer) */
    uint32_t inflight;
    uint16_t next_pid;  /* STOMP: packet ids serve as receipt ids */
    uint64_t *pid_busy; /* 65536 bits: sent, not yet PUBACKed / PUBCOMPed / RECEIPTed */
    uint64_t *pid_rel;  /* 65536 bits: PUBREL sent (QoS 2) */

    /* subscriber */
    tn_bench_stream *streams; /* by publisher (shared topic) or one (per-publisher) */
    uint32_t stream_pub;      /* per-publisher topics: the publisher of streams[0] */
    uint64_t *qos2_held;      /* 65536 bits: PUBREC sent, PUBREL not yet received */
    bool stalls;              /* --stall: stops reading at --stall-after; its deliveries are
                                 counted apart (stalled_received), never as expected or lost */
    bool stalled;             /* it did: reads stopped, no PINGREQ */

    /* --discard (skip.c): a message whose first TN_BENCH_HEADER payload bytes arrived is
     * decoded from a copy shortened to them (skip_buf); the rest of it, `skip` bytes, is
     * dropped in the kernel (recv MSG_TRUNC). It counts once its last byte is dropped. */
    uint64_t skip;             /* bytes of the pending message still to drop */
    bool skip_pending;         /* a message waits for the end of its skip */
    bool stomp_between;        /* STOMP: the decoder holds no partial frame */
    uint8_t *skip_buf;         /* TN_BENCH_SKIP_BUF bytes, allocated on first use */
    tn_mqtt_packet skip_pkt;   /* MQTT: the pending PUBLISH (views into skip_buf) */
    tn_stomp_frame skip_frame; /* STOMP: the pending MESSAGE (headers in the decoder) */
} tn_bench_conn;

typedef enum {
    TN_BENCH_SETUP_SUBS,
    TN_BENCH_SETUP_PUBS,
    TN_BENCH_SETUP_IDLE,
    TN_BENCH_RUN,
    TN_BENCH_HOLD,
    TN_BENCH_DONE,
} tn_bench_phase;

struct tn_bench {
    tn_bench_opts o;
    uv_loop_t loop;
    uv_prepare_t prepare;
    uv_idle_t spin; /* keeps the loop from blocking while a QoS 0 publisher can write */
    uv_timer_t tick, pace, stop, hold, linger;
    uv_signal_t sigint, sigterm;
    tn_bench_phase phase;
    const char *stop_reason;
    int exit_code;

    tn_bench_conn *conns; /* subscribers, then publishers; or the idle connections */
    uint32_t n_conns;
    tn_bench_conn *subs, *pubs;
    tn_bench_conn **dirty; /* connections with bytes to flush this turn */
    uint32_t n_dirty;
    uint32_t n_open;

    /* connection set-up: conns[setup_next..setup_end) still to start */
    uint32_t setup_begin, setup_next, setup_end, setup_inflight, setup_ok, setup_failed;
    bool pumping;
    uint32_t src_next;
    uint32_t opened, failed, lost; /* conns scenario; lost: closed by the broker while held */
    uint32_t errors_logged;

    /* the run */
    uint32_t run_id;
    uint8_t *payload; /* one message's payload, rewritten before each encode */
    size_t qos0_window;
    bool acked_pubs; /* publishers wait for PUBACK/PUBCOMP or RECEIPT; else qos0_window bounds */
    bool competing;  /* STOMP and AMQP queues: subscribers share duplicate bitmaps, a message
                        counts once overall */
    uint64_t sent, expected, acked, received, unique, dup, reordered, stale, bad;
    uint64_t discarded; /* --discard: messages whose payload past the header was dropped */
    bool track_dups;
    uint64_t *seen_bits;
    tn_bench_stream *streams;
    tn_bench_hist *hist;
    uint64_t t_start, t_end, t_last_rx, t_last_ack, t_last_progress, t_pubs_sent;
    uint64_t t_connected; /* conns: all connects answered */
    double cpu0_self, cpu_self, cpu_broker;
    double cpu0_broker[TN_BENCH_MAX_BROKER_PIDS]; /* per --broker-pid process, at the start */
    long rss0_kb, rss_kb;
    uint64_t last_report_sent, last_report_received, last_report_ns;

    /* --stall (stall.c) */
    uv_timer_t stall_timer, window_timer;
    uint64_t t_stall; /* when the stalled subscribers stopped reading; 0 before */
    uint64_t stalled_received;
    tn_bench_hist *win_hist; /* the open window's latencies */
    tn_bench_window *windows;
    uint32_t n_windows, max_windows, win_cur; /* win_cur: the open window's index */

    /* retained scenario (retained.c) */
    int ret_step;
    uint64_t *ret_seen; /* retained bits received */
    uint64_t t_subscribe, t_published, t_received, t_clear_begin, t_cleared;
    uint64_t ret_live; /* messages without the retain flag */

    uint8_t rbuf[TN_BENCH_READ_SIZE]; /* shared by all reads: the loop reads one socket at once */
};

/* cli.c: fills o from the command line. Returns 0 to run, -1 after --help or --version (exit
 * 0), or 2 after a bad argument (the message is printed). */
int tn_bench_parse_args(int argc, char **argv, tn_bench_opts *o);

/* conns.c */
void tn_bench_conn_init(tn_bench *b, tn_bench_conn *c, tn_bench_role role, uint32_t id);
/* Closes c on an error and tells the scenario, once. */
void tn_bench_conn_fail(tn_bench_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Set-up is over for c (CONNACK/SUBACK, CONNECTED/RECEIPT): it is READY. */
void tn_bench_conn_ready(tn_bench_conn *c);
/* Opens the socket and starts the TCP connect; errors end in tn_bench_on_fail(). */
void tn_bench_conn_start(tn_bench_conn *c);
/* Queues c for the flush at the end of this loop turn. */
void tn_bench_conn_dirty(tn_bench_conn *c);
/* Hands c->out to uv_write unless a write is already in flight (then its callback re-queues). */
void tn_bench_conn_flush(tn_bench_conn *c);
/* Sends DISCONNECT, then closes: MQTT once it is written, STOMP on its RECEIPT (or when the
 * broker closes; the linger timer bounds both). AMQP: a close frame, then closes once the
 * broker's close is in and its own is written. */
void tn_bench_conn_close(tn_bench_conn *c);
/* Closes now. */
void tn_bench_conn_abort(tn_bench_conn *c);
/* Frees what conn_init and the scenario allocated; the handle must be closed. */
void tn_bench_conn_fini(tn_bench_conn *c);
bool tn_bench_conn_is_active(const tn_bench_conn *c);
/* MQTT: a PINGREQ when nothing was written for half the keepalive. STOMP: nothing (heart-beats
 * are off). AMQP: proton's tick, which sends an empty frame when the broker asked for an idle
 * timeout and nothing went out for half of it. */
void tn_bench_conn_keepalive(tn_bench_conn *c, uint64_t now_ms);

/* conns.c, for xport.c: the transport is up (TLS handshake and WebSocket upgrade done): the
 * protocol's own connect starts (MQTT CONNECT). */
void tn_bench_conn_session(tn_bench_conn *c);
/* MQTT bytes that arrived through a transport, in order; partial packets wait in c->in. */
void tn_bench_mqtt_stream(tn_bench_conn *c, const uint8_t *p, size_t len, uint64_t now_ns);

/* xport.c. c->out holds the protocol's bytes (plaintext, unframed) outside tn_bench_conn_flush;
 * the flush turns them into wire bytes just before it writes them. */
/* Once per run: the TLS context (--tls-ca, --tls-cert, --tls-key) when o->tls. 0, or -1 after
 * printing why. */
int tn_bench_x_init(const tn_bench_opts *o);
void tn_bench_x_fini(void);
/* The TCP connection is up: creates c->x and starts the TLS handshake or the WebSocket
 * upgrade; tn_bench_conn_session() follows once both are done. 0, or -1 (c failed). */
int tn_bench_x_start(tn_bench_conn *c);
/* Frees c->x (idempotent). */
void tn_bench_x_free(tn_bench_conn *c);
/* Bytes read from the socket: decrypted, deframed, passed on. */
void tn_bench_x_input(tn_bench_conn *c, uint8_t *p, size_t len);
/* In the flush, not writing: c->out (protocol bytes) becomes wire bytes (one WebSocket frame,
 * one SSL_write) followed by whatever TLS itself has to send. 0, or -1 (c failed). */
int tn_bench_x_wrap(tn_bench_conn *c);
/* TLS has bytes of its own to send (a handshake message, an alert). */
bool tn_bench_x_pending(const tn_bench_conn *c);

/* ternbench.c: called by conns.c */
void tn_bench_on_ready(tn_bench_conn *c);
void tn_bench_on_fail(tn_bench_conn *c, const char *why);
void tn_bench_on_closed(tn_bench_conn *c);

/* pubsub.c */
/* Sets up the publisher and subscriber connections' topics, windows and streams. */
int tn_bench_pubsub_init(tn_bench *b);
void tn_bench_pubsub_fini(tn_bench *b);
/* Encodes publisher c's messages up to sequence due (exclusive), within its window. */
void tn_bench_pub_fill(tn_bench_conn *c, uint64_t due, uint64_t now_ns);
/* True when publisher c has sent all its messages (and, at QoS 1/2, got them acknowledged). */
bool tn_bench_pub_is_sent(const tn_bench_conn *c);
bool tn_bench_pub_is_done(const tn_bench_conn *c);
/* PUBLISH, PUBACK, PUBREC, PUBREL and PUBCOMP on a ready connection; now_ns is the read's time. */
void tn_bench_on_packet(tn_bench_conn *c, const tn_mqtt_packet *pkt, uint64_t now_ns);
/* A message's payload arrived at subscriber c (either protocol, acknowledged already): loss,
 * duplicate, reorder and latency bookkeeping. */
void tn_bench_on_payload(tn_bench_conn *c, const uint8_t *p, size_t len, uint64_t now_ns);
/* The RECEIPT for publisher c's SEND with receipt id (a packet id from its window), or the
 * disposition of its AMQP transfer with that delivery tag. */
void tn_bench_on_receipt(tn_bench_conn *c, uint16_t id, uint64_t now_ns);
/* Counts and logs (the first few) something unexpected from the broker. */
void tn_bench_bad(tn_bench_conn *c, const char *what);
/* The topic filter (MQTT), destination (STOMP) or address (AMQP) subscriber c subscribes to. */
tn_mqtt_bytes tn_bench_sub_filter(tn_bench_conn *c, char *buf, size_t size);

/* ternbench.c: called by retained.c */
/* Connects conns[begin..end) (at most TN_BENCH_MAX_CONNECTING at once) in set-up phase
 * phase; once all are answered the scenario moves on (setup_advance in ternbench.c). */
void tn_bench_setup_group(tn_bench *b, tn_bench_phase phase, uint32_t begin, uint32_t end);
/* Ends the run (idempotent): measures, closes every connection, reports once uv_run returns. */
void tn_bench_finish(tn_bench *b, const char *reason);

/* stall.c. Without --stall only the publishers' blocking is measured. */
void tn_bench_stall_init(tn_bench *b);
void tn_bench_stall_fini(tn_bench *b);
/* The run starts: arms the stall and window timers and the publishers' write clocks. */
void tn_bench_stall_start(tn_bench *b);
/* The run ends at b->t_end: stops the timers, closes the last window, counts the publishers'
 * current blocks. */
void tn_bench_stall_stop(tn_bench *b);
/* A healthy subscriber got a message with latency lat_ns at now_ns. */
void tn_bench_stall_sample(tn_bench *b, uint64_t lat_ns, uint64_t now_ns);
/* Connection c's socket took bytes just now (a publisher without --rate: ends a gap). */
void tn_bench_pub_wrote(tn_bench_conn *c);
/* Publisher c encodes its message seq at now_ns (with --rate: how late it is). */
void tn_bench_pub_paced(tn_bench_conn *c, uint64_t seq, uint64_t now_ns);
/* The longest any publisher could not send, in ms. */
double tn_bench_pub_block_max_ms(const tn_bench *b);
/* Prints the timeline table (with --stall) on stdout. */
void tn_bench_stall_print(tn_bench *b);
/* Appends the --stall RESULT keys to stdout (nothing without --stall). */
void tn_bench_stall_result(tn_bench *b);

/* retained.c: the retained scenario. conns[0] is the subscriber, conns[1] the publisher. */
void tn_bench_retained_init(tn_bench *b);
void tn_bench_retained_fini(tn_bench *b);
/* The publisher is connected: publish the retained messages. */
void tn_bench_retained_start(tn_bench *b);
/* The subscriber's SUBACK arrived. */
void tn_bench_retained_subscribed(tn_bench *b);
/* Every loop turn (the publisher's window) and every tick (the 5 s of silence). */
void tn_bench_retained_prepare(tn_bench *b, uint64_t now_ns);
void tn_bench_retained_tick(tn_bench *b, uint64_t now_ns);
/* A PUBLISH arrived at the subscriber (already acknowledged). */
void tn_bench_retained_on_message(tn_bench_conn *c, const tn_mqtt_publish *m, uint64_t now_ns);
void tn_bench_retained_report(tn_bench *b);

/* stomp.c: STOMP 1.2 on a connection from conns.c, in the client role. */
void tn_bench_stomp_init(tn_bench_conn *c);
void tn_bench_stomp_fini(tn_bench_conn *c);
/* Appends CONNECT (accept-version 1.2, host, heart-beat 0,0); 0 or a TN_E* code. */
int tn_bench_stomp_connect(tn_bench_conn *c);
/* Appends DISCONNECT with a receipt header; its RECEIPT closes the connection. 0 or a TN_E*
 * code. */
int tn_bench_stomp_disconnect(tn_bench_conn *c);
/* Appends publisher c's SEND to its destination, with content-length, persistent:true under
 * --persistent and receipt:<receipt> unless receipt is 0. 0, or TN_ETOOBIG when c->out is full
 * (the buffer is left as it was). */
int tn_bench_stomp_send(tn_bench_conn *c, uint16_t receipt, const uint8_t *body, size_t len);
/* Decodes p[0..len) and acts on each frame; errors and ERROR frames fail the connection.
 * now_ns is the read's time. Returns the bytes taken: all (partial frames stay in the decoder)
 * except, with --discard, the start of a MESSAGE kept for the next read (TN_BENCH_SKIP_WAIT),
 * which the caller keeps in c->in. */
size_t tn_bench_stomp_input(tn_bench_conn *c, const uint8_t *p, size_t len, uint64_t now_ns);

/* amqp.c: AMQP 1.0 on a connection from conns.c, in the client role (qpid-proton's connection
 * driver; conns.c still owns the socket and the batched writes). */
/* The TCP connection is up: creates the driver and queues the protocol header, SASL, open,
 * begin and (publishers and subscribers) the attach of the connection's link. 0 or a TN_E*
 * code. */
int tn_bench_amqp_connect(tn_bench_conn *c);
/* Frees the driver (idempotent); the connection decodes nothing more. */
void tn_bench_amqp_fini(tn_bench_conn *c);
/* Publisher c's transfer with delivery tag `tag` (a packet id from its window), unsettled, of a
 * message with header durable=true under --persistent and one data section holding body.
 * TN_EAGAIN without link credit (nothing sent). */
int tn_bench_amqp_send(tn_bench_conn *c, uint16_t tag, const uint8_t *body, size_t len);
/* Feeds p[0..len) to the driver and handles its events; returns len. now_ns is the read's
 * time. */
size_t tn_bench_amqp_input(tn_bench_conn *c, const uint8_t *p, size_t len, uint64_t now_ns);
/* The socket's read side ended (UV_EOF or an error): lets the driver say why (a SASL outcome,
 * the broker's close) before the connection fails; a connection closing anyway just closes. */
void tn_bench_amqp_read_error(tn_bench_conn *c, int status);
/* Handles pending events and moves the driver's output to c->out (the flush calls it). */
void tn_bench_amqp_output(tn_bench_conn *c);
/* Starts the close handshake (close frame; the broker's close finishes the driver). */
void tn_bench_amqp_close(tn_bench_conn *c);
/* Heart-beats: empty frames when the broker asked for an idle timeout. */
void tn_bench_amqp_tick(tn_bench_conn *c, uint64_t now_ms);

/* skip.c: --discard, for subscribers in the READY state. tn_bench_skip_mqtt/_stomp look at
 * p[0..n), the start of a packet or frame: when it is a PUBLISH or MESSAGE that is not all
 * there but whose first TN_BENCH_HEADER payload bytes are, they decode a copy shortened to those
 * bytes, keep it pending, set c->skip to the bytes still to come and return true or
 * TN_BENCH_SKIP_YES (all n taken); otherwise false or TN_BENCH_SKIP_NO (decode normally), or,
 * STOMP only (MQTT keeps a cut packet start in c->in anyway), TN_BENCH_SKIP_WAIT: the start of a
 * MESSAGE whose head or first payload bytes are still to come, a few KiB at most: keep p[0..n)
 * for the next read rather than have the decoder copy the whole message. */
enum { TN_BENCH_SKIP_NO, TN_BENCH_SKIP_YES, TN_BENCH_SKIP_WAIT };
bool tn_bench_skip_mqtt(tn_bench_conn *c, const uint8_t *p, size_t n);
int tn_bench_skip_stomp(tn_bench_conn *c, const uint8_t *p, size_t n);
/* Drops up to c->skip bytes from the socket (recv MSG_TRUNC, no copy) without blocking. */
void tn_bench_skip_drain(tn_bench_conn *c);
/* Takes up to c->skip bytes of p[0..n) (read before the skip was known); returns how many. */
size_t tn_bench_skip_take(tn_bench_conn *c, size_t n);
/* True when c's pending message is complete (its skip is over): the caller handles it. */
bool tn_bench_skip_done(const tn_bench_conn *c);
/* conns.c and stomp.c: the pending message's handlers. */
void tn_bench_mqtt_pending(tn_bench_conn *c, uint64_t now_ns);
void tn_bench_stomp_pending(tn_bench_conn *c, uint64_t now_ns);

/* Bitmaps: packet ids in flight (PID_WORDS words for ids 0..65535), retained messages seen. */
#define PID_WORDS (65536 / 64)

static inline bool
bit_get(const uint64_t *m, uint64_t i)
{
    return (m[i >> 6] >> (i & 63)) & 1;
}

static inline void
bit_set(uint64_t *m, uint64_t i)
{
    m[i >> 6] |= 1ull << (i & 63);
}

#endif
