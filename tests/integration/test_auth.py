"""Users and passwords (issue 16): ternd --password-file, --allow-anonymous, SIGHUP, and Tern's
rule for anonymous clients, with real clients (paho-mqtt, mosquitto_pub, stomp.py,
python-qpid-proton) and password files made by `ternctl passwd` and by Mosquitto's own
mosquitto_passwd.

Run: TERND=build/dev/tools/ternd/ternd TERNCTL=build/dev/tools/ternctl/ternctl \
     /usr/bin/python3 tests/integration/test_auth.py -v
"""

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

from harness import HOST, TIMEOUT, Broker, Client, RawClient, StompClient, unique_id

TERNCTL = os.environ.get("TERNCTL") or os.path.join(
    os.path.dirname(os.environ.get("TERND", "build/dev/tools/ternd/ternd")), "..", "ternctl",
    "ternctl")
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
MOSQUITTO_PUB = shutil.which("mosquitto_pub")
DELAY_S = 1.0  # auth.fail_delay's default


def ternctl_passwd(path, name, password):
    subprocess.run([TERNCTL, "passwd", path, name], input=(password + "\n").encode(),
                   check=True, capture_output=True, timeout=30)


class AuthCase(unittest.TestCase):
    extra = ()

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="tern-auth-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.pwfile = os.path.join(self.tmp, "passwd")
        ternctl_passwd(self.pwfile, "alice", "wonderland")
        ternctl_passwd(self.pwfile, "bob", "builder")
        self.broker = Broker(stomp=True, amqp=True, listen=("ws",),
                             extra_args=["--password-file", self.pwfile] + list(self.extra))
        self.broker.start()
        self.addCleanup(self.broker.stop)

    def client(self, user=None, password=None, **kw):
        c = Client(self.broker, **kw)
        if user is not None:
            c.mqtt.username_pw_set(user, password)
        self.addCleanup(c.close)
        return c

    def stomp(self):
        s = StompClient(self.broker)
        self.addCleanup(s.close)
        return s


