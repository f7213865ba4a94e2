/*
 * Fuzz target for the MQTT adapter as a whole: arbitrary bytes from one client, in arbitrary
 * chunks, against a broker with small limits and a second client subscribed to everything that
 * never acks (so flow control, deferral and redelivery paths run). The first input byte picks
 * options: bit 0 prepends a valid CONNECT, bit 1 makes it a persistent session, bits 2-4 the
 * chunk size. Must never crash, hang or leak.
 */
#include "protocols/mqtt/codec.h"
#include "protocols/mqtt/mqtt.h"

#include "tests/unit/fake_io.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef tn_fake_conn fio;

static void
open_conn(tn_mqtt *m, fio *f)
{
    tn_fake_open(f, &tn_mqtt_adapter, m, 4096);
}

/* The broker's clock: each chunk is 40 ms later, so the never-reading subscriber becomes a slow
 * consumer (slow_consumer_ms 100) and catches up again as the input goes on. */
static tn_broker *fz_broker;
static uint64_t fz_now;

/* After each chunk: both outputs are dropped. */
static void
after_chunk(void *arg)
{
    fio **c = arg;
    tn_broker_tick(fz_broker, fz_now += 40);
    c[0]->out.len = 0;
    c[1]->out.len = 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    tn_log_set_level(TN_LOG_ERROR);
    uint8_t opt = data[0];
    data++;
    size--;
    tn_broker_limits bl = {.max_inflight = 3,
                           .max_queued = 4,
                           .max_offline = 8,
                           .slow_consumer_ms = 100,
                           .max_topic_levels = 6,
                           .max_incoming = 1000};
    tn_broker *b = tn_broker_new(&bl);
    fz_broker = b;
    fz_now = 1000;
    tn_broker_tick(b, fz_now);
    /* Payloads from 64 bytes that are cut take the large path (into the message, from a 1000
     * byte budget, so some wait). */
    tn_mqtt_conf mc = {
        .max_message = 512, .max_packet = 512, .large_min = 64, .connect_timeout_ms = 1000};
    tn_mqtt *m = tn_mqtt_new(b, &mc);

    fio sub, cl;
    open_conn(m, &sub);
    tn_buf pkt;
    tn_buf_init(&pkt, 1024);
    tn_mqtt_connect c = {.version = TN_MQTT_V311, .clean = true};
    c.client_id = (tn_mqtt_bytes){(const uint8_t *)"sub", 3};
    tn_mqtt_encode_connect(&pkt, &c);
    tn_mqtt_bytes all = {(const uint8_t *)"#", 1};
    uint8_t q = 2;
    tn_mqtt_encode_subscribe(&pkt, TN_MQTT_V311, 1, &all, &q, 1);
    tn_mqtt_adapter.input(sub.a, pkt.data, pkt.len);

    open_conn(m, &cl);
    if (opt & 1) {
        pkt.len = 0;
        c.clean = !(opt & 2);
        c.client_id = (tn_mqtt_bytes){(const uint8_t *)"fz", 2};
        c.will = true;
        c.will_qos = 1;
        c.will_topic = (tn_mqtt_bytes){(const uint8_t *)"w", 1};
        tn_mqtt_encode_connect(&pkt, &c);
        tn_mqtt_adapter.input(cl.a, pkt.data, pkt.len);
    }
    fio *both[2] = {&cl, &sub};
    tn_fake_feed(&tn_mqtt_adapter, &cl, data, size, (size_t)1 << ((opt >> 2) & 7), after_chunk,
                 both);
    tn_mqtt_adapter.closed(cl.a, TN_CLOSE_PEER);
    tn_mqtt_adapter.closed(sub.a, TN_CLOSE_PEER);
    tn_buf_fini(&pkt);
    tn_buf_fini(&cl.out);
    tn_buf_fini(&sub.out);
    tn_mqtt_free(m);
    tn_broker_free(b);
    return 0;
}
