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

from harness import HOST, TIMEOUT, Broker, Client, StompClient, make_test_certs

PROMTOOL = shutil.which("promtool")


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


if __name__ == "__main__":
    unittest.main()
