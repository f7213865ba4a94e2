"""TLS listeners: mqtts://, stomps:// and amqps:// (protocols/tls/tls.c, the TLS filter in
protocols/net/net.c), with real clients (paho-mqtt, mosquitto_pub/_sub, stomp.py, Qpid Proton)
and Python's ssl module for handshakes the clients would not make.

The certificates come from tests/tls/mkcerts.sh, made once for this module in a temporary folder:
a test CA, server.pem (CN=localhost, SAN localhost and 127.0.0.1), client.pem (signed by the CA)
and rogue.pem (self-signed). ternd gets them with --tls-cert/--tls-key [--tls-ca
--tls-verify-client], and the rest (tls.min_version, limits.tls_handshake_timeout) through a
config file (-c), whose `tls:` section the flags complete.

Log lines the tests wait for (one per connection, naming the peer as 127.0.0.1:PORT, which a
test knows from its own socket): NET-TLS-FAIL (handshake or record failed), NET-TLS-TIMEOUT
(handshake not finished in time), and at debug level NET-TLS-READY (version and client subject).
"Logged exactly once" is checked after a later connection has done a full round trip, so a second
line for the same connection, had there been one, would have been written before it.

Refusals with TLS 1.3: the client's handshake is over before the server has read its certificate,
so a refused client certificate may only show on the client's first read (an alert, or the
connection closed); the tests accept that or a failed handshake, never a CONNACK.

Run: TERND=build/dev/tools/ternd/ternd /usr/bin/python3 tests/integration/test_tls.py -v
"""

import logging
import os
import queue
import random
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

from proton import Delivery, Message as AmqpMessage, SSLDomain, Timeout
from proton.utils import BlockingConnection

from harness import (make_test_certs, varied_payload, CONNACK, HOST, IS_MOSQUITTO, READY_TIMEOUT, SANITIZER_RE, STOMP_EXTERNAL,
                     TIMEOUT, Broker, BrokerTestCase, Client, DISCONNECT_BYTES, PINGREQ_BYTES,
                     PINGRESP_BYTES, RawClient, StompClient, connect_packet, unique_id)

MIB = 1 << 20
HERE = os.path.dirname(os.path.abspath(__file__))
CERTS = None  # the folder mkcerts.sh made, for this module
LARGE_TIMEOUT = 120.0  # 5 MiB through TLS, possibly an AddressSanitizer build

# Log lines that say something went wrong (the broker's own levels). TERN-FD-LIMIT is about the
# machine's ulimit, not about this test.
BAD_LOG_RE = re.compile(r" (ERROR|WARN) ")
BENIGN_LOG_RE = re.compile(r"TERN-FD-LIMIT")


# stomp.py unwraps its TLS socket on disconnect and logs a warning when the broker's
# close_notify has already ended the connection (the normal close after DISCONNECT).
logging.getLogger("stomp.py").setLevel(logging.ERROR)


def setUpModule():
    global CERTS
    CERTS = make_test_certs("tern-tls-certs-")


def tearDownModule():
    if CERTS:
        shutil.rmtree(CERTS, ignore_errors=True)


def cert(name):
    return os.path.join(CERTS, name)


payload = varied_payload


def client_context(cert_name=None, max_version=None):
    """A client context that trusts the test CA and checks the server's name; cert_name
    ("client", "rogue") adds that client certificate."""
    ctx = ssl.create_default_context(cafile=cert("ca.pem"))
    if cert_name:
        ctx.load_cert_chain(cert(cert_name + ".pem"), cert(cert_name + ".key"))
    if max_version:
        ctx.maximum_version = max_version
    return ctx