class PasswordTest(AuthCase):
    def test_mqtt_right_wrong_unknown_and_anonymous(self):
        c = self.client("alice", "wonderland")
        c.connect()
        c.subscribe([("auth/t", 1)])
        c.publish("auth/t", b"hi", qos=1)
        self.assertEqual(c.messages.get(timeout=TIMEOUT).payload, b"hi")
        # [MQTT-3.2.2-5]: 4 for a bad user name or password (the same for an unknown user),
        # 5 for an anonymous client where none may connect; answered after the delay.
        for user, pw, rc in (("alice", "rabbit", 4), ("carol", "x", 4), (None, None, 5)):
            t0 = time.monotonic()
            self.client(user, pw).connect(expect_rc=rc)
            self.assertGreaterEqual(time.monotonic() - t0, DELAY_S * 0.9)
        # Logged with the peer's address (paho may retry by itself: at least once).
        self.assertGreaterEqual(
            self.broker.count_log(r"MQTT-AUTH-FAIL 127\.0\.0\.1:\d+: login failed for user 'alice'"),
            1)

    def test_logins_do_not_stall_other_traffic(self):
        """Ten wrong passwords at once: each waits out its delay off the loop, while a
        connected client's messages keep flowing."""
        c = self.client("bob", "builder")
        c.connect()
        c.subscribe([("auth/flow", 0)])
        done = []

        def bad():
            b = Client(self.broker)
            b.mqtt.username_pw_set("alice", "nope")
            try:
                b.connect(expect_rc=4)
                done.append(True)
            finally:
                b.close()
        threads = [threading.Thread(target=bad) for _ in range(10)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        sent = 0
        while any(t.is_alive() for t in threads) and time.monotonic() - t0 < 10:
            c.publish("auth/flow", b"x%d" % sent, qos=0)
            sent += 1
            got = c.messages.get(timeout=0.5)  # within half a second, though logins wait 1 s
            self.assertEqual(got.payload, b"x%d" % (sent - 1))
        for t in threads:
            t.join(TIMEOUT)
        self.assertEqual(len(done), 10)
        self.assertLess(time.monotonic() - t0, 5 * DELAY_S, "the refusals were serialized")

    def test_mqtt_over_websocket(self):
        import paho.mqtt.client as paho
        got = {}
        for user, pw in (("alice", "wonderland"), ("alice", "nope")):
            m = paho.Client(client_id=unique_id("ws"), transport="websockets")
            m.username_pw_set(user, pw)
            ev = threading.Event()

            def on_connect(c, u, f, rc, pw=pw):
                got[pw] = rc
                ev.set()
            m.on_connect = on_connect
            m.connect(HOST, self.broker.port_of("ws"), 30)
            m.loop_start()
            self.assertTrue(ev.wait(TIMEOUT))
            m.loop_stop()
            m.disconnect()
        self.assertEqual(got, {"wonderland": 0, "nope": 4})

    def test_stomp_login(self):
        s = self.stomp()
        s.connect(headers={"login": "alice", "passcode": "wonderland"})
        s.disconnect()
        bad = self.stomp()
        with self.assertRaises(AssertionError):
            bad.connect(headers={"login": "alice", "passcode": "nope"})
        err = bad.errors.get(timeout=TIMEOUT)
        self.assertIn(err.get("message"), ("bad login or passcode", "not authorized"))
        anon = self.stomp()
        with self.assertRaises(AssertionError):
            anon.connect()

    def test_amqp_sasl_plain(self):
        from proton import ConnectionException, Message
        from proton.utils import BlockingConnection
        url = "amqp://%s:%d" % (HOST, self.broker.amqp_port)
        c = BlockingConnection(url, timeout=TIMEOUT, user="alice", password="wonderland",
                               allowed_mechs="PLAIN")
        c.create_sender("queue://auth-q").send(Message(body="x"))
        c.close()
        for kw in (dict(user="alice", password="nope", allowed_mechs="PLAIN"),
                   dict(allowed_mechs="ANONYMOUS")):
            with self.assertRaises(ConnectionException) as cm:
                c = BlockingConnection(url, timeout=TIMEOUT, **kw)
                c.create_sender("queue://auth-q")
            self.assertIn("auth", str(cm.exception).lower())

    @unittest.skipUnless(MOSQUITTO_PUB, "no mosquitto_pub (Debian mosquitto-clients)")
    def test_mosquitto_pub(self):
        base = [MOSQUITTO_PUB, "-h", HOST, "-p", str(self.broker.port), "-t", "auth/m", "-m",
                "x", "-q", "1"]
        ok = subprocess.run(base + ["-u", "bob", "-P", "builder"], capture_output=True,
                            timeout=30)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        bad = subprocess.run(base + ["-u", "bob", "-P", "x"], capture_output=True, timeout=30)
        self.assertNotEqual(bad.returncode, 0)

    def test_sighup_rereads_the_password_file(self):
        held = self.client("alice", "wonderland")
        held.connect()
        self.client("carol", "sea").connect(expect_rc=4)
        ternctl_passwd(self.pwfile, "carol", "sea")
        os.kill(self.broker.proc.pid, signal.SIGHUP)
        self.broker.wait_log(r"AUTH-RELOAD 3 users")
        self.client("carol", "sea").connect()
        # A broken file is refused and the one read before stays.
        with open(self.pwfile, "a") as f:
            f.write("not a line\n")
        os.kill(self.broker.proc.pid, signal.SIGHUP)
        self.broker.wait_log(r"AUTH-RELOAD .*keeping the files read before")
        self.client("carol", "sea").connect()
        self.assertFalse(held.disconnected.is_set(), "a connected client was dropped")


@unittest.skipUnless(MOSQUITTO_PASSWD, "no mosquitto_passwd (Debian mosquitto)")
class MosquittoFileTest(unittest.TestCase):
    def test_a_file_mosquitto_passwd_wrote(self):
        tmp = tempfile.mkdtemp(prefix="tern-auth-")
        self.addCleanup(shutil.rmtree, tmp, True)
        pw = os.path.join(tmp, "passwd")
        subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", pw, "dave", "s3cret"], check=True,
                       capture_output=True, timeout=30)
        b = Broker(extra_args=["--password-file", pw]).start()
        self.addCleanup(b.stop)
        c = Client(b)
        self.addCleanup(c.close)
        c.mqtt.username_pw_set("dave", "s3cret")
        c.connect()
        d = Client(b)
        self.addCleanup(d.close)
        d.mqtt.username_pw_set("dave", "wrong")
        d.connect(expect_rc=4)


class AnonymousAllowedTest(AuthCase):
    extra = ("--allow-anonymous", "true")

    def test_anonymous_and_users_both_in(self):
        from proton import Message
        from proton.utils import BlockingConnection
        self.client().connect()
        self.client("alice", "wonderland").connect()
        self.client("alice", "nope").connect(expect_rc=4)
        self.stomp().connect()
        c = BlockingConnection("amqp://%s:%d" % (HOST, self.broker.amqp_port), timeout=TIMEOUT,
                               allowed_mechs="ANONYMOUS")
        c.create_sender("queue://anon").send(Message(body="a"))
        c.close()


