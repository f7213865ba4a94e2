"""Publish/subscribe: QoS flows, wildcards, overlapping subscriptions, SUBACK codes,
unsubscribe, ordering under load. MQTT 3.1.1."""

import time
import unittest

from harness import (PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, BrokerTestCase, ack_packet,
                     mosquitto_differs, publish_packet, subscribe_packet, unsubscribe_packet)


class QosTest(BrokerTestCase):
    def test_qos_matrix_delivers_min_of_publish_and_subscription_qos(self):
        # Every publish QoS to every subscription QoS: exact count, order, and the delivered
        # QoS is min(publish, granted) [MQTT-3.8.4-6].
        n = 50
        sub = self.client("sub")
        pub = self.client("pub")
        self.assertEqual(sub.subscribe([("m/s0", 0), ("m/s1", 1), ("m/s2", 2)]), [0, 1, 2])
        for pq in (0, 1, 2):
            for sq in (0, 1, 2):
                with self.subTest(publish_qos=pq, subscription_qos=sq):
                    topic = "m/s%d" % sq
                    for i in range(n):
                        pub.publish(topic, b"%d:%d" % (pq, i), qos=pq, wait=(i == n - 1))
                    got = sub.until_marker(pub)
                    self.assertEqual([m.payload for m in got], [b"%d:%d" % (pq, i)
                                                                for i in range(n)])
                    self.assertEqual({m.topic for m in got}, {topic})
                    self.assertEqual({m.qos for m in got}, {min(pq, sq)})
                    self.assertEqual({m.retain for m in got}, {False})

    def test_qos1_exact_bytes_both_directions(self):
        sub = self.raw(connect=True)
        pub = self.raw(connect=True)
        sub.send(subscribe_packet(1, [("b/1", 1)]))
        self.assertEqual(sub.recv_packet().raw, b"\x90\x03\x00\x01\x01")
        pub.send(publish_packet("b/1", b"hello", qos=1, pid=0x1234))
        self.assertEqual(pub.recv_packet().raw, b"\x40\x02\x12\x34")  # PUBACK, same id
        p = sub.recv_packet()
        self.assertEqual((p.type, p.qos, p.dup, p.retain), (PUBLISH, 1, False, False))
        topic, pid, payload = p.publish_fields()
        self.assertEqual((topic, payload), ("b/1", b"hello"))
        self.assertNotEqual(pid, 0)  # [MQTT-2.3.1-1]
        sub.send(ack_packet(PUBACK, pid))
        # The acked message is not re-sent: the next thing is the next message.
        pub.send(publish_packet("b/1", b"second", qos=1, pid=0x1235))
        self.assertEqual(pub.recv_packet().raw, b"\x40\x02\x12\x35")
        self.assertEqual(sub.recv_packet().publish_fields()[2], b"second")

    def test_qos2_exact_bytes_both_directions(self):
        sub = self.raw(connect=True)
        pub = self.raw(connect=True)
        sub.send(subscribe_packet(7, [("b/2", 2)]))
        self.assertEqual(sub.recv_packet().raw, b"\x90\x03\x00\x07\x02")
        # Publisher side: PUBLISH -> PUBREC, PUBREL -> PUBCOMP [MQTT-4.3.3-2].
        pub.send(publish_packet("b/2", b"exactly once", qos=2, pid=0x0102))
        self.assertEqual(pub.recv_packet().raw, b"\x50\x02\x01\x02")
        pub.send(ack_packet(PUBREL, 0x0102))
        self.assertEqual(pub.recv_packet().raw, b"\x70\x02\x01\x02")
        # Subscriber side: PUBLISH -> our PUBREC -> PUBREL (flags 0010) -> our PUBCOMP.
        p = sub.recv_packet()
        self.assertEqual((p.type, p.qos, p.dup), (PUBLISH, 2, False))
        topic, pid, payload = p.publish_fields()
        self.assertEqual((topic, payload), ("b/2", b"exactly once"))
        sub.send(ack_packet(PUBREC, pid))
        self.assertEqual(sub.recv_packet().raw, b"\x62\x02" + pid.to_bytes(2, "big"))
        sub.send(ack_packet(PUBCOMP, pid))
        # A QoS 2 PUBLISH re-sent with DUP before PUBREL must not be delivered twice
        # [MQTT-4.3.3-2]: the broker answers PUBREC again and delivers once.
        pub.send(publish_packet("b/2", b"once more", qos=2, pid=9))
        self.assertEqual(pub.recv_packet().raw, b"\x50\x02\x00\x09")
        pub.send(publish_packet("b/2", b"once more", qos=2, pid=9, dup=True))
        self.assertEqual(pub.recv_packet().raw, b"\x50\x02\x00\x09")
        pub.send(ack_packet(PUBREL, 9))
        self.assertEqual(pub.recv_packet().raw, b"\x70\x02\x00\x09")
        pub.send(publish_packet("b/2", b"after", qos=2, pid=10))
        self.assertEqual(pub.recv_packet().raw, b"\x50\x02\x00\x0a")
        pub.send(ack_packet(PUBREL, 10))
        self.assertEqual(pub.recv_packet().raw, b"\x70\x02\x00\x0a")
        # The broker may send the second PUBLISH before its PUBREL for the first: answer
        # whatever comes, in order, until both are complete.
        payloads, released = [], []
        for _ in range(4):
            p = sub.recv_packet()
            if p.type == PUBLISH:
                _, pid, payload = p.publish_fields()
                self.assertEqual((p.qos, p.dup), (2, False))
                payloads.append(payload)
                sub.send(ack_packet(PUBREC, pid))
            else:
                self.assertEqual(p.raw[:2], b"\x62\x02", p)
                released.append(p.body)
                sub.send(ack_packet(PUBCOMP, int.from_bytes(p.body, "big")))
        self.assertEqual(len(released), 2)
        self.assertEqual(payloads, [b"once more", b"after"])