def client_hello():
    """The bytes of a real TLS ClientHello (Python's, from a memory BIO)."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_context().wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    assert hello[:1] == b"\x16" and len(hello) > 100, hello[:16]
    return hello


def garbage(n=1000):
    """n pseudo-random bytes (fixed seed, so a failure repeats) that OpenSSL must reject at the
    first record header: not a TLS record header with major version 3 (whose length it would
    wait for) nor an SSLv2-style ClientHello header."""
    for seed in range(1000):
        b = random.Random(seed).randbytes(n)
        if not ((0x14 <= b[0] <= 0x18 and b[1] == 3) or (b[0] & 0x80 and b[2] == 1)):
            return b
    raise AssertionError("no suitable seed")


def peer_name(sock):
    """How the broker names this connection in its log: our own address."""
    return "%s:%d" % sock.getsockname()[:2]


def peer_re(peer):
    return re.escape(peer) + r"\b"


class TlsRaw(RawClient):
    """RawClient (exact MQTT bytes) over a TLS socket: a TLS alert or EOF on a read counts as
    the broker closing the connection (the alert kept in .alert)."""

    def __init__(self, sock, timeout=TIMEOUT):
        self.sock = sock
        self.timeout = timeout
        self.buf = b""
        self.closed_by_peer = False
        self.alert = None

    def send(self, data):
        try:
            return super().send(data)
        except ssl.SSLError as e:
            self.alert = e
            self.closed_by_peer = True
            return False

    def _fill(self, deadline):
        try:
            return super()._fill(deadline)
        except ssl.SSLError as e:  # an alert, or SSLEOFError (EOF without close_notify)
            self.alert = e
            self.closed_by_peer = True
            raise EOFError()


class LineReader:
    """A subprocess' stdout lines in a queue, read by a thread (a bounded wait for a line)."""

    def __init__(self, proc):
        self.lines = queue.Queue()
        self.seen = []
        t = threading.Thread(target=self._run, args=(proc.stdout,), daemon=True)
        t.start()

    def _run(self, pipe):
        for raw in iter(pipe.readline, b""):
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern, timeout=TIMEOUT):
        r = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise AssertionError("no line matching %r within %.0f s; saw %r"
                                     % (pattern, timeout, self.seen))
            if line is None:
                raise AssertionError("output ended without a line matching %r; saw %r"
                                     % (pattern, self.seen))
            self.seen.append(line)
            if r.search(line):
                return line