class StartupRuleTest(unittest.TestCase):
    """Tern's rule: without a password file, anonymous clients only while every listener is
    on loopback; a listener elsewhere refuses to start unless --allow-anonymous true."""

    def run_ternd(self, *args):
        tmp = tempfile.mkdtemp(prefix="tern-auth-")
        self.addCleanup(shutil.rmtree, tmp, True)
        return subprocess.run([os.environ.get("TERND", "build/dev/tools/ternd/ternd"),
                               "--data", tmp] + list(args),
                              capture_output=True, timeout=30)

    def test_open_listener_without_password_file_refuses_to_start(self):
        r = self.run_ternd("--listen", "mqtt://0.0.0.0:0")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"TERN-AUTH", r.stderr)
        self.assertIn(b"--allow-anonymous true", r.stderr)

    def test_open_listener_with_allow_anonymous_starts(self):
        tmp = tempfile.mkdtemp(prefix="tern-auth-")
        self.addCleanup(shutil.rmtree, tmp, True)
        p = subprocess.Popen([os.environ.get("TERND", "build/dev/tools/ternd/ternd"), "--data",
                              tmp, "--listen", "mqtt://0.0.0.0:0", "--allow-anonymous", "true"],
                             stderr=subprocess.PIPE)
        line = b""
        deadline = time.monotonic() + TIMEOUT
        while b"TERN-READY" not in line and time.monotonic() < deadline:
            line = p.stderr.readline()
            if not line:
                break
        p.send_signal(signal.SIGTERM)
        p.wait(TIMEOUT)
        self.assertIn(b"TERN-READY", line)
        self.assertEqual(p.returncode, 0)

    def test_bad_password_file_refuses_to_start(self):
        tmp = tempfile.mkdtemp(prefix="tern-auth-")
        self.addCleanup(shutil.rmtree, tmp, True)
        pw = os.path.join(tmp, "passwd")
        with open(pw, "w") as f:
            f.write("alice:$7$bad\n")
        r = self.run_ternd("--listen", "mqtt://127.0.0.1:0", "--password-file", pw)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"passwd:1", r.stderr)


ACL = """# anonymous clients: nothing
user alice
topic readwrite sensors/#
topic readwrite alerts/#
queue readwrite orders/#
user bob
topic write sensors/bob/#
topic read alerts/bob
pattern readwrite devices/%u/#
"""