class WildcardTest(BrokerTestCase):
    # (filter, topics that match, topics that do not) [MQTT-4.7.1-2, 4.7.1-3]
    CASES = [
        ("a/+/c", ["a/b/c", "a//c", "a/x/c"], ["a/b/d", "a/b/c/d", "a/c", "b/b/c"]),
        ("a/#", ["a", "a/b", "a/b/c", "a/"], ["ab", "b/a", "/a"]),
        ("+", ["a", "b"], ["a/b", "/a"]),
        ("+/+", ["a/b", "/a", "a/"], ["a", "a/b/c"]),
        ("#", ["a", "a/b", "/a", "x/y/z"], []),
        ("+/b/#", ["a/b", "x/b/c/d"], ["a/c", "b"]),
    ]

    def test_wildcards_match_exactly_the_right_topics(self):
        pub = self.client("pub")
        for filt, match, nomatch in self.CASES:
            with self.subTest(filter=filt):
                sub = self.client("sub")
                self.assertEqual(sub.subscribe([(filt, 1)]), [1])
                for t in match + nomatch:
                    pub.publish(t, t.encode(), qos=1)
                got = [m for m in sub.until_marker(pub)]
                self.assertEqual([m.topic for m in got], match)
                self.assertEqual([m.payload for m in got], [t.encode() for t in match])
                sub.disconnect()

    def test_dollar_topics_not_matched_by_leading_wildcards(self):
        # [MQTT-4.7.2-1]: '#' and '+/x' must not match topics starting with '$'. The exact
        # subscriber shows the '$' message was really published and routed.
        pub = self.client("pub")
        wild = self.client("wild")
        exact = self.client("exact")
        self.assertEqual(wild.subscribe([("#", 1), ("+/x", 1), ("+/+", 1)]), [1, 1, 1])
        self.assertEqual(exact.subscribe([("$tern-test/x", 1)]), [1])
        pub.publish("$SYS/x", b"sys", qos=1)
        pub.publish("$tern-test/x", b"dollar", qos=1)
        pub.publish("n/x", b"normal", qos=1)
        got = wild.until_marker(pub)
        self.assertEqual({m.topic for m in got}, {"n/x"})
        m = exact.get()
        self.assertEqual((m.topic, m.payload), ("$tern-test/x", b"dollar"))


class OverlapTest(BrokerTestCase):
    def test_overlapping_subscriptions_deliver_once_at_highest_qos(self):
        # [MQTT-3.3.5-1]: one copy, at the maximum QoS of the matching subscriptions (capped
        # by the publish QoS). Mosquitto 2.0.11 passes this for MQTT 3.1.1 clients in every
        # subscription order (checked), so it runs against mosquitto too.
        sub = self.client("sub")
        pub = self.client("pub")
        self.assertEqual(sub.subscribe([("o/#", 0), ("o/b", 2), ("+/b", 1)]), [0, 2, 1])
        for pq in (2, 1, 0):
            with self.subTest(publish_qos=pq):
                pub.publish("o/b", b"q%d" % pq, qos=pq)
                got = sub.until_marker(pub)
                self.assertEqual([(m.topic, m.payload, m.qos) for m in got],
                                 [("o/b", b"q%d" % pq, pq)])
        pub.publish("o/c", b"only #", qos=2)  # matches o/# only, granted 0
        got = sub.until_marker(pub)
        self.assertEqual([(m.topic, m.qos) for m in got], [("o/c", 0)])

    def test_resubscribe_replaces_qos_without_duplicates(self):
        # [MQTT-3.8.4-3]: the same filter again replaces the subscription (new QoS).
        sub = self.client("sub")
        pub = self.client("pub")
        self.assertEqual(sub.subscribe([("rs/a", 0)]), [0])
        self.assertEqual(sub.subscribe([("rs/a", 2)]), [2])
        pub.publish("rs/a", b"x", qos=2)
        got = sub.until_marker(pub)
        self.assertEqual([(m.payload, m.qos) for m in got], [(b"x", 2)])


