"""Durability (issue 5): what ternd confirmed survives kill -9 and a restart.

Each test keeps one data folder across broker processes: SIGKILL is a crash (nothing flushed,
no shutdown code), start() replays the journal. Mosquitto is not run here: it keeps its state
in a snapshot written at intervals and at exit, so it loses confirmed messages on kill -9."""
import os
import random
import shutil
import tempfile
import threading
import time
import unittest

from harness import (Broker, BROKER_KIND, Client, RawClient, TIMEOUT, PUBLISH, PUBREC, PUBREL,
                     PUBCOMP, ack_packet, subscribe_packet)

N_CYCLES = int(os.environ.get("TERN_CRASH_CYCLES", "20"))


@unittest.skipIf(BROKER_KIND == "mosquitto", "tern only: Mosquitto persists by snapshot")
class DurabilityTest(unittest.TestCase):
    extra_args = ()

    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="tern-dur-")
        self.broker = Broker(data_dir=self.data, extra_args=self.extra_args(self.data)
                             if callable(self.extra_args) else self.extra_args)
        self.clients = []
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        for c in self.clients:
            c.close()
        self.broker.stop()
        shutil.rmtree(self.data, ignore_errors=True)

    def client(self, name, **kw):
        c = Client(self.broker, client_id=name, **kw)
        self.clients.append(c)
        c.connect()
        return c

    def restart(self, crash=True):
        for c in self.clients:
            c.close()
        self.clients = []
        if crash:
            self.broker.crash()
        else:
            self.broker.stop()
        self.broker.start()

    def test_offline_session_messages_survive_kill(self):
        self.broker.start()
        sub = self.client("dur-sub", clean_session=False)
        self.assertEqual(sub.subscribe([("d/#", 2)]), [2])
        sub.disconnect()
        pub = self.client("dur-pub")
        for i in range(300):
            pub.publish("d/1", b"q1-%d" % i, qos=1, wait=False)
        for i in range(100):
            pub.publish("d/2", b"q2-%d" % i, qos=2, wait=False)
        pub.wait_published(400, timeout=TIMEOUT)  # every one confirmed (PUBACK/PUBCOMP)
        self.restart(crash=True)
        sub = self.client("dur-sub", clean_session=False)
        got = sub.get_n(400, timeout=TIMEOUT)
        self.assertEqual([m.payload for m in got if m.topic == "d/1"],
                         [b"q1-%d" % i for i in range(300)])
        self.assertEqual([m.payload for m in got if m.topic == "d/2"],
                         [b"q2-%d" % i for i in range(100)])
        # Acknowledged now; after a clean stop and a start they must not come back.
        pub = self.client("dur-pub2")
        self.assertEqual(sub.until_marker(pub), [])
        sub.disconnect()
        self.restart(crash=False)
        sub = self.client("dur-sub", clean_session=False)
        pub = self.client("dur-pub3")
        self.assertEqual(sub.until_marker(pub), [])

    def test_retained_and_subscriptions_survive_kill(self):
        self.broker.start()
        pub = self.client("ret-pub")
        pub.publish("r/a", b"A", qos=1, retain=True)
        pub.publish("r/b", b"B", qos=1, retain=True)
        pub.publish("r/b", b"", qos=1, retain=True)  # cleared
        sub = self.client("ret-sub", clean_session=False)
        sub.subscribe([("live/+", 1)])
        self.restart(crash=True)
        obs = self.client("ret-obs")
        obs.subscribe([("r/#", 1)])
        m = obs.get()
        self.assertEqual((m.topic, m.payload, m.retain), ("r/a", b"A", True))
        pub = self.client("ret-pub2")
        self.assertEqual(obs.until_marker(pub), [])  # r/b stayed cleared
        # The persistent session kept its subscription: a message published while it is
        # offline waits for it.
        pub.publish("live/x", b"waiting", qos=1)
        sub = self.client("ret-sub", clean_session=False)
        self.assertEqual(sub.get().payload, b"waiting")

    def test_kill_loop_loses_nothing_confirmed(self):
        # Publish with confirmations and consume with acks while ternd is SIGKILLed at random
        # moments; afterwards every confirmed message was delivered at least once, in order.
        rnd = random.Random(5)
        confirmed = set()
        received = []
        seq = 0
        self.broker.start()
        sub = self.client("loop-sub", clean_session=False)
        sub.subscribe([("loop/t", 1)])
        sub.disconnect()
        for cycle in range(N_CYCLES):
            # The subscriber is online every other cycle: in the others, what is confirmed
            # must wait in its persistent session through the crash.
            sub = None
            if cycle % 2:
                sub = self.client("loop-sub", clean_session=False)
            pub = Client(self.broker, client_id="loop-pub")
            self.clients.append(pub)
            pub.connect()
            mids = {}  # packet id -> seq, until confirmed
            early = set()  # confirmations that came before publish() returned
            cond = threading.Condition()

            def on_publish(c, userdata, mid, mids=mids, early=early, cond=cond):
                with cond:
                    if mid in mids:
                        confirmed.add(mids.pop(mid))
                    else:
                        early.add(mid)
                    cond.notify()

            pub.mqtt.on_publish = on_publish
            pub.mqtt.max_inflight_messages_set(20)
            deadline = time.monotonic() + rnd.uniform(0.05, 0.4)
            while time.monotonic() < deadline:
                with cond:  # at most 100 unconfirmed at a time; wait for confirmations
                    cond.wait_for(lambda: len(mids) < 100,
                                  timeout=max(deadline - time.monotonic(), 0))
                    if len(mids) >= 100:
                        break
                seq += 1
                info = pub.mqtt.publish("loop/t", b"%d" % seq, qos=1)  # not under cond
                with cond:
                    if info.mid in early:
                        early.discard(info.mid)
                        confirmed.add(seq)
                    else:
                        mids[info.mid] = seq
            self.broker.crash()
            while sub and not sub.messages.empty():
                received.append(int(sub.messages.get().payload))
            for c in self.clients:
                c.close()
            self.clients = []
            self.broker.start()
        # Drain: a last, clean run.
        sub = self.client("loop-sub", clean_session=False)
        pub = self.client("loop-final")
        received += [int(m.payload) for m in sub.until_marker(pub, timeout=30)]
        self.assertTrue(len(confirmed) > N_CYCLES, "too few confirmed messages to mean much")
        missing = sorted(confirmed - set(received))
        self.assertEqual(missing, [], "confirmed but never delivered")
        firsts = []
        seen = set()
        for x in received:
            if x not in seen:
                seen.add(x)
                firsts.append(x)
        self.assertEqual(firsts, sorted(firsts), "first deliveries out of publish order")


    def test_deep_queue_is_paged_and_drains_in_order(self):
        """Far more than max_queue_memory waits for an offline session (with the paging config
        below, nearly all of it on disk only); after kill -9 it all comes back, in order."""
        self.broker.start()
        sub = self.client("deep-sub", clean_session=False)
        self.assertEqual(sub.subscribe([("deep/q", 1)]), [1])
        sub.disconnect()
        pub = self.client("deep-pub")
        n = 3000
        for i in range(n):
            pub.publish("deep/q", b"%05d" % i + b"x" * 200, qos=1, wait=False)
        pub.wait_published(n, TIMEOUT * 4)
        self.restart(crash=True)
        sub = self.client("deep-sub", clean_session=False)
        got = [int(m.payload[:5]) for m in sub.get_n(n, timeout=TIMEOUT * 4)]
        self.assertEqual(got, list(range(n)))

    def test_qos2_delivery_resumes_with_its_packet_id_after_kill(self):
        """Exactly once to a QoS 2 subscriber across broker crashes: an unanswered PUBLISH is
        re-sent with the same packet id, and once PUBREC was answered with PUBREL, a restart
        re-sends PUBREL, never the PUBLISH again [MQTT-4.3.3], [MQTT-4.4.0-1]."""
        self.broker.start()
        raw = RawClient(self.broker)
        raw.connect("q2-sub", clean=False)
        raw.send(subscribe_packet(1, [("q2/x", 2)]))
        raw.recv_packet()  # SUBACK
        pub = self.client("q2-pub")
        pub.publish("q2/x", b"once", qos=2)  # PUBCOMP: the broker holds it durably
        p = raw.recv_packet()
        self.assertEqual(p.type, PUBLISH)
        _, pid, payload = p.publish_fields()
        self.assertEqual(payload, b"once")
        raw.close()
        self.restart(crash=True)

        raw = RawClient(self.broker)
        self.assertTrue(raw.connect("q2-sub", clean=False))
        p = raw.recv_packet()
        self.assertEqual((p.type, p.publish_fields()[1:]), (PUBLISH, (pid, b"once")))
        raw.send(ack_packet(PUBREC, pid))
        p = raw.recv_packet()  # sent once the journal has "PUBREC received"
        self.assertEqual((p.type, p.body), (PUBREL, pid.to_bytes(2, "big")))
        raw.close()
        self.restart(crash=True)

        raw = RawClient(self.broker)
        self.assertTrue(raw.connect("q2-sub", clean=False))
        p = raw.recv_packet()
        self.assertEqual((p.type, p.body), (PUBREL, pid.to_bytes(2, "big")))
        raw.send(ack_packet(PUBCOMP, pid))
        pub = self.client("q2-pub")
        pub.publish("q2/x", b"next", qos=2)
        p = raw.recv_packet()
        self.assertEqual((p.type, p.publish_fields()[2]), (PUBLISH, b"next"))
        raw.close()


def _paging_args(data):
    conf = os.path.join(data, "paging.conf")
    with open(conf, "w") as f:
        f.write("limits:\n  max_queue_memory: 4096\n")
    return ("-c", conf)


class PagingDurabilityTest(DurabilityTest):
    """The same with 4 KiB of each persistent session's queue in memory: nearly every queued
    message is read back from the journal, across the crashes."""
    extra_args = staticmethod(_paging_args)


def _compacting_args(data):
    conf = os.path.join(data, "compact.conf")
    with open(conf, "w") as f:
        f.write("store:\n  compact_bytes: 4096\n")
    return ("-c", conf)


class CompactingDurabilityTest(DurabilityTest):
    """The same with a checkpoint every 4 KiB of journal, so crashes also land during
    checkpoints and right after segments were deleted."""
    extra_args = staticmethod(_compacting_args)


if __name__ == "__main__":
    unittest.main()