class AclTest(AuthCase):
    """--acl-file: Mosquitto's format, with Tern's queue lines; every protocol."""

    @classmethod
    def setUpClass(cls):
        cls.acl_dir = tempfile.mkdtemp(prefix="tern-acl-")
        cls.aclpath = os.path.join(cls.acl_dir, "acl")
        with open(cls.aclpath, "w") as f:
            f.write(ACL)
        cls.extra = ("--acl-file", cls.aclpath)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.acl_dir, True)

    def test_mqtt_subscribe_publish_and_per_message_reads(self):
        alice = self.client("alice", "wonderland")
        alice.connect()
        bob = self.client("bob", "builder")
        bob.connect()
        self.assertEqual(alice.subscribe([("alerts/#", 1)]), [1])
        self.assertEqual(bob.subscribe([("sensors/#", 1)]), [128])  # nothing readable there
        self.assertEqual(bob.subscribe([("#", 1)]), [1])  # alerts/bob is readable
        alice.publish("alerts/other", b"not for bob", qos=1)
        alice.publish("alerts/bob", b"for bob", qos=1)
        self.assertEqual(bob.messages.get(timeout=TIMEOUT).payload, b"for bob")
        self.assertEqual(alice.messages.get(timeout=TIMEOUT).payload, b"not for bob")
        self.assertEqual(alice.messages.get(timeout=TIMEOUT).payload, b"for bob")
        # A PUBLISH bob may not make: acknowledged (the QoS 1 flow completes) and dropped.
        bob.publish("alerts/bob", b"forged", qos=1)
        bob.publish("devices/bob/t", b"mine", qos=1)  # the %u pattern
        self.assertEqual(bob.messages.get(timeout=TIMEOUT).payload, b"mine")
        self.assertTrue(alice.messages.empty())
        self.broker.wait_log(r"MQTT-ACL-DENIED .*bob may not publish to alerts\.bob")

    def test_anonymous_reads_nothing(self):
        self.broker.stop()
        self.broker = Broker(stomp=True, amqp=True,
                             extra_args=["--password-file", self.pwfile, "--acl-file",
                                         self.aclpath, "--allow-anonymous", "true"]).start()
        self.addCleanup(self.broker.stop)
        anon = self.client()
        anon.connect()
        self.assertEqual(anon.subscribe([("#", 0)]), [128])

    def test_stomp_send_and_subscribe(self):
        a = self.stomp()
        a.connect(headers={"login": "alice", "passcode": "wonderland"})
        a.subscribe("/queue/orders.eu", receipt=True)
        a.send("/queue/orders.eu", b"o1", receipt=True)
        self.assertEqual(a.messages.get(timeout=TIMEOUT).body, b"o1")
        b = self.stomp()
        b.connect(headers={"login": "bob", "passcode": "builder"})
        with self.assertRaises(AssertionError):
            b.send("/queue/orders.eu", b"x", receipt=True)
        err = b.errors.get(timeout=TIMEOUT)
        self.assertEqual(err.get("message"), "not authorized")
        c = self.stomp()
        c.connect(headers={"login": "bob", "passcode": "builder"})
        with self.assertRaises(AssertionError):
            c.subscribe("/topic/sensors.>", receipt=True)
        self.assertEqual(c.errors.get(timeout=TIMEOUT).get("message"), "not authorized")

    def test_amqp_attach(self):
        from proton import Message
        from proton.utils import BlockingConnection, LinkDetached
        url = "amqp://%s:%d" % (HOST, self.broker.amqp_port)
        a = BlockingConnection(url, timeout=TIMEOUT, user="alice", password="wonderland",
                               allowed_mechs="PLAIN")
        self.addCleanup(a.close)
        a.create_sender("queue://orders.us").send(Message(body="o"))
        r = a.create_receiver("queue://orders.us")
        self.assertEqual(r.receive(TIMEOUT).body, "o")
        b = BlockingConnection(url, timeout=TIMEOUT, user="bob", password="builder",
                               allowed_mechs="PLAIN")
        self.addCleanup(b.close)
        with self.assertRaises(LinkDetached) as cm:
            b.create_sender("queue://orders.us")
        self.assertIn("unauthorized-access", str(cm.exception))
        with self.assertRaises(LinkDetached):
            b.create_receiver("topic://sensors.>")
        b.create_receiver("topic://alerts.bob")  # readable: allowed on the same connection

    def test_sighup_removes_a_right_from_existing_subscriptions(self):
        alice = self.client("alice", "wonderland")
        alice.connect()
        alice.subscribe([("sensors/a", 1)])
        alice.publish("sensors/a", b"1", qos=1)
        self.assertEqual(alice.messages.get(timeout=TIMEOUT).payload, b"1")
        with open(self.aclpath, "w") as f:
            f.write(ACL.replace("topic readwrite sensors/#", "topic write sensors/#"))
        self.addCleanup(lambda: open(self.aclpath, "w").write(ACL))
        os.kill(self.broker.proc.pid, signal.SIGHUP)
        self.broker.wait_log(r"AUTH-RELOAD \d+ users")
        alice.publish("sensors/a", b"2", qos=1)  # still writable, no longer readable
        alice.publish("alerts/a", b"3", qos=1)
        alice.subscribe([("alerts/a", 1)])
        alice.publish("alerts/a", b"4", qos=1)
        self.assertEqual(alice.messages.get(timeout=TIMEOUT).payload, b"4")
        self.assertTrue(alice.messages.empty())