@unittest.skipIf(IS_MOSQUITTO or bool(STOMP_EXTERNAL), "ternd's TLS listeners")
class TlsTestCase(BrokerTestCase):
    """A test starts its broker with start_broker() (a plain mqtt listener, always, plus the TLS
    ones asked for); it is stopped, and checked for a clean exit, after the test's clients."""

    def setUp(self):
        self.broker = None
        self._problems_before = self._problems()

    def _stop_broker(self):
        if self.broker is not None:
            super()._stop_broker()

    def start_broker(self, listen=("mqtts",), verify=None, ca=False, conf=None, debug=False,
                     stomp=False):
        """conf: the text of a config file (YAML) for -c; debug: --log-level debug."""
        args = ["--tls-cert", cert("server.pem"), "--tls-key", cert("server.key")]
        if ca:
            args += ["--tls-ca", cert("ca.pem")]
        if verify:
            args += ["--tls-verify-client", verify]
        if conf:
            fd, path = tempfile.mkstemp(prefix="tern-tls-", suffix=".conf")
            with os.fdopen(fd, "w") as f:
                f.write(conf)
            self.addCleanup(os.unlink, path)
            args += ["-c", path]
        if debug:
            args += ["--log-level", "debug"]
        self.broker = Broker(listen=listen, stomp=stomp, extra_args=args)
        self.addCleanup(self._stop_broker)
        self.broker.start()
        return self.broker

    # -- clients ------------------------------------------------------------------------------

    def mqtts(self, name="t", cert_name=None, port=None, connect=True, **kw):
        """A paho client on the mqtts listener, trusting the test CA (and checking the server's
        certificate names 127.0.0.1), with a client certificate if cert_name is given."""
        port = port or self.broker.port_of("mqtts")
        c = Client(self.broker, name=name, port=port, **kw)
        if cert_name:
            c.mqtt.tls_set(ca_certs=cert("ca.pem"), certfile=cert(cert_name + ".pem"),
                           keyfile=cert(cert_name + ".key"))
        else:
            c.mqtt.tls_set(ca_certs=cert("ca.pem"))
        self.addCleanup(c.close)
        if connect:
            c.connect()
        return c

    def stomps(self, port=None):
        """A stomp.py 1.2 client on the stomps listener, trusting the test CA, connected."""
        port = port or self.broker.port_of("stomps")
        s = StompClient(self.broker, port=port)
        s.conn.set_ssl(for_hosts=[(HOST, port)], ca_certs=cert("ca.pem"))
        self.addCleanup(s.close)
        s.connect()
        return s

    def amqps(self, port=None, **kw):
        """A Proton BlockingConnection to amqps://localhost:PORT, verifying the server's
        certificate against the test CA and its name (VERIFY_PEER_NAME)."""
        port = port or self.broker.port_of("amqps")
        domain = SSLDomain(SSLDomain.MODE_CLIENT)
        domain.set_trusted_ca_db(cert("ca.pem"))
        domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME)
        c = BlockingConnection("amqps://localhost:%d" % port, ssl_domain=domain, timeout=TIMEOUT,
                               **kw)

        def close():
            try:
                c.close()
            except Exception:  # already closed by a failed test
                pass
        self.addCleanup(close)
        return c

    def tls_socket(self, ctx, port=None, server_hostname="localhost"):
        """(TLS socket after its handshake, or the ssl.SSLError/OSError the handshake raised;
        the broker's name for the connection)."""
        port = port or self.broker.port_of("mqtts")
        raw = socket.create_connection((HOST, port), timeout=TIMEOUT)
        self.addCleanup(raw.close)
        peer = peer_name(raw)
        try:
            s = ctx.wrap_socket(raw, server_hostname=server_hostname)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
            return e, peer
        self.addCleanup(s.close)
        return s, peer

    def mqtt_attempt(self, ctx, port=None):
        """A TLS handshake and an MQTT CONNECT: ("connected", TlsRaw) on a CONNACK accepted,
        else (how it was refused, None). Also returns the broker's name for the connection."""
        s, peer = self.tls_socket(ctx, port)
        if isinstance(s, Exception):
            return "handshake failed: %r" % s, None, peer
        r = TlsRaw(s)
        if r.send(connect_packet(unique_id("tls"))):
            try:
                p = r.recv_packet()
            except AssertionError:
                if not r.closed_by_peer:
                    raise  # neither a CONNACK nor a close: a timeout, which is a failure
                return "closed on the first read: %r" % (r.alert,), None, peer
        else:
            return "closed on the first write: %r" % (r.alert,), None, peer
        if p.type == CONNACK and p.body == b"\x00\x00":
            return "connected", r, peer
        return "answered %r" % p, None, peer

    def assert_refused(self, ctx, what, port=None):
        """A TLS MQTT connection with ctx is refused (see mqtt_attempt); the broker logs
        NET-TLS-FAIL for it. Returns the connection's peer name."""
        outcome, r, peer = self.mqtt_attempt(ctx, port)
        self.assertNotEqual(outcome, "connected", "%s: was accepted" % what)
        self.broker.wait_log(r"NET-TLS-FAIL %s.*closing" % peer_re(peer))
        return peer

    def assert_tls_up(self, port=None, ctx=None):
        """A fresh TLS client gets a CONNACK and a PINGRESP on port (mqtts by default), then
        leaves with DISCONNECT: a full round trip after anything the test did before."""
        outcome, r, peer = self.mqtt_attempt(ctx or client_context(), port)
        self.assertEqual(outcome, "connected")
        r.send(PINGREQ_BYTES)
        self.assertEqual(r.recv_exact(2), PINGRESP_BYTES)
        r.send(DISCONNECT_BYTES)
        r.expect_closed()
        return peer

    def assert_logged_once(self, pattern):
        """Exactly one log line matches pattern; call after assert_tls_up() (see the module's
        docstring)."""
        hits = [line for line in self.broker.log_lines() if re.search(pattern, line)]
        self.assertEqual(len(hits), 1, "expected one line matching %r:\n%s"
                         % (pattern, self.broker.log_text()))

    def assert_log_clean(self):
        bad = [line for line in self.broker.log_lines()
               if (BAD_LOG_RE.search(line) and not BENIGN_LOG_RE.search(line))
               or "NET-TLS-FAIL" in line or "NET-TLS-TIMEOUT" in line]
        self.assertEqual(bad, [], "unexpected log lines")


# -- 1. MQTT ------------------------------------------------------------------------------------


