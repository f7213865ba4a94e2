"""Sessions: client ids, clean session, session present, offline delivery, takeover and
re-delivery of unacknowledged messages on reconnect. MQTT 3.1.1 sections 3.1.2.4, 3.2.2.2,
4.1 and 4.4."""

import unittest

from harness import (PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, BrokerTestCase, ack_packet,
                     connect_packet, publish_packet, subscribe_packet, unique_id)

CONNACK_OK = b"\x20\x02\x00\x00"
CONNACK_OK_SESSION = b"\x20\x02\x01\x00"


class ClientIdTest(BrokerTestCase):
    def test_empty_client_id_with_clean_session_accepted(self):
        # [MQTT-3.1.3-6, 3.1.3-7]: the server assigns an id and the client works normally.
        r = self.raw()
        r.send(connect_packet("", clean=True))
        self.assertEqual(r.recv_packet().raw, CONNACK_OK)
        r.send(subscribe_packet(1, [("e/t", 1)]))
        self.assertEqual(r.recv_packet().raw, b"\x90\x03\x00\x01\x01")
        r.send(publish_packet("e/t", b"to myself", qos=1, pid=2))
        got = {}
        for _ in range(2):  # PUBACK and the delivery, in either order
            p = r.recv_packet()
            got[p.type] = p
        self.assertEqual(got[PUBACK].raw, b"\x40\x02\x00\x02")
        self.assertEqual(got[PUBLISH].publish_fields()[::2], ("e/t", b"to myself"))

    def test_empty_client_id_without_clean_session_rejected(self):
        # [MQTT-3.1.3-8]: CONNACK 0x02 (identifier rejected), session present 0
        # [MQTT-3.2.2-4], then close [MQTT-3.2.2-5].
        r = self.raw()
        r.send(connect_packet("", clean=False))
        self.assertEqual(r.expect_closed(), b"\x20\x02\x00\x02")
        self.assert_broker_up()


class PersistentSessionTest(BrokerTestCase):
    N = 100

    def test_offline_qos1_and_qos2_delivered_on_reconnect(self):
        cid = unique_id("pers")
        sub = self.client("sub", client_id=cid, clean_session=False, connect=False)
        self.assertFalse(sub.connect())  # new id: session present 0 [MQTT-3.2.2-3]
        self.assertEqual(sub.subscribe([("s/1", 1), ("s/2", 2)]), [1, 2])
        sub.disconnect()
        pub = self.client("pub")
        for i in range(self.N):
            pub.publish("s/1", b"%d" % i, qos=1, wait=False)
            pub.publish("s/2", b"%d" % i, qos=2, wait=False)
        pub.wait_published(2 * self.N, timeout=20)

        again = self.client("sub2", client_id=cid, clean_session=False, connect=False)
        self.assertTrue(again.connect())  # resumed: session present 1 [MQTT-3.2.2-2]
        got = again.get_n(2 * self.N, timeout=20)
        for topic, qos in (("s/1", 1), ("s/2", 2)):
            mine = [m for m in got if m.topic == topic]
            self.assertEqual([int(m.payload) for m in mine], list(range(self.N)), topic)
            self.assertEqual({m.qos for m in mine}, {qos})
        # Nothing more, and the subscriptions are still there without subscribing again.
        pub.publish("s/2", b"live", qos=2)
        got = again.until_marker(pub)
        self.assertEqual([(m.topic, m.payload) for m in got], [("s/2", b"live")])

    def test_session_present_flag_exact_bytes(self):
        cid = unique_id("sp")
        steps = [(False, CONNACK_OK),  # new id, persistent: no session yet
                 (False, CONNACK_OK_SESSION),  # resumed
                 (True, CONNACK_OK),  # clean session: always 0 [MQTT-3.2.2-1]
                 (False, CONNACK_OK)]  # the clean session discarded the old one
        for i, (clean, connack) in enumerate(steps):
            with self.subTest(step=i, clean=clean):
                r = self.raw()
                r.send(connect_packet(cid, clean=clean))
                self.assertEqual(r.recv_packet().raw, connack)
                r.send(b"\xe0\x00")
                self.assertEqual(r.expect_closed(), b"")

    def test_clean_session_discards_old_session(self):
        # [MQTT-3.1.2-6]: clean session 1 discards the previous session: its subscriptions
        # and the messages queued for it.
        cid = unique_id("disc")
        sub = self.client("sub", client_id=cid, clean_session=False)
        self.assertEqual(sub.subscribe([("cs/t", 1)]), [1])
        sub.disconnect()
        pub = self.client("pub")
        pub.publish("cs/t", b"queued while offline", qos=1)

        clean = self.client("clean", client_id=cid, clean_session=True, connect=False)
        self.assertFalse(clean.connect())
        pub.publish("cs/t", b"no subscription any more", qos=1)
        self.assertEqual(clean.until_marker(pub), [])
        clean.disconnect()

        later = self.client("later", client_id=cid, clean_session=False, connect=False)
        self.assertFalse(later.connect())
        pub.publish("cs/t", b"still none", qos=1)
        self.assertEqual(later.until_marker(pub), [])


