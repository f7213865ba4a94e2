"""Active/standby pair (issue 15): a witness and two ternd nodes on loopback.

What is checked, with real clients (paho-mqtt, stomp.py, raw sockets, python-qpid-proton):
roles and their log lines (TERN-ROLE active/catching-up/standby epoch=N); a standby refuses
clients (MQTT CONNACK 3, STOMP ERROR "standby", AMQP close amqp:connection:redirect); persistent
messages confirmed by the active are all on the standby when the active is killed (kill -9) or
frozen (SIGSTOP past its lease), and the frozen one refuses work when it wakes (fenced); the old
active restarted rejoins as the standby and catches up; a clean stop hands the role over; an
active whose standby stops answering confirms nothing until it has recorded with the witness
that it goes on alone (PAIR-ALONE), and a standby recorded out of sync is never promoted.

Run: TERND=build/dev/tools/ternd/ternd /usr/bin/python3 tests/integration/test_pair.py -v
"""

import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest

from harness import (CONNACK, HOST, TIMEOUT, Broker, Client, RawClient, StompClient,
                     connect_packet, free_port, make_test_certs, unique_id)

LEASE_S = 1.0  # cluster.h TN_LEASE_MS
ALONE_MS = 500  # --pair-alone-timeout in these tests


def role_re(role, epoch=None):
    return r"TERN-ROLE %s epoch=%s\b" % (role, epoch if epoch is not None else r"\d+")


JAVA = "/usr/bin/java"
ZK_JAR = "/usr/share/java/zookeeper.jar"  # Debian zookeeper
HAVE_ZOOKEEPER = os.access(JAVA, os.X_OK) and os.path.exists(ZK_JAR)


