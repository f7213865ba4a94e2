"""Retained messages: set, replace, clear, delivery on subscribe (also through wildcards) and
the RETAIN flag on delivery. MQTT 3.1.1 section 3.3.1.3."""

import unittest

from harness import PUBLISH, BrokerTestCase, subscribe_packet


class RetainedTest(BrokerTestCase):
    def retained_for(self, pub, filters):
        """What a new subscriber to `filters` gets before a live marker: the retained
        messages, since the broker sends them on SUBSCRIBE [MQTT-3.3.1-6]."""
        sub = self.client("late")
        self.assertEqual(sub.subscribe([(f, 2) for f in filters]), [2] * len(filters))
        got = sub.until_marker(pub)
        sub.disconnect()
        return got

    def test_set_and_delivered_on_subscribe_with_retain_flag(self):
        pub = self.client("pub")
        pub.publish("r/a", b"v1", qos=1, retain=True)
        got = self.retained_for(pub, ["r/a"])
        # From the retained store: RETAIN=1 [MQTT-3.3.1-8], QoS min(publish, subscription).
        self.assertEqual([(m.topic, m.payload, m.retain, m.qos) for m in got],
                         [("r/a", b"v1", True, 1)])

    def test_replace_keeps_only_the_last(self):
        pub = self.client("pub")
        pub.publish("r/a", b"v1", qos=1, retain=True)
        pub.publish("r/a", b"v2", qos=2, retain=True)  # replaces v1 [MQTT-3.3.1-5]
        got = self.retained_for(pub, ["r/a"])
        self.assertEqual([(m.payload, m.retain, m.qos) for m in got], [(b"v2", True, 2)])

    def test_non_retained_publish_does_not_replace(self):
        pub = self.client("pub")
        pub.publish("r/a", b"kept", qos=1, retain=True)
        pub.publish("r/a", b"live only", qos=1, retain=False)
        got = self.retained_for(pub, ["r/a"])
        self.assertEqual([m.payload for m in got], [b"kept"])

    def test_clear_with_empty_payload(self):
        pub = self.client("pub")
        live = self.client("live")
        self.assertEqual(live.subscribe([("r/a", 1)]), [1])
        pub.publish("r/a", b"v1", qos=1, retain=True)
        pub.publish("r/a", b"", qos=1, retain=True)  # clears [MQTT-3.3.1-10]
        # Current subscribers still get both, as ordinary messages (RETAIN=0)
        # [MQTT-3.3.1-9, 3.3.1-12].
        got = live.until_marker(pub)
        self.assertEqual([(m.payload, m.retain) for m in got], [(b"v1", False), (b"", False)])
        # A new subscriber gets nothing; the empty message is not stored [MQTT-3.3.1-11].
        self.assertEqual(self.retained_for(pub, ["r/a", "r/#"]), [])

    def test_delivered_through_wildcards(self):
        pub = self.client("pub")
        topics = {"rw/a": b"A", "rw/b/c": b"BC", "rw/d": b"D", "other/x": b"X"}
        for t, p in topics.items():
            pub.publish(t, p, qos=1, retain=True)
        for filt, want in [("rw/#", {"rw/a", "rw/b/c", "rw/d"}), ("rw/+", {"rw/a", "rw/d"}),
                           ("+/b/+", {"rw/b/c"}), ("#", set(topics)), ("rw", set())]:
            with self.subTest(filter=filt):
                got = self.retained_for(pub, [filt])
                self.assertEqual(sorted(m.topic for m in got), sorted(want))
                for m in got:
                    self.assertEqual((m.payload, m.retain), (topics[m.topic], True))

    def test_retain_flag_cleared_on_live_delivery(self):
        # [MQTT-3.3.1-9]: a subscriber that was already there gets RETAIN=0; one that
        # subscribes afterwards gets the stored copy with RETAIN=1.
        pub = self.client("pub")
        early = self.client("early")
        self.assertEqual(early.subscribe([("rf/t", 2)]), [2])
        for q in (0, 1, 2):
            with self.subTest(qos=q):
                pub.publish("rf/t", b"q%d" % q, qos=q, retain=True)
                got = early.until_marker(pub)
                self.assertEqual([(m.payload, m.retain, m.qos) for m in got],
                                 [(b"q%d" % q, False, q)])
                got = self.retained_for(pub, ["rf/t"])
                self.assertEqual([(m.payload, m.retain, m.qos) for m in got],
                                 [(b"q%d" % q, True, q)])

    def test_retained_qos_capped_by_subscription(self):
        pub = self.client("pub")
        pub.publish("rq/t", b"two", qos=2, retain=True)
        r = self.raw(connect=True)
        r.send(subscribe_packet(1, [("rq/t", 0)]))
        self.assertEqual(r.recv_packet().raw, b"\x90\x03\x00\x01\x00")
        p = r.recv_packet()
        # Exact bytes: PUBLISH QoS 0, RETAIN=1, no packet id.
        self.assertEqual(p.raw, b"\x31\x09\x00\x04rq/ttwo")

    def test_resubscribe_sends_retained_again(self):
        # [MQTT-3.8.4-3]: re-subscribing replaces the subscription and re-sends retained
        # messages.
        pub = self.client("pub")
        pub.publish("rr/t", b"again", qos=1, retain=True)
        r = self.raw(connect=True)
        for pid in (1, 2):
            r.send(subscribe_packet(pid, [("rr/t", 0)]))
            self.assertEqual(r.recv_packet().raw, bytes([0x90, 3, 0, pid, 0]))
            p = r.recv_packet()
            self.assertEqual((p.type, p.retain, p.publish_fields()),
                             (PUBLISH, True, ("rr/t", None, b"again")))


if __name__ == "__main__":
    unittest.main()