class TakeoverTest(BrokerTestCase):
    def test_same_client_id_closes_first_connection(self):
        # [MQTT-3.1.4-2]: the server disconnects the existing client with that id.
        cid = unique_id("take")
        first = self.raw()
        first.send(connect_packet(cid, clean=True))
        self.assertEqual(first.recv_packet().raw, CONNACK_OK)
        second = self.raw()
        second.send(connect_packet(cid, clean=True))
        self.assertEqual(second.recv_packet().raw, CONNACK_OK)
        self.assertEqual(first.expect_closed(), b"")
        second.send(b"\xc0\x00")
        self.assertEqual(second.recv_packet().raw, b"\xd0\x00")  # the new one works

    def test_takeover_keeps_persistent_session(self):
        cid = unique_id("take")
        first = self.raw()
        first.send(connect_packet(cid, clean=False))
        self.assertEqual(first.recv_packet().raw, CONNACK_OK)
        first.send(subscribe_packet(1, [("tk/t", 1)]))
        self.assertEqual(first.recv_packet().raw, b"\x90\x03\x00\x01\x01")
        second = self.client("second", client_id=cid, clean_session=False, connect=False)
        self.assertTrue(second.connect())
        self.assertEqual(first.expect_closed(), b"")
        pub = self.client("pub")
        pub.publish("tk/t", b"to the new connection", qos=1)
        m = second.get()
        self.assertEqual((m.topic, m.payload, m.qos), ("tk/t", b"to the new connection", 1))


