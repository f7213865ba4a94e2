"""The management listener (issue 17, first part): --listen http://ADDR:PORT (and https://)
serves GET /metrics in Prometheus' text format, checked with promtool and moved by real
clients.

Run: TERND=build/dev/tools/ternd/ternd /usr/bin/python3 tests/integration/test_http.py -v
"""

import os
import re
import shutil
import socket
import ssl
import subprocess
import unittest
import urllib.error
import urllib.request
import json

from harness import HOST, TIMEOUT, Broker, Client, StompClient, make_test_certs

PROMTOOL = shutil.which("promtool")
TERNCTL = os.environ.get("TERNCTL") or os.path.join(
    os.path.dirname(os.environ.get("TERND", "build/dev/tools/ternd/ternd")), "..", "ternctl",
    "ternctl")


def get(url, context=None):
    with urllib.request.urlopen(url, timeout=TIMEOUT, context=context) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def value(text, series):
    m = re.search(r"^%s (\S+)$" % re.escape(series), text, re.M)
    return float(m.group(1)) if m else None


class MetricsTest(unittest.TestCase):
    def setUp(self):
        self.b = Broker(stomp=True, amqp=True, listen=("http",)).start()
        self.addCleanup(self.b.stop)
        self.url = "http://%s:%d/metrics" % (HOST, self.b.port_of("http"))

    def test_metrics_move_with_the_clients(self):
        status, ctype, text = get(self.url)
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/plain; version=0.0.4"))
        self.assertEqual(value(text, 'tern_connections{protocol="mqtt"}'), 0)
        clients = []
        for _ in range(2):
            c = Client(self.b)
            self.addCleanup(c.close)
            c.connect()
            clients.append(c)
        s = StompClient(self.b)
        self.addCleanup(s.close)
        s.connect()
        for i in range(100):
            s.send("/queue/obs", b"m%d" % i, headers={"persistent": "true"}, receipt=i == 99)
        _, _, text = get(self.url)
        self.assertEqual(value(text, 'tern_connections{protocol="mqtt"}'), 2)
        self.assertEqual(value(text, 'tern_connections{protocol="stomp"}'), 1)
        self.assertEqual(value(text, 'tern_queue_messages{queue="obs"}'), 100)
        self.assertGreaterEqual(value(text, "tern_messages_published_total"), 100)
        self.assertGreater(value(text, "process_resident_memory_bytes"), 1e6)
        self.assertGreater(value(text, "process_open_fds"), 3)
        self.assertIsNotNone(value(text, "process_cpu_seconds_total"))
        self.assertIsNotNone(value(text, "process_start_time_seconds"))
        self.assertIsNotNone(value(text, 'tern_build_info{version="0.1.0"}'))
        s.subscribe("/queue/obs", ack="auto", receipt=True)
        for _ in range(100):
            s.messages.get(timeout=TIMEOUT)
        s.disconnect()
        deadline = __import__("time").monotonic() + TIMEOUT
        while True:
            _, _, text = get(self.url)
            if value(text, 'tern_queue_messages{queue="obs"}') == 0:
                break
            self.assertLess(__import__("time").monotonic(), deadline, text)
        if PROMTOOL:
            r = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                               capture_output=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    @unittest.skipUnless(PROMTOOL, "no promtool (Debian prometheus, see tools/deps)")
    def test_promtool_lint_clean(self):
        _, _, text = get(self.url)
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_other_paths_and_bad_requests(self):
        with self.assertRaises(urllib.error.HTTPError) as cm:
            get(self.url.replace("/metrics", "/nope"))
        self.assertEqual(cm.exception.code, 404)
        req = urllib.request.Request(self.url, method="DELETE")
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(req, timeout=TIMEOUT)
        self.assertEqual(cm.exception.code, 405)
        sock = socket.create_connection((HOST, self.b.port_of("http")), timeout=TIMEOUT)
        sock.sendall(b"\x16\x03\x01garbage\r\n\r\n")
        data = sock.recv(4096)
        self.assertTrue(data.startswith(b"HTTP/1.1 400 "), data)
        self.assertEqual(sock.recv(4096), b"")  # closed
        sock.close()
        # Keep-alive: two requests on one connection.
        sock = socket.create_connection((HOST, self.b.port_of("http")), timeout=TIMEOUT)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nHEAD /metrics HTTP/1.1\r\n\r\n")
        got = b""
        while got.count(b"HTTP/1.1 200 OK") < 2:
            chunk = sock.recv(65536)
            self.assertTrue(chunk)
            got += chunk
        sock.close()