class SubackTest(BrokerTestCase):
    def test_suback_return_code_per_topic(self):
        r = self.raw(connect=True)
        r.send(subscribe_packet(0x4242, [("s/a", 0), ("s/+", 1), ("s/#", 2), ("#", 1)]))
        self.assertEqual(r.recv_packet().raw, b"\x90\x06\x42\x42\x00\x01\x02\x01")

    @mosquitto_differs("closes the connection on an invalid topic filter instead of SUBACK "
                       "0x80")
    def test_suback_0x80_for_invalid_filter(self):
        # Tern answers a malformed filter with 0x80 for that filter only and keeps the
        # others and the connection.
        r = self.raw(connect=True)
        r.send(subscribe_packet(3, [("ok/1", 1), ("a/#/b", 1), ("a/b#", 0), ("a+/b", 2),
                                    ("ok/2", 2)]))
        self.assertEqual(r.recv_packet().raw, b"\x90\x07\x00\x03\x01\x80\x80\x80\x02")
        pub = self.client("pub")
        pub.publish("ok/2", b"still subscribed", qos=0)
        p = r.recv_packet()
        self.assertEqual(p.publish_fields(), ("ok/2", None, b"still subscribed"))


class UnsubscribeTest(BrokerTestCase):
    def test_unsubscribe_stops_delivery(self):
        sub = self.client("sub")
        pub = self.client("pub")
        self.assertEqual(sub.subscribe([("u/1", 1), ("u/2", 1)]), [1, 1])
        pub.publish("u/1", b"before", qos=1)
        self.assertEqual(sub.get().payload, b"before")
        sub.unsubscribe(["u/1"])
        pub.publish("u/1", b"after", qos=1)
        pub.publish("u/2", b"other", qos=1)
        got = sub.until_marker(pub)
        self.assertEqual([(m.topic, m.payload) for m in got], [("u/2", b"other")])

    def test_unsuback_bytes_and_unknown_filter(self):
        # UNSUBACK echoes the packet id, also for a filter that was never subscribed
        # [MQTT-3.10.4-4, 3.10.4-5].
        r = self.raw(connect=True)
        r.send(subscribe_packet(1, [("x/1", 0)]))
        self.assertEqual(r.recv_packet().raw, b"\x90\x03\x00\x01\x00")
        r.send(unsubscribe_packet(0x0a0b, ["x/1", "never/subscribed"]))
        self.assertEqual(r.recv_packet().raw, b"\xb0\x02\x0a\x0b")


class OrderTest(BrokerTestCase):
    N = 10000
    DEADLINE = 50.0

    def test_two_publishers_10000_each_in_order_qos1(self):
        # Per publisher, messages on a topic arrive in publish order [MQTT-4.6.0-5], and with
        # no reconnects none is lost or duplicated.
        start = time.monotonic()
        sub = self.client("sub")
        self.assertEqual(sub.subscribe([("ord/+", 1)]), [1])
        pubs = [self.client("pub%d" % k) for k in range(2)]
        for p in pubs:
            p.mqtt.max_inflight_messages_set(100)
        for i in range(self.N):
            for k, p in enumerate(pubs):
                p.publish("ord/%d" % k, b"%d" % i, qos=1, wait=False)
        left = self.DEADLINE - (time.monotonic() - start)
        got = sub.get_n(2 * self.N, timeout=max(left, 1.0), idle=15.0)
        for p in pubs:
            p.wait_published(self.N, timeout=10.0)
        for k in range(2):
            seq = [int(m.payload) for m in got if m.topic == "ord/%d" % k]
            self.assertEqual(len(seq), self.N, "publisher %d" % k)
            self.assertEqual(seq, list(range(self.N)), "publisher %d out of order" % k)
        self.assertEqual({m.qos for m in got}, {1})
        self.assertEqual(sub.until_marker(pubs[0]), [])

if __name__ == "__main__":
    unittest.main()
