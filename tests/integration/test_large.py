"""Large messages (issue 12, first part): a payload of many MiB goes out to every subscriber by
reference to the one message in memory, never copied into each connection's output buffer, and
arrives intact across protocols. The broker runs with max_packet_size raised to 20 MiB (the
default limit is still 1 MiB)."""

import hashlib
import os
import unittest

from harness import StompTestCase, needs_broker_control, tern_only

MIB = 1 << 20


def status_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s for pid %d" % (key, pid))


def payload(n, seed):
    """n bytes that differ everywhere (a truncated or shifted copy does not compare equal)."""
    block = hashlib.sha256(seed).digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


@tern_only("ternd's limits and memory")
@needs_broker_control("sets ternd's limits and reads its memory")
class LargeMessageTest(StompTestCase):
    LIMITS = {"max_packet_size": 20 * MIB}
    SANITIZED = "asan" in os.environ.get("TERND", "")

    def test_16_mib_to_10_subscribers_costs_its_size_once(self):
        """One 16 MiB QoS 1 message to 10 MQTT subscribers: each gets it whole, and the broker's
        peak memory grows by less than 64 MiB (its input, the message, and references to it;
        ten copies would be 160 MiB more)."""
        topic = "large/fan"
        subs = []
        for i in range(10):
            s = self.client("big%d" % i)
            self.assertEqual(s.subscribe([(topic, 1)]), [1])
            subs.append(s)
        pid = self.broker.proc.pid
        before = status_kib(pid, "VmRSS")
        body = payload(16 * MIB, b"fan")
        pub = self.client("bigpub")
        pub.publish(topic, body, qos=1, timeout=60)
        for s in subs:
            m = s.get(timeout=60)
            self.assertEqual(len(m.payload), len(body))
            self.assertTrue(m.payload == body, "%s: payload differs" % s.client_id)
        grew_mib = (status_kib(pid, "VmHWM") - before) / 1024.0
        if os.environ.get("TERN_IT_VERBOSE"):
            print("\n  peak RSS growth %.1f MiB" % grew_mib)
        limit = 64 if not self.SANITIZED else 160  # ASan keeps freed memory in quarantine
        self.assertLess(grew_mib, limit, "peak RSS grew %.1f MiB for one 16 MiB message to 10 "
                        "subscribers" % grew_mib)
        self.assert_broker_up()

    def test_mqtt_to_stomp_and_back_8_mib(self):
        """An 8 MiB MQTT publish reaches a STOMP subscriber of /topic/large.x byte for byte, with
        content-length; an 8 MiB STOMP SEND reaches an MQTT subscriber of large/x."""
        st = self.stomp()
        st.subscribe("/topic/large.x")
        body = payload(8 * MIB, b"m2s")
        pub = self.client("m2s")
        pub.publish("large/x", body, qos=1, timeout=60)
        msg = st.get(timeout=60)
        self.assertEqual(int(msg.headers["content-length"]), len(body))
        self.assertTrue(msg.body == body, "STOMP body differs from the MQTT payload")

        sub = self.client("s2m")
        self.assertEqual(sub.subscribe([("large/y", 1)]), [1])
        back = payload(8 * MIB, b"s2m")
        st.send("/topic/large.y", back, receipt=True, timeout=60)
        m = sub.get(timeout=60)
        self.assertTrue(m.payload == back, "MQTT payload differs from the STOMP body")
        self.assert_broker_up()


if __name__ == "__main__":
    unittest.main()