class PerAddressLimitTest(unittest.TestCase):
    """limits.max_connections_per_ip: counted over every listener and scheme."""

    def test_limit_per_source_address(self):
        import socket
        tmp = tempfile.mkdtemp(prefix="tern-auth-")
        self.addCleanup(shutil.rmtree, tmp, True)
        conf = os.path.join(tmp, "tern.conf")
        with open(conf, "w") as f:
            f.write("limits:\n  max_connections_per_ip: 3\n")
        b = Broker(stomp=True, listen=("ws",), extra_args=["-c", conf]).start()
        self.addCleanup(b.stop)
        held = []
        for _ in range(2):  # MQTT, each answered (so surely counted)
            r = RawClient(b)
            r.connect()
            held.append(r)
        st = StompClient(b)  # and STOMP: the count is over every listener
        st.connect()
        held.append(st)
        c = Client(b)
        self.addCleanup(c.close)
        with self.assertRaises(Exception):
            c.connect(timeout=3)
        b.wait_log(r"NET-MAX-CONN-IP .*max_connections_per_ip reached")
        # Over WebSocket too: the same count.
        import websocket
        try:
            ws = websocket.create_connection("ws://%s:%d/mqtt" % (HOST, b.port_of("ws")),
                                             subprotocols=["mqtt"], timeout=TIMEOUT)
            ws.send_binary(bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 0]))
            got = ws.recv()
            self.assertFalse(got, "a WebSocket connection past the limit was served")
        except (websocket.WebSocketException, OSError):
            pass
        b.wait_log(r"NET-MAX-CONN-IP .*WebSocket connection refused")
        # Another source address is another count.
        other = socket.socket()
        other.bind(("127.0.0.2", 0))
        other.settimeout(TIMEOUT)
        other.connect((HOST, b.port))
        other.sendall(bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 0]))
        self.assertEqual(other.recv(4), b"\x20\x02\x00\x00")
        other.close()
        # One closed: room for one more.
        held.pop(0).close()
        d = None
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            d = Client(b)
            try:
                d.connect(timeout=2)
                break
            except Exception:
                d.close()
                d = None
        self.assertIsNotNone(d, "no room after a connection closed")
        d.close()
        for s in held:
            s.close()


class CertificateIdentityTest(unittest.TestCase):
    """auth.use_identity_as_username: the verified client certificate's CN is the user."""

    def test_cn_is_the_user_name(self):
        from harness import make_test_certs
        certs = make_test_certs()
        self.addCleanup(shutil.rmtree, certs, True)
        tmp = tempfile.mkdtemp(prefix="tern-auth-")
        self.addCleanup(shutil.rmtree, tmp, True)
        acl = os.path.join(tmp, "acl")
        with open(acl, "w") as f:
            f.write("user tern-client\ntopic readwrite fleet/#\n")
        conf = os.path.join(tmp, "tern.conf")
        with open(conf, "w") as f:
            f.write("auth:\n  use_identity_as_username: true\n  fail_delay: 100\n")
        c = lambda n: os.path.join(certs, n)
        b = Broker(listeners=0, listen=("mqtts",),
                   extra_args=["-c", conf, "--acl-file", acl, "--tls-cert", c("server.pem"),
                               "--tls-key", c("server.key"), "--tls-ca", c("ca.pem"),
                               "--tls-verify-client", "optional"]).start()
        self.addCleanup(b.stop)
        port = b.port_of("mqtts")
        good = Client(b, port=port)
        self.addCleanup(good.close)
        good.mqtt.tls_set(ca_certs=c("ca.pem"), certfile=c("client.pem"), keyfile=c("client.key"))
        good.connect()
        self.assertEqual(good.subscribe([("fleet/#", 1), ("other/#", 1)]), [1, 128])
        bare = Client(b, port=port)  # no certificate: no identity, refused
        self.addCleanup(bare.close)
        bare.mqtt.tls_set(ca_certs=c("ca.pem"))
        bare.mqtt.username_pw_set("tern-client", "x")  # a name alone is not the certificate
        bare.connect(expect_rc=5)


class InteropSubscribeFailureTest(unittest.TestCase):
    """The Eclipse Paho interoperability suite's test_subscribe_failure: with an ACL denying
    test/nosubscribe, its SUBSCRIBE gets 0x80; everything else goes on."""

    def test_denied_topic_gets_0x80(self):
        tmp = tempfile.mkdtemp(prefix="tern-auth-")
        self.addCleanup(shutil.rmtree, tmp, True)
        acl = os.path.join(tmp, "acl")
        with open(acl, "w") as f:
            f.write("topic readwrite #\ntopic deny test/nosubscribe\n")
        b = Broker(extra_args=["--acl-file", acl]).start()
        self.addCleanup(b.stop)
        c = Client(b)
        self.addCleanup(c.close)
        c.connect()
        self.assertEqual(c.subscribe([("test/nosubscribe", 2)]), [128])
        self.assertEqual(c.subscribe([("test/+", 1)]), [1])
        c.publish("test/nosubscribe", b"no", qos=1)
        c.publish("test/yes", b"yes", qos=1)
        self.assertEqual(c.messages.get(timeout=TIMEOUT).payload, b"yes")
        self.assertTrue(c.messages.empty())


if __name__ == "__main__":
    unittest.main()