class ZooKeeperServer:
    """A standalone ZooKeeper server on a free loopback port, its data in a temporary folder,
    with tickTime 200 ms: ZooKeeper grants session timeouts of 2..20 ticks, and the pair asks
    for its lease (1 s)."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="tern-zk-")
        self.port = free_port()
        cfg = os.path.join(self.tmp, "zoo.cfg")
        with open(cfg, "w") as f:
            f.write("tickTime=200\ndataDir=%s\nclientPort=%d\nclientPortAddress=%s\n"
                    "admin.enableServer=false\n" % (os.path.join(self.tmp, "data"), self.port,
                                                    HOST))
        self.log = open(os.path.join(self.tmp, "server.log"), "wb")
        self.proc = subprocess.Popen(
            [JAVA, "-Xmx128m", "-XX:+UseSerialGC", "-cp", ZK_JAR,
             "org.apache.zookeeper.server.ZooKeeperServerMain", cfg],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._wait_serving()
        except BaseException:
            self.stop()
            raise

    def _wait_serving(self):
        """Until the server grants a session (its four-letter "ruok" is off by default)."""
        deadline = time.monotonic() + 60  # a JVM's start on a busy machine
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("ZooKeeper exited: see %s" % self.log.name)
            try:
                with socket.create_connection((HOST, self.port), timeout=2) as s:
                    # ConnectRequest: protocol 0, last zxid 0, timeout 4000, session 0, an
                    # empty 16-byte password, not read-only; then closeSession (type -11).
                    req = struct.pack(">iqiqi16s?", 0, 0, 4000, 0, 16, b"", False)
                    s.sendall(struct.pack(">i", len(req)) + req)
                    head = s.recv(4, socket.MSG_WAITALL)
                    body = s.recv(struct.unpack(">i", head)[0], socket.MSG_WAITALL)
                    if struct.unpack(">ii", body[:8])[1] > 0:
                        s.sendall(struct.pack(">iii", 8, 1, -11))
                        return
            except (OSError, struct.error):
                pass
            time.sleep(0.1)
        raise AssertionError("ZooKeeper did not start: see %s" % self.log.name)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Pair:
    """A witness (or, given a ZooKeeper server's HOST:PORT, a fresh PATH there) and nodes a
    and b, each with MQTT, STOMP and AMQP listeners; data folders kept across restarts."""

    def __init__(self, extra=(), witness_extra=(), zookeeper=None):
        self.tmp = tempfile.mkdtemp(prefix="tern-pair-")
        if zookeeper:
            self.witness = None
            self.coordinator = ["--pair-zookeeper",
                                "%s/tern-test-%s" % (zookeeper, unique_id("p"))]
        else:
            self.witness = Broker(listeners=0, listen=("witness",),
                                  extra_args=["--role", "witness"] + list(witness_extra),
                                  data_dir=os.path.join(self.tmp, "w")).start()
            self.wport = self.witness.port_of("witness")
            self.coordinator = ["--pair-witness", "%s:%d" % (HOST, self.wport)]
        self.pport = {"a": free_port(), "b": free_port()}
        self.nodes = {}
        self.extra = list(extra)

    def node(self, name):
        peer = "b" if name == "a" else "a"
        args = ["--pair-listen", "%s:%d" % (HOST, self.pport[name]),
                "--pair-peer", "%s:%d" % (HOST, self.pport[peer])] + self.coordinator + [
                "--pair-alone-timeout", str(ALONE_MS)] + self.extra
        n = self.nodes.get(name)
        if n is None:
            n = Broker(stomp=True, amqp=True, extra_args=args,
                       data_dir=os.path.join(self.tmp, name))
            os.makedirs(n.data_dir, exist_ok=True)
            self.nodes[name] = n
        return n.start()

    def close(self):
        for n in self.nodes.values():
            if n.proc is not None:
                try:
                    os.kill(n.proc.pid, signal.SIGCONT)
                except OSError:
                    pass
                n.stop()
        if self.witness:
            self.witness.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class PairTestCase(unittest.TestCase):
    pair_args = ()
    witness_args = ()
    zookeeper = None  # "HOST:PORT" of a ZooKeeper server: the coordinator instead of a witness

    def setUp(self):
        self.pair = Pair(self.pair_args, self.witness_args, self.zookeeper)
        self.addCleanup(self.pair.close)
        self.a = self.pair.node("a")
        self.a.wait_log(role_re("active", 1))
        self.b = self.pair.node("b")
        self.b.wait_log(role_re("standby", 1))

    def client(self, broker, **kw):
        c = Client(broker, **kw)
        self.addCleanup(c.close)
        return c

    def publish_n(self, broker, topic, n, prefix):
        """n QoS 1 messages, each PUBACKed (so confirmed) before the next."""
        p = self.client(broker, name="pub")
        p.connect()
        for i in range(n):
            p.publish(topic, b"%s-%d" % (prefix, i), qos=1)
        p.disconnect()

    def persistent_sub(self, broker, cid, topic):
        s = self.client(broker, client_id=cid, clean_session=False)
        s.connect()
        s.subscribe([(topic, 1)])
        s.disconnect()

    def drain(self, broker, cid, n):
        """Reconnects the persistent session cid and returns the n payloads it gets."""
        s = self.client(broker, client_id=cid, clean_session=False)
        present = s.connect()
        self.assertTrue(present, "the session did not survive the failover")
        got = [m.payload for m in s.get_n(n)]
        s.disconnect()
        return got

    def sigstop(self, broker):
        os.kill(broker.proc.pid, signal.SIGSTOP)
        self.addCleanup(lambda: broker.proc and os.kill(broker.proc.pid, signal.SIGCONT))

    def assert_refuses_mqtt(self, broker):
        r = RawClient(broker)
        try:
            r.send(connect_packet(unique_id("sb")))
            p = r.recv_packet()
            self.assertEqual(p.type, CONNACK)
            self.assertEqual(p.raw, b"\x20\x02\x00\x03", "expected CONNACK 3 (server unavailable)")
            r.expect_closed()
        finally:
            r.close()


class RoleTest(PairTestCase):
    def test_standby_refuses_every_protocol(self):
        self.assert_refuses_mqtt(self.b)
        s = StompClient(self.b)
        self.addCleanup(s.close)
        with self.assertRaises(AssertionError):
            s.connect()
        err = s.errors.get(timeout=TIMEOUT)
        self.assertEqual(err.get("message"), "standby")
        # AMQP: the open is answered, then a close with amqp:connection:redirect.
        from proton.utils import BlockingConnection
        from proton import ConnectionException
        with self.assertRaises(ConnectionException) as cm:
            c = BlockingConnection("amqp://%s:%d" % (HOST, self.b.amqp_port), timeout=TIMEOUT)
            c.create_sender("queue://q")
        self.assertIn("amqp:connection:redirect", str(cm.exception))
        # The active serves.
        c = self.client(self.a)
        c.connect()
        c.disconnect()


class FailoverTest(PairTestCase):
    def test_kill_active_loses_no_confirmed_message(self):
        topic = "pair/" + unique_id("k")
        self.persistent_sub(self.a, "k-sub", topic)
        self.publish_n(self.a, topic, 300, b"k")
        t0 = time.monotonic()
        self.a.crash()
        self.b.wait_log(role_re("active", 2))
        took = time.monotonic() - t0
        self.assertLess(took, 2 * LEASE_S, "failover took %.2f s" % took)
        got = self.drain(self.b, "k-sub", 300)
        self.assertEqual(got, [b"k-%d" % i for i in range(300)])

    def test_stomp_queue_survives_failover(self):
        q = "/queue/pair." + unique_id("q")
        s = StompClient(self.a)
        self.addCleanup(s.close)
        s.connect()
        for i in range(100):
            s.send(q, b"m%d" % i, headers={"persistent": "true"}, receipt=True)
        s.disconnect()
        self.a.crash()
        self.b.wait_log(role_re("active", 2))
        r = StompClient(self.b)
        self.addCleanup(r.close)
        r.connect()
        r.subscribe(q, ack="auto", receipt=True)
        got = [r.get().body for _ in range(100)]
        self.assertEqual(got, [b"m%d" % i for i in range(100)])

    def test_frozen_active_is_replaced_and_fenced(self):
        topic = "pair/" + unique_id("f")
        self.persistent_sub(self.a, "f-sub", topic)
        self.publish_n(self.a, topic, 50, b"f")
        held = self.client(self.a, name="held")  # connected across the freeze
        held.connect()
        t0 = time.monotonic()
        self.sigstop(self.a)
        self.b.wait_log(role_re("active", 2))
        took = time.monotonic() - t0
        self.assertLess(took, 2 * LEASE_S + 0.5, "failover took %.2f s" % took)
        pid = self.a.proc.pid
        os.kill(pid, signal.SIGCONT)
        self.a.wait_log("TERN-FENCED")
        self.assertTrue(held.disconnected.wait(TIMEOUT), "the fenced node kept its client")
        # It restarts itself in place (same process) and rejoins as the standby.
        self.a.wait_log("TERN-REJOIN")
        self.a.wait_log(role_re("standby", 2))
        self.assertEqual(self.a.proc.pid, pid)
        self.assertIsNone(self.a.proc.poll())
        self.assert_refuses_mqtt(self.a)
        self.assertEqual(self.drain(self.b, "f-sub", 50), [b"f-%d" % i for i in range(50)])
        # And it takes over again when b goes.
        self.b.crash()
        self.a.wait_log(role_re("active", 3))

    def test_old_active_rejoins_as_standby_and_catches_up(self):
        topic = "pair/" + unique_id("r")
        self.persistent_sub(self.a, "r-sub", topic)
        self.publish_n(self.a, topic, 20, b"r")
        self.a.crash()
        self.b.wait_log(role_re("active", 2))
        self.publish_n(self.b, topic, 20, b"s")  # confirmed by b alone
        self.pair.node("a")
        self.a.wait_log(role_re("standby", 2))
        # Hand the role back with a clean stop: a has everything.
        self.b.stop()
        self.a.wait_log(role_re("active", 3))
        got = self.drain(self.a, "r-sub", 40)
        self.assertEqual(got, [b"r-%d" % i for i in range(20)] + [b"s-%d" % i for i in range(20)])

    def test_clean_stop_hands_over_at_once(self):
        t0 = time.monotonic()
        self.a.stop()
        self.b.wait_log(role_re("active", 2))
        self.assertLess(time.monotonic() - t0, LEASE_S, "a clean stop waited for the lease")


class StandbyLossTest(PairTestCase):
    def test_confirms_wait_for_the_standby_then_go_alone(self):
        topic = "pair/" + unique_id("g")
        self.persistent_sub(self.a, "g-sub", topic)  # so each message is journaled
        self.sigstop(self.b)
        p = self.client(self.a, name="pub")
        p.connect()
        t0 = time.monotonic()
        p.publish(topic, b"x", qos=1)  # waits for the PUBACK
        waited = time.monotonic() - t0
        self.assertGreaterEqual(waited, ALONE_MS / 1000 * 0.9,
                                "confirmed without the standby and before going alone")
        self.a.wait_log("PAIR-ALONE")
        # Alone: confirms at local speed.
        t0 = time.monotonic()
        for i in range(20):
            p.publish(topic, b"y", qos=1)
        self.assertLess(time.monotonic() - t0, ALONE_MS / 1000)
        # The standby wakes, learns it fell behind, and is recorded in sync again.
        os.kill(self.b.proc.pid, signal.SIGCONT)
        self.a.wait_log("PAIR-SYNC", count=2)
        self.b.wait_log(role_re("catching-up", 1), count=2)
        self.b.wait_log(role_re("standby", 1), count=2)
        p.disconnect()

    def test_out_of_sync_standby_is_never_promoted(self):
        topic = "pair/" + unique_id("o")
        self.persistent_sub(self.a, "o-sub", topic)
        self.sigstop(self.b)
        self.publish_n(self.a, topic, 10, b"o")  # the first waits, then a goes alone
        self.a.wait_log("PAIR-ALONE")
        self.a.crash()
        os.kill(self.b.proc.pid, signal.SIGCONT)
        # b lacks what a confirmed alone: the witness refuses it the role, however long.
        time.sleep(3 * LEASE_S)  # the fault under test is the absence of an event
        self.assertEqual(self.b.count_log(role_re("active")), 0, self.b.log_text())
        self.assert_refuses_mqtt(self.b)
        # a, back, takes the role again (it holds everything) and b catches up from it.
        self.pair.node("a")
        self.a.wait_log(role_re("active", 2))
        self.b.wait_log(role_re("standby", 2))
        self.assertEqual(self.drain(self.a, "o-sub", 10), [b"o-%d" % i for i in range(10)])


class HoldTest(PairTestCase):
    """A standby whose active has gone silent holds new clients (PAIR-HOLD) until it is active,
    instead of sending them back to a frozen or dead node; if no lease comes, it refuses them as
    usual once the hold is over."""

    def test_clients_wait_for_the_takeover(self):
        from proton.utils import BlockingConnection
        self.sigstop(self.a)
        self.b.wait_log("PAIR-HOLD")
        self.assertEqual(self.b.count_log(role_re("active")), 0)
        r = RawClient(self.b)
        self.addCleanup(r.close)
        r.send(connect_packet(unique_id("h")))
        s = StompClient(self.b)
        self.addCleanup(s.close)
        s.connect()  # CONNECTED, not ERROR standby
        p = r.recv_packet()
        self.assertEqual(p.raw, b"\x20\x02\x00\x00", "the held CONNECT was refused")
        # Answered only once b was active.
        self.assertEqual(self.b.count_log(role_re("active", 2)), 1)
        c = BlockingConnection("amqp://%s:%d" % (HOST, self.b.amqp_port), timeout=TIMEOUT)
        c.create_sender("queue://held").send(__import__("proton").Message(body="x"))
        c.close()
        s.disconnect()

    def test_hold_ends_in_a_refusal_when_no_lease_comes(self):
        # The witness frozen: the active loses its lease (fenced), the standby cannot get it.
        self.sigstop(self.pair.witness)
        self.a.wait_log("TERN-FENCED")
        self.b.wait_log("PAIR-HOLD")
        r = RawClient(self.b)
        self.addCleanup(r.close)
        r.send(connect_packet(unique_id("h")))
        p = r.recv_packet()
        self.assertEqual(p.raw, b"\x20\x02\x00\x03", "expected CONNACK 3 once the hold ended")
        self.b.wait_log("PAIR-HOLD over")
        self.assertEqual(self.b.count_log(role_re("active")), 0)


class ShortLeaseTest(PairTestCase):
    """--pair-lease and --pair-renew (the witness grants the lease it is given)."""
    pair_args = ("--pair-lease", "600", "--pair-renew", "150")
    witness_args = ("--pair-lease", "600")

    def test_freeze_fails_over_within_the_shorter_lease(self):
        t0 = time.monotonic()
        self.sigstop(self.a)
        self.b.wait_log(role_re("active", 2))
        took = time.monotonic() - t0
        self.assertLess(took, 1.2, "failover took %.2f s with a 600 ms lease" % took)
        os.kill(self.a.proc.pid, signal.SIGCONT)
        self.a.wait_log("TERN-FENCED")


@unittest.skipUnless(HAVE_ZOOKEEPER, "no ZooKeeper server (Debian zookeeper, see tools/deps)")
class ZooKeeperTest(PairTestCase):
    """ZooKeeper as the coordinator (--pair-zookeeper), the same failovers. A killed active is
    replaced once ZooKeeper expires its session (the 1 s lease: ZooKeeper does not end a session
    when its connection closes), a frozen one likewise, and the frozen one fences on waking; a
    clean stop closes the session, which hands the role over at once."""

    @classmethod
    def setUpClass(cls):
        cls.zk = ZooKeeperServer()
        cls.zookeeper = "%s:%d" % (HOST, cls.zk.port)

    @classmethod
    def tearDownClass(cls):
        cls.zk.stop()

    test_kill_active_loses_no_confirmed_message = \
        FailoverTest.test_kill_active_loses_no_confirmed_message
    test_frozen_active_is_replaced_and_fenced = \
        FailoverTest.test_frozen_active_is_replaced_and_fenced
    test_clean_stop_hands_over_at_once = FailoverTest.test_clean_stop_hands_over_at_once


class ManualRejoinTest(PairTestCase):
    """--pair-rejoin manual: a fenced node stays fenced (refusing clients) until restarted."""
    pair_args = ("--pair-rejoin", "manual")

    def test_fenced_node_waits_for_a_restart(self):
        self.sigstop(self.a)
        self.b.wait_log(role_re("active", 2))
        os.kill(self.a.proc.pid, signal.SIGCONT)
        self.a.wait_log("TERN-FENCED")
        self.assert_refuses_mqtt(self.a)
        self.assertEqual(self.a.count_log("TERN-REJOIN"), 0)
        self.assertEqual(self.a.count_log(role_re("standby", 2)), 0)
        self.a.stop()
        self.pair.node("a")
        self.a.wait_log(role_re("standby", 2))


class AsyncTest(PairTestCase):
    """--pair-async: confirmations never wait for the standby; it is still promoted."""
    pair_args = ("--pair-async",)

    def test_async_confirms_at_once_and_fails_over(self):
        topic = "pair/" + unique_id("y")
        self.persistent_sub(self.a, "y-sub", topic)
        self.sigstop(self.b)
        p = self.client(self.a, name="pub")
        p.connect()
        t0 = time.monotonic()
        for i in range(10):
            p.publish(topic, b"y-%d" % i, qos=1)
        self.assertLess(time.monotonic() - t0, ALONE_MS / 1000,
                        "async confirmations waited for the frozen standby")
        p.disconnect()
        self.a.wait_log("PAIR-ALONE")  # a dead standby is not left recorded in sync
        os.kill(self.b.proc.pid, signal.SIGCONT)
        self.a.wait_log("PAIR-SYNC", count=2)  # back in sync
        self.a.crash()
        self.b.wait_log(role_re("active", 2))
        self.assertEqual(self.drain(self.b, "y-sub", 10), [b"y-%d" % i for i in range(10)])


class ClientFailoverTest(PairTestCase):
    """The client settings README gives for a pair, each with the standby listed first."""

    def test_paho_c_server_uris(self):
        exe = os.environ.get("PAHO_C_TEST")
        if not exe:
            self.skipTest("PAHO_C_TEST not set (ctest sets it)")
        out = subprocess.run([exe, "--failover", "tcp://%s:%d" % (HOST, self.b.port),
                              "tcp://%s:%d" % (HOST, self.a.port)],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("%s:%d" % (HOST, self.a.port), out.stdout)  # Paho: where it connected

    def test_paho_mqtt_next_address_on_connack_3(self):
        import paho.mqtt.client as paho
        for port in (self.b.port, self.a.port):  # the recipe: on CONNACK 3, the next one
            got = []
            c = paho.Client(client_id=unique_id("py"), protocol=paho.MQTTv311)
            c.on_connect = lambda cl, ud, flags, rc: got.append(rc)
            c.connect(HOST, port)
            deadline = time.monotonic() + TIMEOUT
            while not got and time.monotonic() < deadline:
                c.loop(0.1)
            c.disconnect()
            if got == [0]:
                break
            self.assertEqual(got, [3], "the standby answers CONNACK 3")
        self.assertEqual((got, port), ([0], self.a.port))

    def test_stomp_py_next_host_on_error(self):
        import stomp
        from stomp.exception import ConnectFailedException
        hosts = [(HOST, self.b.stomp_port), (HOST, self.a.stomp_port)]
        for host in hosts:  # the recipe: on ConnectFailedException (ERROR standby), the next
            c = stomp.Connection12(host_and_ports=[host])
            try:
                c.connect(wait=True)
            except ConnectFailedException:
                continue
            c.disconnect()
            break
        self.assertEqual(host, hosts[1])

    def test_proton_next_url_on_redirect(self):
        from proton.utils import BlockingConnection
        from proton import ConnectionException
        urls = ["amqp://%s:%d" % (HOST, self.b.amqp_port),
                "amqp://%s:%d" % (HOST, self.a.amqp_port)]
        for url in urls:  # the recipe: on amqp:connection:redirect, the next URL
            try:
                c = BlockingConnection(url, timeout=TIMEOUT)
                c.create_sender("queue://failover").send(__import__("proton").Message(body="x"))
                c.close()
                break
            except ConnectionException as e:
                self.assertIn("amqp:connection:redirect", str(e))
        self.assertEqual(url, urls[1])


class ConfigFileTest(unittest.TestCase):
    """The same pair from config files (pair: section, a witness:// listener)."""

    def test_pair_from_config_files(self):
        tmp = tempfile.mkdtemp(prefix="tern-pair-conf-")
        self.addCleanup(shutil.rmtree, tmp, True)
        wconf = os.path.join(tmp, "witness.conf")
        with open(wconf, "w") as f:
            f.write('listeners:\n  - url: "witness://127.0.0.1:0"\npair:\n  role: witness\n')
        # Its only listener is the config's: its ready line gives the port.
        w = Broker(listeners=0, extra_args=["--config", wconf], data_dir=os.path.join(tmp, "w"))
        w.start()
        self.addCleanup(w.stop)
        line = w.wait_log(r"TERN-READY listening on witness://127\.0\.0\.1:\d+")[0]
        wport = int(line.rsplit(":", 1)[1])
        pa, pb = free_port(), free_port()
        nodes = []
        for name, mine, peer in (("a", pa, pb), ("b", pb, pa)):
            conf = os.path.join(tmp, name + ".conf")
            with open(conf, "w") as f:
                f.write("pair:\n  listen: 127.0.0.1:%d\n  peer: 127.0.0.1:%d\n"
                        "  witness: 127.0.0.1:%d\n  alone_timeout: 700\n" % (mine, peer, wport))
            n = Broker(extra_args=["--config", conf], data_dir=os.path.join(tmp, name))
            os.makedirs(n.data_dir, exist_ok=True)
            n.start()
            self.addCleanup(n.stop)
            nodes.append(n)
            n.wait_log(role_re("active" if name == "a" else "standby", 1))
        c = Client(nodes[0])
        self.addCleanup(c.close)
        c.connect()
        c.disconnect()


CERTS = None


def tls_args():
    global CERTS
    if CERTS is None:
        CERTS = make_test_certs()
    return ["--tls-cert", os.path.join(CERTS, "server.pem"),
            "--tls-key", os.path.join(CERTS, "server.key"),
            "--tls-ca", os.path.join(CERTS, "ca.pem")]


class TlsLinkTest(PairTestCase):
    """With a certificate, the replication link is TLS, both sides verified by the CA."""

    def setUp(self):
        self.pair_args = tls_args()
        super().setUp()

    def test_failover_over_a_tls_link(self):
        self.assertIn("(TLS)", self.a.wait_log(r"TERN-READY listening on pair://")[0])
        topic = "pair/" + unique_id("t")
        self.persistent_sub(self.a, "t-sub", topic)
        self.publish_n(self.a, topic, 100, b"t")
        self.a.crash()
        self.b.wait_log(role_re("active", 2))
        self.assertEqual(self.drain(self.b, "t-sub", 100), [b"t-%d" % i for i in range(100)])

    def test_plain_text_peer_is_refused(self):
        # A HELLO in plain text on a TLS pair port: the handshake fails, nothing is served.
        s = socket.create_connection((HOST, self.pair.pport["a"]), timeout=TIMEOUT)
        try:
            s.sendall(b"\x01\x0c\x00\x00\x00\x02\x00xx" + b"\x00" * 12)
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            self.assertNotIn(b"\x02", data[:1], "a WELCOME frame came back in plain text")
        finally:
            s.close()
        self.a.wait_log("PAIR-LINK TLS with the peer failed")


def tearDownModule():
    if CERTS:
        shutil.rmtree(CERTS, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
