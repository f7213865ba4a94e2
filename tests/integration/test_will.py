"""Will messages: published when the network connection ends without DISCONNECT (socket
closed, keep-alive expired), not after DISCONNECT; retained wills. MQTT 3.1.1 section 3.1.2.5
and 3.1.2.10."""

import socket
import struct
import time
import unittest

from harness import BrokerTestCase, mosquitto_differs


class WillTest(BrokerTestCase):
    def watcher(self, topic="w/#"):
        w = self.client("watch")
        self.assertEqual(w.subscribe([(topic, 2)]), [2])
        return w

    def test_will_on_socket_closed_without_disconnect(self):
        # [MQTT-3.1.2-8]: the will is published when the connection is closed without a
        # DISCONNECT; at its own QoS, RETAIN=0 when it was not retained.
        w = self.watcher()
        for qos in (0, 1, 2):
            with self.subTest(will_qos=qos):
                r = self.raw()
                r.connect(will=("w/%d" % qos, b"gone %d" % qos, qos, False))
                r.close()
                m = w.get(timeout=5)
                self.assertEqual((m.topic, m.payload, m.qos, m.retain),
                                 ("w/%d" % qos, b"gone %d" % qos, qos, False))

    def test_will_on_connection_reset(self):
        w = self.watcher()
        r = self.raw()
        r.connect(will=("w/rst", b"reset", 1, False))
        # SO_LINGER 0: close() sends a TCP RST instead of a FIN.
        r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        r.close()
        m = w.get(timeout=5)
        self.assertEqual((m.topic, m.payload), ("w/rst", b"reset"))

    def test_will_on_keepalive_timeout(self):
        # A client with keepalive 1 s that goes silent: the broker closes the connection and
        # publishes the will [MQTT-3.1.2-8, 3.1.2-24].
        w = self.watcher()
        r = self.raw()
        r.connect(keepalive=1, will=("w/ka", b"timed out", 1, False))
        start = time.monotonic()
        self.assertEqual(r.expect_closed(timeout=10), b"")
        self.assertGreaterEqual(time.monotonic() - start, 1.0, "closed before the keepalive")
        m = w.get(timeout=5)
        self.assertEqual((m.topic, m.payload, m.qos), ("w/ka", b"timed out", 1))

    @mosquitto_differs("checks keepalives every 5 s: a keepalive=1 client is closed after "
                       "about 5.4 s")
    def test_keepalive_timeout_within_one_and_a_half_times(self):
        # [MQTT-3.1.2-24]: closed within 1.5 x keepalive of the last packet (our CONNECT,
        # which is before the CONNACK the clock starts at). 0.3 s for scheduling.
        r = self.raw()
        r.connect(keepalive=1)
        start = time.monotonic()
        self.assertEqual(r.expect_closed(timeout=10), b"")
        elapsed = time.monotonic() - start
        self.assertGreaterEqual(elapsed, 0.9)
        self.assertLessEqual(elapsed, 1.5 + 0.3)

    def test_no_will_after_disconnect(self):
        # [MQTT-3.1.2-10]: DISCONNECT removes the will; nothing is published, not even
        # retained.
        w = self.watcher()
        r = self.raw()
        r.connect(will=("w/clean", b"must not appear", 1, True))
        r.send(b"\xe0\x00")
        self.assertEqual(r.expect_closed(), b"")
        pub = self.client("pub")
        self.assertEqual(w.until_marker(pub), [])
        late = self.client("late")
        self.assertEqual(late.subscribe([("w/clean", 1)]), [1])
        self.assertEqual(late.until_marker(pub), [])

    def test_will_with_retain(self):
        # [MQTT-3.1.2-17]: a will with Will Retain 1 is published as a retained message:
        # live subscribers get RETAIN=0, later subscribers get the stored copy, RETAIN=1.
        w = self.watcher()
        r = self.raw()
        r.connect(will=("w/ret", b"last words", 1, True))
        r.close()
        m = w.get(timeout=5)
        self.assertEqual((m.topic, m.payload, m.retain), ("w/ret", b"last words", False))
        late = self.client("late")
        self.assertEqual(late.subscribe([("w/ret", 2)]), [2])
        m = late.get(timeout=5)
        self.assertEqual((m.topic, m.payload, m.qos, m.retain), ("w/ret", b"last words", 1, True))

    def test_will_from_paho_client(self):
        # The same through a real client library: its network thread is stopped and the
        # socket closed without DISCONNECT.
        w = self.watcher()
        c = self.client("dies", connect=False)
        c.connect(will=("w/paho", b"paho gone", 2, False))
        c.mqtt.loop_stop()
        c.mqtt.socket().close()
        m = w.get(timeout=5)
        self.assertEqual((m.topic, m.payload, m.qos), ("w/paho", b"paho gone", 2))


if __name__ == "__main__":
    unittest.main()