class MqttTlsTest(TlsTestCase):

    def test_paho_qos1_publish_subscribe(self):
        self.start_broker()
        sub = self.mqtts("sub")
        pub = self.mqtts("pub")
        self.assertEqual(sub.subscribe([("tls/q1", 1)]), [1])
        for i in range(10):
            pub.publish("tls/q1", b"m%d" % i, qos=1)
        got = sub.get_n(10)
        self.assertEqual([(m.topic, m.payload, m.qos) for m in got],
                         [("tls/q1", b"m%d" % i, 1) for i in range(10)])
        # paho really is on TLS: its socket is an SSLSocket that finished a handshake.
        sock = pub.mqtt.socket()
        self.assertIsInstance(sock, ssl.SSLSocket)
        self.assertIn(sock.version(), ("TLSv1.2", "TLSv1.3"))
        sub.disconnect()
        pub.disconnect()

    def test_mosquitto_clients(self):
        b = self.start_broker()
        port = b.port_of("mqtts")
        plain = self.client("plain")  # the plain mqtt listener sees it too
        plain.subscribe([("mosq/t", 1)])
        # stdbuf: mosquitto_sub's stdout is a pipe, which stdio would buffer.
        sub = subprocess.Popen(["stdbuf", "-oL", "mosquitto_sub", "-h", HOST, "-p", str(port),
                                "--cafile", cert("ca.pem"), "-t", "mosq/t", "-q", "1", "-C", "1",
                                "-v", "-d", "-i", unique_id("msub")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        def reap():
            if sub.poll() is None:
                sub.kill()
            sub.wait(TIMEOUT)
            sub.stdout.close()
        self.addCleanup(reap)
        out = LineReader(sub)
        out.wait_for(r"received SUBACK")
        pub = subprocess.run(["mosquitto_pub", "-h", HOST, "-p", str(port), "--cafile",
                              cert("ca.pem"), "-t", "mosq/t", "-q", "1", "-m", "over tls",
                              "-i", unique_id("mpub")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TIMEOUT)
        self.assertEqual(pub.returncode, 0, pub.stdout)
        out.wait_for(r"^mosq/t over tls$")
        self.assertEqual(sub.wait(TIMEOUT), 0, out.seen)
        m = plain.get()
        self.assertEqual((m.topic, m.payload, m.qos), ("mosq/t", b"over tls", 1))

    def test_mosquitto_sub_refuses_untrusted_server(self):
        """The other way round: mosquitto_sub trusting only the rogue certificate does not
        accept ternd's server certificate (so the test above really verified it)."""
        b = self.start_broker()
        r = subprocess.run(["mosquitto_sub", "-h", HOST, "-p", str(b.port_of("mqtts")),
                            "--cafile", cert("rogue.pem"), "-t", "x", "-C", "1", "-W", "5"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TIMEOUT)
        self.assertNotEqual(r.returncode, 0, r.stdout)

    def test_message_crosses_mqtts_mqtt_stomps(self):
        self.start_broker(listen=("mqtts", "stomps"))
        plain = self.client("plain")
        plain.subscribe([("a/b", 1)])
        st = self.stomps()
        st.subscribe("/topic/a.b")
        tls = self.mqtts("tls")
        tls.subscribe([("a/b", 1)])
        tls.publish("a/b", b"from mqtts", qos=1)
        m = plain.get()
        self.assertEqual((m.topic, m.payload, m.qos), ("a/b", b"from mqtts", 1))
        self.assertEqual(tls.get().payload, b"from mqtts")
        f = st.get()
        self.assertEqual((f["destination"], f.body), ("/topic/a.b", b"from mqtts"))
        # And back: STOMP over TLS to both MQTT listeners.
        st.send("/topic/a.b", b"from stomps", receipt=True)
        self.assertEqual(tls.get().payload, b"from stomps")
        self.assertEqual(plain.get().payload, b"from stomps")
        self.assertEqual(st.get().body, b"from stomps")


# -- 2. STOMP -----------------------------------------------------------------------------------


class StompTlsTest(TlsTestCase):

    def test_send_receive_queue_with_receipt(self):
        self.start_broker(listen=("stomps",))
        prod = self.stomps()
        cons = self.stomps()
        rid = unique_id("receipt")
        prod.conn.send("/queue/q", b"hello over stomps", headers={"receipt": rid})
        receipt = prod.wait_receipt(rid)
        self.assertEqual((receipt.command, receipt["receipt-id"]), ("RECEIPT", rid))
        cons.subscribe("/queue/q", ack="client-individual")
        m = cons.get()
        self.assertEqual((m["destination"], m.body), ("/queue/q", b"hello over stomps"))
        cons.ack(m, receipt=True)
        # stomp.py's socket is TLS.
        sock = prod.conn.transport.socket
        self.assertIsInstance(sock, ssl.SSLSocket)


# -- 3. AMQP ------------------------------------------------------------------------------------


class AmqpTlsTest(TlsTestCase):

    def test_durable_message_to_queue(self):
        self.start_broker(listen=("amqps",))
        c = self.amqps()
        snd = c.create_sender("queue://q")
        d = snd.send(AmqpMessage(body=b"durable over amqps", inferred=True, durable=True))
        self.assertEqual(d.remote_state, Delivery.ACCEPTED)
        snd.close()
        c2 = self.amqps()  # another TLS connection takes it
        rcv = c2.create_receiver("queue://q")
        m = rcv.receive(timeout=TIMEOUT)
        rcv.accept()
        self.assertEqual((m.body, m.durable), (b"durable over amqps", True))

    def test_amqps_rejects_untrusted_server(self):
        """Proton trusting only the rogue certificate refuses ternd's (VERIFY_PEER_NAME is
        really in force in the test above)."""
        b = self.start_broker(listen=("amqps",))
        domain = SSLDomain(SSLDomain.MODE_CLIENT)
        domain.set_trusted_ca_db(cert("rogue.pem"))
        domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME)
        with self.assertRaises(Exception):
            c = BlockingConnection("amqps://localhost:%d" % b.port_of("amqps"),
                                   ssl_domain=domain, timeout=TIMEOUT)
            c.close()


# -- 4. large messages --------------------------------------------------------------------------


class LargeTlsTest(TlsTestCase):

    def test_5mib_mqtts_qos1(self):
        self.start_broker()
        body = payload(5 * MIB, b"mqtts-large")
        sub = self.mqtts("sub")
        pub = self.mqtts("pub")
        sub.subscribe([("big/t", 1)])
        pub.publish("big/t", body, qos=1, timeout=LARGE_TIMEOUT)
        m = sub.get(timeout=LARGE_TIMEOUT)
        self.assertEqual((m.topic, m.qos, len(m.payload)), ("big/t", 1, len(body)))
        self.assertTrue(m.payload == body, "payload differs")

    def receive_large(self, conn, receiver, timeout=LARGE_TIMEOUT, idle=5.0):
        """The next message of a BlockingReceiver, accepted; fails once `idle` seconds pass
        without a frame of it arriving (a stall shows long before the deadline, and before the
        broker's 60 s AMQP idle-time-out check could happen to wake it up). The connection
        should have a small max_frame_size, so that the message comes in many frames."""
        if not receiver.link.credit:
            receiver.link.flow(1)  # as BlockingReceiver.receive() does
        deadline = time.monotonic() + timeout
        have, since = -1, time.monotonic()
        while not receiver.fetcher.has_message:
            now = conn.conn.transport.frames_input  # AMQP frames (of 128 KiB at most) in
            if now != have:
                have, since = now, time.monotonic()
            if time.monotonic() - since > idle or time.monotonic() > deadline:
                # Drop the connection: a clean close would wait on the stalled broker.
                conn.conn.transport.close_tail()
                conn.conn.transport.close_head()
                raise AssertionError("stalled: no AMQP frame for %.0f s (%d frames in)"
                                     % (time.monotonic() - since, have))
            try:
                conn.wait(lambda: receiver.fetcher.has_message, timeout=0.5)
            except Timeout:
                pass
        m = receiver.fetcher.pop()
        receiver.accept()
        return m

    def test_5mib_amqps(self):
        self.start_broker(listen=("amqps",))
        body = payload(5 * MIB, b"amqps-large")
        # 64 KiB frames: the message comes in many, so receive_large sees progress.
        c = self.amqps(max_frame_size=65536)
        snd = c.create_sender("queue://big")
        d = snd.send(AmqpMessage(body=body, inferred=True, durable=True),
                     timeout=LARGE_TIMEOUT)
        self.assertEqual(d.remote_state, Delivery.ACCEPTED)
        rcv = c.create_receiver("queue://big")
        m = self.receive_large(c, rcv)
        self.assertEqual(len(m.body), len(body))
        self.assertTrue(m.body == body, "payload differs")


# -- 5, 6. client certificates ------------------------------------------------------------------


class ClientCertTest(TlsTestCase):

    def test_require(self):
        self.start_broker(ca=True, verify="require", debug=True)
        # With its certificate: accepted, and the broker names its subject.
        outcome, r, peer = self.mqtt_attempt(client_context("client"))
        self.assertEqual(outcome, "connected")
        line = self.broker.wait_log(r"NET-TLS-READY %s" % peer_re(peer))[0]
        self.assertIn("CN=tern-client", line)
        self.assertIn("O=Tern Tests", line)
        r.send(DISCONNECT_BYTES)
        r.expect_closed()
        # paho with the certificate too.
        c = self.mqtts("paho", cert_name="client")
        c.disconnect()
        # Without a certificate, and with one the CA never signed: refused.
        no_cert = self.assert_refused(client_context(), "no client certificate")
        rogue = self.assert_refused(client_context("rogue"), "rogue certificate")
        self.assertTrue(self.broker.is_running())
        # The broker stays up for good clients, and logged one failure per refusal.
        self.assert_tls_up(ctx=client_context("client"))
        self.assert_logged_once(r"NET-TLS-FAIL %s" % peer_re(no_cert))
        self.assert_logged_once(r"NET-TLS-FAIL %s" % peer_re(rogue))
        self.assertEqual(self.broker.count_log("NET-TLS-FAIL"), 2, self.broker.log_text())

    def test_optional(self):
        self.start_broker(ca=True, verify="optional", debug=True)
        outcome, r, peer = self.mqtt_attempt(client_context())
        self.assertEqual(outcome, "connected", "no certificate is fine with optional")
        line = self.broker.wait_log(r"NET-TLS-READY %s" % peer_re(peer))[0]
        self.assertNotIn("client", line.split(peer, 1)[1])
        outcome, r2, peer2 = self.mqtt_attempt(client_context("client"))
        self.assertEqual(outcome, "connected", "a CA-signed certificate is fine")
        self.assertIn("CN=tern-client",
                      self.broker.wait_log(r"NET-TLS-READY %s" % peer_re(peer2))[0])
        rogue = self.assert_refused(client_context("rogue"), "rogue certificate")
        # The connections accepted before are untouched.
        for conn in (r, r2):
            conn.send(PINGREQ_BYTES)
            self.assertEqual(conn.recv_exact(2), PINGRESP_BYTES)
        self.assert_tls_up()
        self.assert_logged_once(r"NET-TLS-FAIL %s" % peer_re(rogue))
        self.assertEqual(self.broker.count_log("NET-TLS-FAIL"), 1, self.broker.log_text())

    def test_none_ignores_client_certificates(self):
        """verify none (the default): the broker asks for no certificate, so even the rogue
        one is never sent, and the client is accepted."""
        self.start_broker(debug=True)
        outcome, r, peer = self.mqtt_attempt(client_context("rogue"))
        self.assertEqual(outcome, "connected")
        line = self.broker.wait_log(r"NET-TLS-READY %s" % peer_re(peer))[0]
        self.assertNotIn("rogue", line)


# -- 7. TLS versions ----------------------------------------------------------------------------


class TlsVersionTest(TlsTestCase):

    def test_tls12_client_accepted_by_default(self):
        self.start_broker(debug=True)
        s, peer = self.tls_socket(client_context(max_version=ssl.TLSVersion.TLSv1_2))
        self.assertNotIsInstance(s, Exception)
        self.assertEqual(s.version(), "TLSv1.2")
        r = TlsRaw(s)
        r.connect()
        self.assertIn("TLSv1.2", self.broker.wait_log(r"NET-TLS-READY %s" % peer_re(peer))[0])
        r.send(DISCONNECT_BYTES)
        r.expect_closed()

    def test_min_version_13_refuses_tls12(self):
        self.start_broker(conf='tls:\n  min_version: "1.3"\n')
        s, peer = self.tls_socket(client_context(max_version=ssl.TLSVersion.TLSv1_2))
        self.assertIsInstance(s, ssl.SSLError, "TLS 1.2 handshake succeeded")
        self.broker.wait_log(r"NET-TLS-FAIL %s" % peer_re(peer))
        s13, _ = self.tls_socket(client_context())
        self.assertNotIsInstance(s13, Exception)
        self.assertEqual(s13.version(), "TLSv1.3")
        s13.close()
        self.assert_tls_up()
        self.assert_logged_once(r"NET-TLS-FAIL %s" % peer_re(peer))


# -- 8, 9, 11. bad input, slow handshakes, wrong protocol ---------------------------------------


class BadInputTlsTest(TlsTestCase):

    def _expect_refused_raw(self, data, port, close_within=5.0):
        """Raw TCP to port, send data, expect the broker to close within close_within seconds.
        Returns (what it sent before closing, our peer name)."""
        r = RawClient(self.broker, port=port)
        self.addCleanup(r.close)
        peer = peer_name(r.sock)
        r.send(data)
        got = r.expect_closed(timeout=close_within)
        return got, peer

    def test_garbage_to_mqtts(self):
        self.start_broker()
        port = self.broker.port_of("mqtts")
        peers = []
        for what, data in (("http", b"GET / HTTP/1.1\r\n\r\n"), ("random", garbage(1000))):
            with self.subTest(what):
                got, peer = self._expect_refused_raw(data, port)
                # At most an alert record (type 21) comes back, never MQTT.
                self.assertTrue(got == b"" or got[:1] == b"\x15", got[:32])
                self.broker.wait_log(r"NET-TLS-FAIL %s.*closing" % peer_re(peer))
                peers.append(peer)
        self.assertTrue(self.broker.is_running())
        self.assert_tls_up()
        for peer in peers:
            self.assert_logged_once(r"NET-TLS-FAIL %s" % peer_re(peer))

    def test_plain_mqtt_connect_to_mqtts_refused(self):
        self.start_broker()
        got, peer = self._expect_refused_raw(connect_packet(unique_id("plain")),
                                             self.broker.port_of("mqtts"))
        self.assertNotIn(b"\x20\x02\x00", got, "a CONNACK in the clear")
        self.broker.wait_log(r"NET-TLS-FAIL %s" % peer_re(peer))
        self.assert_tls_up()
        self.assert_logged_once(r"NET-TLS-FAIL %s" % peer_re(peer))

    def test_tls_client_hello_to_plain_mqtt_refused(self):
        self.start_broker()
        got, peer = self._expect_refused_raw(client_hello(), self.broker.port)
        self.assertEqual(got, b"", "the MQTT adapter answered a ClientHello")
        # And a real TLS client against the plain port fails its handshake.
        s, _ = self.tls_socket(client_context(), port=self.broker.port)
        self.assertIsInstance(s, (ssl.SSLError, OSError))
        self.assertTrue(self.broker.is_running())
        self.assertEqual(self.broker.count_log("NET-TLS"), 0, "TLS on a plain listener?")
        self.assert_broker_up()

    def test_handshake_deadline(self):
        self.start_broker(conf="limits:\n  tls_handshake_timeout: 1000\n")
        port = self.broker.port_of("mqtts")
        # A client that finished its handshake in time is not affected by the deadline.
        done = self.mqtts("done")
        hello = client_hello()
        for what, data in (("half ClientHello", hello[:len(hello) // 2]), ("nothing", b"")):
            with self.subTest(what):
                t0 = time.monotonic()
                r = RawClient(self.broker, port=port)
                self.addCleanup(r.close)
                peer = peer_name(r.sock)
                if data:
                    r.send(data)
                got = r.expect_closed(timeout=5.0)
                took = time.monotonic() - t0
                self.assertEqual(got, b"")
                self.assertGreaterEqual(took, 0.9, "closed before the 1000 ms deadline")
                self.assertLessEqual(took, 3.0, "closed long after the 1000 ms deadline")
                line = self.broker.wait_log(r"NET-TLS-TIMEOUT %s" % peer_re(peer))[0]
                self.assertIn("1000 ms", line)
        done.subscribe([("still/here", 1)])
        done.publish("still/here", b"yes", qos=1)
        self.assertEqual(done.get().payload, b"yes")
        self.assertEqual(self.broker.count_log("NET-TLS-FAIL"), 0, self.broker.log_text())


# -- 10. startup errors -------------------------------------------------------------------------


@unittest.skipIf(IS_MOSQUITTO or bool(STOMP_EXTERNAL), "ternd's TLS options")
class StartupErrorTest(unittest.TestCase):

    def run_ternd(self, *args):
        data = tempfile.mkdtemp(prefix="tern-tls-start-")
        self.addCleanup(shutil.rmtree, data, True)
        cmd = [os.environ["TERND"], "--data", data] + list(args)
        try:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, timeout=READY_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("ternd did not exit: %s\n%s" % (cmd, e.stderr))
        err = p.stderr.decode("utf-8", "replace")
        self.assertNotRegex(err, SANITIZER_RE, "sanitizer report")
        self.assertNotIn("TERN-READY", err)
        return p.returncode, err

    def test_missing_cert_file(self):
        missing = os.path.join(CERTS, "no-such-server.pem")
        rc, err = self.run_ternd("--listen", "mqtts://127.0.0.1:0", "--tls-cert", missing,
                                 "--tls-key", cert("server.key"))
        self.assertEqual(rc, 1, err)
        self.assertRegex(err, r"TERN-TLS.*no-such-server\.pem")

    def test_missing_key_file(self):
        missing = os.path.join(CERTS, "no-such-server.key")
        rc, err = self.run_ternd("--listen", "stomps://127.0.0.1:0", "--tls-cert",
                                 cert("server.pem"), "--tls-key", missing)
        self.assertEqual(rc, 1, err)
        self.assertRegex(err, r"TERN-TLS.*no-such-server\.key")

    def test_key_does_not_match_cert(self):
        rc, err = self.run_ternd("--listen", "amqps://127.0.0.1:0", "--tls-cert",
                                 cert("server.pem"), "--tls-key", cert("client.key"))
        self.assertEqual(rc, 1, err)
        self.assertIn("TERN-TLS", err)

    def test_no_certificate(self):
        rc, err = self.run_ternd("--listen", "mqtts://127.0.0.1:0")
        self.assertNotEqual(rc, 0, err)
        self.assertIn("needs a certificate and a key", err)

    def test_bogus_verify_client(self):
        rc, err = self.run_ternd("--listen", "mqtts://127.0.0.1:0", "--tls-cert",
                                 cert("server.pem"), "--tls-key", cert("server.key"),
                                 "--tls-verify-client", "bogus")
        self.assertEqual(rc, 2, err)
        self.assertIn("bogus", err)

    def test_require_without_ca(self):
        rc, err = self.run_ternd("--listen", "mqtts://127.0.0.1:0", "--tls-cert",
                                 cert("server.pem"), "--tls-key", cert("server.key"),
                                 "--tls-verify-client", "require")
        self.assertNotEqual(rc, 0, err)
        self.assertIn("needs a CA file", err)


# -- 12. closing ----------------------------------------------------------------------------------


class CloseTlsTest(TlsTestCase):

    def _unwrap(self, s):
        """close_notify from our side. The broker may answer with its own close_notify or just
        close the TCP connection; either is fine, as long as it closes."""
        try:
            raw = s.unwrap()
        except (ssl.SSLError, OSError):
            return  # it closed without a close_notify of its own (SSLEOFError, reset)
        raw.settimeout(TIMEOUT)
        try:
            self.assertEqual(raw.recv(100), b"", "data after close_notify")
        except ConnectionResetError:
            pass

    def test_peer_close_notify(self):
        self.start_broker()
        watcher = self.client("watch")
        watcher.subscribe([("will/tls", 1)])
        s, peer = self.tls_socket(client_context())
        self.assertNotIsInstance(s, Exception)
        r = TlsRaw(s)
        r.connect(will=("will/tls", b"gone", 1, False))
        self._unwrap(s)
        # No DISCONNECT came, so the close_notify is a network close: the will goes out.
        m = watcher.get()
        self.assertEqual((m.topic, m.payload), ("will/tls", b"gone"))
        self.assert_tls_up()
        self.assert_log_clean()

    def test_many_connections(self):
        self.start_broker()
        port = self.broker.port_of("mqtts")
        ctx = client_context()
        deadline = time.monotonic() + 120
        for i in range(200):
            self.assertLess(time.monotonic(), deadline, "too slow: %d connections" % i)
            raw = socket.create_connection((HOST, port), timeout=TIMEOUT)
            s = None
            try:
                kind = i % 4
                if kind == 3:
                    continue  # TCP only: closed before any TLS byte
                s = ctx.wrap_socket(raw, server_hostname="localhost")
                if kind == 2:
                    self._unwrap(s)  # TLS but no MQTT
                    continue
                r = TlsRaw(s)
                r.connect(client_id="many-%d" % i)
                if kind == 0:
                    r.send(DISCONNECT_BYTES)
                    r.expect_closed()
                else:
                    self._unwrap(s)  # MQTT, then close_notify without DISCONNECT
            finally:
                if s is not None:
                    s.close()
                raw.close()
        self.assertTrue(self.broker.is_running())
        self.assert_tls_up()
        self.assert_log_clean()


if __name__ == "__main__":
    unittest.main()
