"""Flow control: a fast publisher with 256 messages in flight against a deliberately slow
subscriber. Every message arrives (QoS 1: at least once, QoS 2: exactly once), the publisher
gets every acknowledgement, and the broker stays up."""

import collections
import time
import unittest

from harness import BrokerTestCase


class SlowSubscriberTest(BrokerTestCase):
    N = 20000
    INFLIGHT = 256
    SLOW = 1000  # the subscriber takes SLOW_DELAY per message for its first SLOW messages
    SLOW_DELAY = 0.001
    DEADLINE = 100.0  # whole test; against mosquitto it takes a few seconds

    def run_flow(self, qos):
        start = time.monotonic()
        seen = [0]

        def slow(msg):
            # Runs on the subscriber's network thread: while it sleeps nothing is read from
            # the socket, so the broker's output to it backs up (a deliberate stall, not a
            # wait for an event).
            seen[0] += 1
            if seen[0] <= self.SLOW:
                time.sleep(self.SLOW_DELAY)

        sub = self.client("slow", on_message=slow)
        self.assertEqual(sub.subscribe([("flow/t", qos)]), [qos])
        pub = self.client("fast", connect=False)
        pub.mqtt.max_inflight_messages_set(self.INFLIGHT)
        pub.connect()
        for i in range(self.N):
            pub.publish("flow/t", b"%d" % i, qos=qos, wait=False)

        def left():
            return max(self.DEADLINE - (time.monotonic() - start), 1.0)

        pub.wait_published(self.N, timeout=left())
        self.assertEqual(pub.published_count, self.N)
        got = sub.get_n(self.N, timeout=left(), idle=15.0)
        if qos == 1:
            # At least once: duplicates are allowed, so collect until the marker too.
            got += sub.until_marker(pub, timeout=left())
        else:
            self.assertEqual(sub.until_marker(pub, timeout=left()), [])
        counts = collections.Counter(int(m.payload) for m in got)
        missing = [i for i in range(self.N) if counts[i] == 0]
        self.assertEqual(missing[:20], [], "%d messages missing" % len(missing))
        self.assertEqual(set(counts), set(range(self.N)))
        if qos == 2:
            dups = [i for i, c in counts.items() if c != 1]
            self.assertEqual(dups[:20], [], "%d messages delivered more than once" % len(dups))
        self.assertEqual({m.qos for m in got}, {qos})
        self.assert_broker_up()

    def test_qos1_256_in_flight_slow_subscriber(self):
        self.run_flow(1)

    def test_qos2_256_in_flight_slow_subscriber(self):
        self.run_flow(2)


if __name__ == "__main__":
    unittest.main()