class RedeliveryTest(BrokerTestCase):
    """Unacknowledged outgoing messages are re-sent on reconnect with DUP=1 and the same packet
    id [MQTT-4.4.0-1, 3.3.1-1]. The raw client decides what to acknowledge."""

    def persistent_raw(self, cid, session_present):
        r = self.raw()
        r.send(connect_packet(cid, clean=False))
        self.assertEqual(r.recv_packet().raw, CONNACK_OK_SESSION if session_present
                         else CONNACK_OK)
        return r

    def first_delivery_unacked(self, qos):
        """A persistent raw subscriber gets one message at `qos` and drops the connection
        without acknowledging it. Returns (client id, publisher, the PUBLISH it got)."""
        cid = unique_id("redo")
        r = self.persistent_raw(cid, False)
        r.send(subscribe_packet(1, [("d/t", qos)]))
        self.assertEqual(r.recv_packet().raw, bytes([0x90, 3, 0, 1, qos]))
        pub = self.client("pub")
        pub.publish("d/t", b"unacked", qos=qos)
        p = r.recv_packet()
        self.assertEqual((p.type, p.qos, p.dup), (PUBLISH, qos, False))
        r.close()  # no DISCONNECT, no ack
        return cid, pub, p

    def test_unacked_qos1_resent_with_dup(self):
        cid, pub, first = self.first_delivery_unacked(1)
        r = self.persistent_raw(cid, True)
        p = r.recv_packet()
        self.assertEqual((p.type, p.qos, p.dup, p.retain), (PUBLISH, 1, True, False))
        self.assertEqual(p.publish_fields(), first.publish_fields())  # same id and payload
        self.assertEqual(p.raw[1:], first.raw[1:])
        r.send(ack_packet(PUBACK, first.publish_fields()[1]))
        # Acked now: the next packet is a new message, not the old one again.
        pub.publish("d/t", b"next", qos=1)
        p = r.recv_packet()
        self.assertEqual((p.dup, p.publish_fields()[2]), (False, b"next"))

    def test_unacked_qos2_resent_with_dup(self):
        cid, pub, first = self.first_delivery_unacked(2)
        r = self.persistent_raw(cid, True)
        p = r.recv_packet()
        self.assertEqual((p.type, p.qos, p.dup), (PUBLISH, 2, True))
        self.assertEqual(p.raw[1:], first.raw[1:])
        pid = first.publish_fields()[1]
        r.send(ack_packet(PUBREC, pid))
        self.assertEqual(r.recv_packet().raw, b"\x62\x02" + pid.to_bytes(2, "big"))
        r.send(ack_packet(PUBCOMP, pid))
        pub.publish("d/t", b"next", qos=2)
        p = r.recv_packet()
        self.assertEqual((p.dup, p.publish_fields()[2]), (False, b"next"))

    def test_pubrel_resent_on_reconnect(self):
        # PUBREC sent but PUBCOMP not: on reconnect the broker re-sends PUBREL, not the
        # PUBLISH [MQTT-4.4.0-1, 4.3.3-1].
        cid = unique_id("rel")
        r = self.persistent_raw(cid, False)
        r.send(subscribe_packet(1, [("d/t", 2)]))
        self.assertEqual(r.recv_packet().raw, b"\x90\x03\x00\x01\x02")
        pub = self.client("pub")
        pub.publish("d/t", b"half done", qos=2)
        pid = r.recv_packet().publish_fields()[1]
        r.send(ack_packet(PUBREC, pid))
        pubrel = b"\x62\x02" + pid.to_bytes(2, "big")
        self.assertEqual(r.recv_packet().raw, pubrel)
        r.close()
        r = self.persistent_raw(cid, True)
        self.assertEqual(r.recv_packet().raw, pubrel)
        r.send(ack_packet(PUBCOMP, pid))
        pub.publish("d/t", b"next", qos=2)
        p = r.recv_packet()
        self.assertEqual((p.type, p.dup, p.publish_fields()[2]), (PUBLISH, False, b"next"))

    def test_inbound_qos2_resent_by_publisher_delivered_once(self):
        # The publisher loses the connection after PUBREC and re-sends the PUBLISH with DUP
        # and then PUBREL: the subscriber gets the message exactly once [MQTT-4.3.3-2].
        sub = self.client("sub")
        self.assertEqual(sub.subscribe([("in/t", 2)]), [2])
        cid = unique_id("inq2")
        r = self.persistent_raw(cid, False)
        r.send(publish_packet("in/t", b"once", qos=2, pid=5))
        self.assertEqual(r.recv_packet().raw, b"\x50\x02\x00\x05")
        r.close()
        r = self.persistent_raw(cid, True)
        r.send(publish_packet("in/t", b"once", qos=2, pid=5, dup=True))
        self.assertEqual(r.recv_packet().raw, b"\x50\x02\x00\x05")
        r.send(ack_packet(PUBREL, 5))
        self.assertEqual(r.recv_packet().raw, b"\x70\x02\x00\x05")
        pub = self.client("pub")
        got = sub.until_marker(pub)
        self.assertEqual([(m.payload, m.qos) for m in got], [(b"once", 2)])


if __name__ == "__main__":
    unittest.main()
