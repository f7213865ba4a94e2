"""ternd as a daemon: the start/stop contract the harness relies on (TERN-READY per listener,
--data, clean exit on SIGTERM and SIGINT, also with clients and state still there)."""

import os
import shutil
import signal
import subprocess
import tempfile
import unittest

from harness import (PUBLISH, PUBREC, Broker, BrokerTestCase, Client, RawClient, TIMEOUT,
                     ack_packet, connect_packet, subscribe_packet, tern_only, unique_id)


@tern_only("the ternd command line and TERN-* log lines")
class DaemonTest(unittest.TestCase):
    def start(self, **kw):
        b = Broker(**kw)
        self.addCleanup(b.stop)
        return b.start()

    def test_ready_line_per_listener_and_both_serve(self):
        b = self.start(listeners=2)
        ready = [line for line in b.log_lines() if "TERN-READY" in line]
        self.assertEqual(len(ready), 2, ready)
        self.assertEqual(len(set(b.ports)), 2)
        self.assertNotIn(0, b.ports)
        # One broker behind both: subscribe on one port, publish on the other.
        sub = Client(b, name="sub", port=b.ports[0])
        pub = Client(b, name="pub", port=b.ports[1])
        for c in (sub, pub):
            self.addCleanup(c.close)
            c.connect()
        self.assertEqual(sub.subscribe([("d/t", 1)]), [1])
        pub.publish("d/t", b"across listeners", qos=1)
        self.assertEqual(sub.get().payload, b"across listeners")
        sub.disconnect()
        pub.disconnect()

    def test_data_dir_created_if_missing(self):
        top = tempfile.mkdtemp(prefix="tern-it-")
        self.addCleanup(shutil.rmtree, top, True)
        data = os.path.join(top, "a", "b")
        b = self.start(data_dir=data)
        self.assertTrue(os.path.isdir(data))
        r = RawClient(b)
        self.addCleanup(r.close)
        self.assertFalse(r.connect())

    def test_sigint_exits_cleanly(self):
        b = self.start()
        b.stop(sig=signal.SIGINT)

    def test_unknown_listen_scheme_refused(self):
        ternd = os.environ.get("TERND")
        self.assertTrue(ternd, "set TERND")
        with tempfile.TemporaryDirectory(prefix="tern-it-") as data:
            r = subprocess.run([ternd, "--listen", "bogus://127.0.0.1:0", "--data", data],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=20)
        self.assertNotEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("TERN-READY", r.stderr)


class StopWithStateTest(BrokerTestCase):
    def test_stop_with_clients_and_state(self):
        # SIGTERM while clients are connected and the broker holds state of every kind: a
        # persistent offline session with queued messages, a retained message, a QoS 2
        # delivery half done, a half-received packet. It must still exit 0 (for an ASan
        # build: with nothing leaked).
        pub = self.client("pub")
        pub.publish("st/retained", b"kept", qos=1, retain=True)
        offline = self.client("offline", client_id=unique_id("off"), clean_session=False)
        self.assertEqual(offline.subscribe([("st/#", 2)]), [2])
        offline.disconnect()
        raw = self.raw(connect=True)
        raw.send(subscribe_packet(1, [("st/q2", 2)]))
        self.assertEqual(raw.recv_packet().raw, b"\x90\x03\x00\x01\x02")
        for i in range(20):
            pub.publish("st/q2", b"%d" % i, qos=2)
        p = raw.recv_packet()
        self.assertEqual(p.type, PUBLISH)
        raw.send(ack_packet(PUBREC, p.publish_fields()[1]))  # no PUBCOMP will follow
        partial = self.raw()
        partial.send(connect_packet(unique_id("part"))[:5])
        live = self.client("live")
        self.assertEqual(live.subscribe([("st/#", 1)]), [1])
        self.broker.stop()
        raw.expect_closed(timeout=TIMEOUT)  # whatever it still sent first
        self.assertEqual(partial.expect_closed(timeout=TIMEOUT), b"")
        self.assertTrue(live.disconnected.wait(TIMEOUT), "live client not disconnected")


if __name__ == "__main__":
    unittest.main()