class HttpsTest(unittest.TestCase):
    def test_metrics_over_tls(self):
        certs = make_test_certs()
        self.addCleanup(shutil.rmtree, certs, True)
        b = Broker(listen=("https",), extra_args=[
            "--tls-cert", os.path.join(certs, "server.pem"),
            "--tls-key", os.path.join(certs, "server.key")]).start()
        self.addCleanup(b.stop)
        ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
        status, _, text = get("https://%s:%d/metrics" % (HOST, b.port_of("https")), ctx)
        self.assertEqual(status, 200)
        self.assertIn("tern_connections", text)


class ApiTest(unittest.TestCase):
    """The JSON admin API's read-only routes and ternctl status|queues over it."""

    def setUp(self):
        self.b = Broker(stomp=True, listen=("http",)).start()
        self.addCleanup(self.b.stop)
        self.base = "http://%s:%d" % (HOST, self.b.port_of("http"))

    def ctl(self, *args):
        return subprocess.run([TERNCTL, "--url", self.base] + list(args), capture_output=True,
                              timeout=30)

    def test_overview_queues_and_ternctl(self):
        s = StompClient(self.b)
        self.addCleanup(s.close)
        s.connect()
        for i in range(100):
            s.send("/queue/obs", b"m%d" % i, headers={"persistent": "true"}, receipt=i == 99)
        status, ctype, text = get(self.base + "/api/v1/overview")
        self.assertEqual(status, 200)
        self.assertEqual(ctype, "application/json")
        o = json.loads(text)
        self.assertEqual(o["connections"]["stomp"], 1)
        self.assertEqual(o["role"], "single")
        self.assertGreaterEqual(o["messages_published"], 100)
        _, _, text = get(self.base + "/api/v1/queues")
        qs = {q["name"]: q for q in json.loads(text)}
        self.assertEqual(qs["obs"]["messages"], 100)
        self.assertEqual(qs["obs"]["consumers"], 0)
        r = self.ctl("queues")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout.decode(), r"(?m)^obs +100 +0 +0$")
        r = self.ctl("--json", "queues")
        self.assertEqual(json.loads(r.stdout)[0]["messages"], 100)
        r = self.ctl("status")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("connections  mqtt 0, stomp 1, amqp 0", r.stdout.decode())
        with self.assertRaises(urllib.error.HTTPError) as cm:
            get(self.base + "/api/v1/nope")
        self.assertEqual(cm.exception.code, 404)
        self.assertEqual(json.loads(cm.exception.read())["status"], 404)

    def test_ternctl_on_a_closed_port_fails(self):
        s = socket.socket()
        s.bind((HOST, 0))
        port = s.getsockname()[1]
        s.close()
        r = subprocess.run([TERNCTL, "--url", "http://%s:%d" % (HOST, port), "status"],
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"cannot connect", r.stderr)

    def test_api_closed_with_a_password_file(self):
        tmp = __import__("tempfile").mkdtemp(prefix="tern-http-")
        self.addCleanup(shutil.rmtree, tmp, True)
        pw = os.path.join(tmp, "passwd")
        subprocess.run([TERNCTL, "passwd", pw, "admin"], input=b"pw\n", check=True,
                       capture_output=True, timeout=30)
        b = Broker(listen=("http",), extra_args=["--password-file", pw]).start()
        self.addCleanup(b.stop)
        with self.assertRaises(urllib.error.HTTPError) as cm:
            get("http://%s:%d/api/v1/overview" % (HOST, b.port_of("http")))
        self.assertEqual(cm.exception.code, 403)
        status, _, _ = get("http://%s:%d/metrics" % (HOST, b.port_of("http")))
        self.assertEqual(status, 200)


if __name__ == "__main__":
    unittest.main()
