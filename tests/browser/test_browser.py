#!/usr/bin/python3
"""Tern's browser end-to-end test: mqtt.js and STOMP.js in headless Chromium over ws:// and
wss://, exchanging messages with Python clients on MQTT/TCP (paho) and STOMP/TCP (stomp.py).

How it runs:
  - `npm ci` in this folder (package.json + package-lock.json pin mqtt, @stomp/stompjs and
    playwright-core) unless node_modules already matches the lock file;
  - ternd with mqtt, stomp, ws and wss listeners on port 0 and the test certificates of
    tests/tls/mkcerts.sh (or, with BROKER=mosquitto, Debian's mosquitto with a websockets
    listener and a TLS one: the MQTT half only, as mosquitto has no STOMP);
  - a local HTTP server for page/ and the libraries' browser bundles from node_modules (the
    page loads nothing else; drive.js aborts any other request);
  - drive.js: Playwright (playwright-core) on the system Chromium, headless, a new empty
    profile, and a temporary HOME whose NSS database trusts the test CA (so wss:// is verified
    properly; without certutil, --ignore-certificate-errors-spki-list with the server key's
    hash instead). The test calls the page's T.* functions (page/tern-page.js) through it.
Each wait is bounded and waits for an event (CONNACK, CONNECTED, RECEIPT, a message, PINGRESP,
a STOMP heart-beat); there are no sleeps. Screenshots go to $TERN_BUILD_DIR/browser-test/ (a
temporary folder without TERN_BUILD_DIR).

Environment:
  TERND=PATH          the ternd binary (default broker)
  BROKER=mosquitto    test the mqtt.js half against /usr/sbin/mosquitto instead
  TERN_BUILD_DIR=DIR  where screenshots go (DIR/browser-test/*.png)
  CHROMIUM=PATH       the browser (default: chromium on PATH, or /usr/bin/chromium)
  TERN_BROWSER_TRUST=nss|spki   how Chromium is made to trust the test server certificate
                      (none: not at all, to see the wss:// tests fail)
  TERN_BROWSER_NPM_CI=1         run `npm ci` even if node_modules matches the lock file
  TERN_IT_KEEP=1      keep the temporary folders, print the broker's log
  TERN_BROWSER_WS_PROXY=1       ternd's MQTT and STOMP TCP ports behind ws_proxy.js instead of
                      ternd's own ws/wss listeners (a diagnostic for its WebSocket layer)

Run: TERND=build/dev/tools/ternd/ternd /usr/bin/python3 tests/browser/test_browser.py -v
"""

import base64
import errno
import fcntl
import hashlib
import http.server
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import harness  # noqa: E402  (needs /usr/bin/python3: paho-mqtt 1.6.1, stomp.py 8)

HOST = harness.HOST
KEEP = os.environ.get("TERN_IT_KEEP") == "1"
PAGE_TIMEOUT_MS = 8000  # one page-side wait (a CONNACK, a RECEIPT, a message)
CALL_SLACK = 7.0  # seconds a driver call may take beyond the page's own timeout
NPM_TIMEOUT = 300
LARGE = 200 * 1024  # the large messages, in bytes
IDLE_TIMEOUT_MS = 27000  # the idle phase: two STOMP heart-beats each way take ~20 s


def pattern(n, seed):
    """The same text as the page's T.pattern(n, seed)."""
    parts, size, i = [], 0, 0
    while size < n:
        s = "%s:%d;" % (seed, i)
        parts.append(s)
        size += len(s)
        i += 1
    return "".join(parts)[:n].encode("ascii")


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def find_chromium():
    env = os.environ.get("CHROMIUM")
    if env:
        return env if os.access(env, os.X_OK) else None
    return shutil.which("chromium") or (
        "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)


def run(cmd, timeout, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                       **kw)
    if p.returncode != 0:
        raise AssertionError("%s failed (exit %d):\n%s" % (" ".join(cmd), p.returncode,
                                                           p.stdout.decode("utf-8", "replace")))
    return p.stdout


def _flock(f, how, what):
    """flock with a deadline (flock itself has no timed wait, so poll)."""
    deadline = time.monotonic() + NPM_TIMEOUT
    while True:
        try:
            fcntl.flock(f, how | fcntl.LOCK_NB)
            return
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if time.monotonic() > deadline:
                raise AssertionError("%s: %s still locked after %d s" % (what, f.name,
                                                                        NPM_TIMEOUT))
            time.sleep(0.2)


def ensure_node_modules(npm):
    """`npm ci` into HERE/node_modules unless it already holds exactly package-lock.json (a
    stamp file records the lock file's hash). Returns an open lock file holding a shared lock
    for as long as the caller uses node_modules (close it to release): concurrent runs (the
    normal and sanitizer builds share this source folder) share node_modules, and `npm ci`,
    which deletes it first, runs only under the exclusive lock."""
    with open(os.path.join(HERE, "package-lock.json"), "rb") as f:
        want = sha256(f.read())
    stamp = os.path.join(HERE, "node_modules", ".tern-npm-ci")
    lock = open(os.path.join(tempfile.gettempdir(), "tern-browser-npm-%d.lock" % os.getuid()),
                "w")
    try:
        _flock(lock, fcntl.LOCK_EX, "npm ci")
        have = None
        if os.path.exists(stamp):
            with open(stamp) as f:
                have = f.read().strip()
        if have != want or os.environ.get("TERN_BROWSER_NPM_CI") == "1":
            run([npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"], NPM_TIMEOUT,
                cwd=HERE)
            with open(stamp, "w") as f:
                f.write(want + "\n")
        _flock(lock, fcntl.LOCK_SH, "npm ci")
        return lock
    except BaseException:
        lock.close()
        raise


# -- brokers --------------------------------------------------------------------------------------


class MosquittoWS(harness.Broker):
    """Debian's mosquitto with an MQTT/TCP listener, a websockets one (ws) and a websockets one
    with TLS (wss): the reference for the mqtt.js half."""

    def __init__(self, certs):
        super().__init__(kind="mosquitto")
        self.certs = certs
        self.ws_port = self.wss_port = None

    def _start_mosquitto(self):
        last = None
        for _ in range(5):
            ports = [harness.free_port() for _ in range(3)]
            if len(set(ports)) != 3:
                continue
            conf = os.path.join(self.data_dir, "mosquitto.conf")
            with open(conf, "w") as f:
                f.write("per_listener_settings false\n"
                        "allow_anonymous true\npersistence false\n"
                        "log_dest stderr\nlog_type all\nuser root\n"
                        "listener %d %s\n" % (ports[0], HOST)
                        + "listener %d %s\nprotocol websockets\n" % (ports[1], HOST)
                        + "listener %d %s\nprotocol websockets\n" % (ports[2], HOST)
                        + "certfile %s\nkeyfile %s\n" % (os.path.join(self.certs, "server.pem"),
                                                         os.path.join(self.certs, "server.key")))
            self._ready_re = re.compile(r"mosquitto version \S+ running")
            self._spawn(["mosquitto", "-c", conf], dict(os.environ))
            try:
                self._wait_ready(1)
                self.port = ports[0]
                self.ports = [ports[0]]
                self.ws_port, self.wss_port = ports[1], ports[2]
                self._probe_mosquitto()
                return
            except harness.BrokerError as e:
                last = e
                if "Address already in use" not in self.log_text():
                    raise
        raise last


class WsProxy:
    """ws_proxy.js: ws:// and wss:// listeners piped to a broker's MQTT and STOMP TCP ports
    (TERN_BROWSER_WS_PROXY=1, a diagnostic: the test without the broker's WebSocket layer)."""

    def __init__(self, node, broker, certs):
        self.proc = subprocess.Popen(
            [node, os.path.join(HERE, "ws_proxy.js"), json.dumps({
                "mqttPort": broker.port, "stompPort": broker.stomp_port,
                "cert": os.path.join(certs, "server.pem"),
                "key": os.path.join(certs, "server.key")})],
            cwd=HERE, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        lines = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()),
                         daemon=True).start()
        try:
            ports = json.loads(lines.get(timeout=20) or b"null")
        except queue.Empty:
            ports = None
        if not ports:
            self.stop()
            raise AssertionError("ws_proxy.js did not start")
        self.ws_port, self.wss_port = ports["ws"], ports["wss"]

    def stop(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc.stdout.close()


def start_ternd(certs):
    """ternd with mqtt, stomp, ws and wss listeners; returns the Broker with ws_port and
    wss_port set from its TERN-READY lines."""
    b = harness.Broker(stomp=True, extra_args=[
        "--listen", "ws://%s:0" % HOST, "--listen", "wss://%s:0" % HOST,
        "--tls-cert", os.path.join(certs, "server.pem"),
        "--tls-key", os.path.join(certs, "server.key")])
    b.start()  # waits for the mqtt and stomp TERN-READY lines
    try:
        lines = b.wait_log(r"TERN-READY.* wss?://127\.0\.0\.1:\d+", count=2,
                           timeout=harness.READY_TIMEOUT)
    except AssertionError:
        b.stop(show_log=True)
        raise
    for line in lines:
        m = re.search(r" (wss?)://127\.0\.0\.1:(\d+)", line)
        setattr(b, m.group(1) + "_port", int(m.group(2)))
    if not getattr(b, "ws_port", None) or not getattr(b, "wss_port", None):
        b.stop(show_log=True)
        raise harness.BrokerError("no ws and wss TERN-READY lines: %r" % lines)
    return b


# -- the page's HTTP server -----------------------------------------------------------------------

SERVED = ("/page/", "/node_modules/mqtt/dist/", "/node_modules/@stomp/stompjs/bundles/")


class PageHandler(http.server.SimpleHTTPRequestHandler):
    """Serves page/ and the two libraries' bundle folders from HERE; nothing else."""

    requests = None  # a list, set on the class made per server

    def __init__(self, *a, **kw):
        super().__init__(*a, directory=HERE, **kw)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        self.requests.append(path)
        if path == "/":
            self.path = "/page/index.html"
        elif not path.startswith(SERVED) or ".." in path:
            self.send_error(404)
            return
        super().do_GET()

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, *a):
        pass


def start_http():
    handler = type("Handler", (PageHandler,), {"requests": []})
    httpd = http.server.ThreadingHTTPServer((HOST, 0), handler)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, name="page-http", daemon=True)
    t.start()
    return httpd, handler.requests


# -- the browser ----------------------------------------------------------------------------------


class PageError(AssertionError):
    """A T.* call in the page rejected (its message says why) or timed out."""


class Driver:
    """drive.js as a child process: call(js) evaluates an expression in the page and returns its
    (awaited, JSON) value."""

    def __init__(self, node, config):
        self.proc = subprocess.Popen([node, os.path.join(HERE, "drive.js"), json.dumps(config)],
                                     cwd=HERE, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.replies = {}
        self.ready = None
        self.lines = []  # drive.js's stderr: the page's console, errors, blocked requests
        self._cond = threading.Condition()
        self._eof = False
        self._ids = 0
        threading.Thread(target=self._read_out, daemon=True, name="drive-out").start()
        threading.Thread(target=self._read_err, daemon=True, name="drive-err").start()

    def _read_out(self):
        for raw in iter(self.proc.stdout.readline, b""):
            try:
                msg = json.loads(raw)
            except ValueError:
                msg = {"junk": raw.decode("utf-8", "replace")}
            with self._cond:
                if msg.get("ready"):
                    self.ready = msg
                elif "id" in msg:
                    self.replies[msg["id"]] = msg
                else:
                    self.lines.append("stdout: %r" % msg)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_err(self):
        for raw in iter(self.proc.stderr.readline, b""):
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def log_text(self):
        with self._cond:
            return "\n".join(self.lines)

    def _wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred():
                left = deadline - time.monotonic()
                if self._eof:
                    raise AssertionError("drive.js exited while waiting for %s (exit %s):\n%s"
                                         % (what, self.proc.poll(), "\n".join(self.lines)))
                if left <= 0:
                    raise AssertionError("timed out after %.0f s waiting for %s\n%s"
                                         % (timeout, what, "\n".join(self.lines[-30:])))
                self._cond.wait(left)

    def wait_ready(self, timeout):
        self._wait(lambda: self.ready is not None, timeout, "the page to load")
        return self.ready

    def request(self, op, timeout, **kw):
        with self._cond:
            self._ids += 1
            rid = self._ids
        self.proc.stdin.write((json.dumps(dict(kw, id=rid, op=op)) + "\n").encode())
        self.proc.stdin.flush()
        self._wait(lambda: rid in self.replies, timeout, "%s %s" % (op, kw))
        with self._cond:
            reply = self.replies.pop(rid)
        if "error" in reply:
            raise PageError("%s: %s" % (kw.get("expr", op), reply["error"]))
        return reply["ok"]

    def call(self, fn, *args, timeout_ms=PAGE_TIMEOUT_MS):
        """fn(*args) in the page (args as JSON), awaited; the page's timeouts are timeout_ms."""
        expr = "%s(%s)" % (fn, ", ".join(json.dumps(a) for a in args))
        return self.request("eval", timeout_ms / 1000.0 + CALL_SLACK, expr=expr)

    def screenshot(self, path):
        return self.request("screenshot", 20, path=path)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.request("close", 10)
            except (AssertionError, OSError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


def trust_args(certs, home):
    """Makes Chromium trust the test CA: an NSS database in the temporary HOME with the CA as
    a trusted root (the certificate chain and the name are then checked as for any site), or,
    without certutil (or with TERN_BROWSER_TRUST=spki), the SPKI hash of the server's key,
    which makes Chromium accept that one key's certificate."""
    how = os.environ.get("TERN_BROWSER_TRUST") or ("nss" if shutil.which("certutil") else "spki")
    if how == "none":  # a check of the check: every wss:// connection must fail then
        return how, []
    if how == "nss":
        db = os.path.join(home, ".pki", "nssdb")
        os.makedirs(db)
        run(["certutil", "-d", "sql:" + db, "-N", "--empty-password"], 30)
        run(["certutil", "-d", "sql:" + db, "-A", "-t", "C,,", "-n", "Tern Test CA",
             "-i", os.path.join(certs, "ca.pem")], 30)
        return how, []
    pub = run(["openssl", "x509", "-in", os.path.join(certs, "server.pem"), "-pubkey",
               "-noout"], 30)
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         stdout=subprocess.PIPE, check=True, timeout=30).stdout
    spki = base64.b64encode(hashlib.sha256(der).digest()).decode()
    return how, ["--ignore-certificate-errors-spki-list=" + spki]


# -- the test ---------------------------------------------------------------------------------------


class BrowserTest(unittest.TestCase):
    """One broker, one browser page and one paho and one stomp.py client for the whole class;
    each test makes its own page clients (named after it) and topics."""

    @classmethod
    def setUpClass(cls):
        cls.chromium = find_chromium()
        cls.node = shutil.which("node")
        npm = shutil.which("npm")
        missing = [n for n, p in (("chromium", cls.chromium), ("node", cls.node), ("npm", npm))
                   if not p]
        if missing:
            raise unittest.SkipTest("browser test needs %s (tools/deps installs them)"
                                    % " and ".join(missing))
        cls.failed = False
        try:
            cls._set_up(npm)
        except BaseException:
            cls.failed = True  # the class cleanups show the logs and keep the files
            raise

    @classmethod
    def _set_up(cls, npm):
        t0 = time.monotonic()
        cls.addClassCleanup(ensure_node_modules(npm).close)
        cls.npm_seconds = time.monotonic() - t0
        cls.tmp = tempfile.mkdtemp(prefix="tern-browser-")
        cls.addClassCleanup(cls._remove_tmp)
        build = os.environ.get("TERN_BUILD_DIR")
        cls.out_dir = os.path.join(build or cls.tmp, "browser-test")
        os.makedirs(cls.out_dir, exist_ok=True)
        cls.certs = os.path.join(cls.tmp, "certs")
        run(["sh", os.path.join(REPO, "tests", "tls", "mkcerts.sh"), cls.certs], 60)

        cls.is_mosquitto = harness.IS_MOSQUITTO
        cls.proxy = None
        if cls.is_mosquitto:
            cls.broker = MosquittoWS(cls.certs).start()
            cls.addClassCleanup(cls._stop_broker)
        elif os.environ.get("TERN_BROWSER_WS_PROXY") == "1":
            cls.broker = harness.Broker(stomp=True).start()
            cls.addClassCleanup(cls._stop_broker)
            cls.proxy = WsProxy(cls.node, cls.broker, cls.certs)
            cls.addClassCleanup(cls.proxy.stop)
            cls.broker.ws_port, cls.broker.wss_port = cls.proxy.ws_port, cls.proxy.wss_port
        else:
            cls.broker = start_ternd(cls.certs)
            cls.addClassCleanup(cls._stop_broker)
        cls.has_stomp = cls.broker.stomp_port is not None

        cls.httpd, cls.http_requests = start_http()
        cls.addClassCleanup(cls.httpd.server_close)
        cls.addClassCleanup(cls.httpd.shutdown)
        cls.origin = origin = "http://%s:%d" % (HOST, cls.httpd.server_address[1])

        home = os.path.join(cls.tmp, "home")
        os.makedirs(home)
        cls.trust, extra = trust_args(cls.certs, home)
        cls.driver = Driver(cls.node, {
            "url": origin + "/", "origin": origin, "chromium": cls.chromium, "home": home,
            "userDataDir": os.path.join(cls.tmp, "profile"), "timeoutMs": 20000,
            "extraArgs": extra})
        cls.addClassCleanup(cls._close_driver)
        cls.browser_version = cls.driver.wait_ready(40)["version"]

        # The Python side: paho on MQTT/TCP, stomp.py on STOMP/TCP.
        cls.paho = harness.Client(cls.broker, name="py-mqtt")
        cls.addClassCleanup(cls.paho.close)
        cls.paho.connect()
        cls.stomp = None
        if cls.has_stomp:
            cls.stomp = harness.StompClient(cls.broker, name="py-stomp")
            cls.addClassCleanup(cls.stomp.close)
            cls.stomp.connect()
        cls.prefix = "tb" + uuid.uuid4().hex[:8]
        sys.stderr.write("\n[browser test] %s%s via %s, Chromium %s, trust %s, npm ci %.1f s, "
                         "screenshots in %s\n" % (cls.broker.kind, " (ws_proxy.js)" if cls.proxy
                                                 else "", ", ".join(
                             "%s:%s" % (k, getattr(cls.broker, k + "_port", None))
                             for k in ("ws", "wss")), cls.browser_version, cls.trust,
                             cls.npm_seconds, cls.out_dir))

    # -- class cleanups (run in reverse order) ---------------------------------------------------

    @classmethod
    def _close_driver(cls):
        try:
            cls.driver.call("T.closeAll", 5000)
        except AssertionError as e:
            sys.stderr.write("[browser test] closing the page's clients: %s\n" % e)
        cls.driver.close()
        if cls.failed or KEEP:
            sys.stderr.write("\n----- drive.js / page console -----\n%s\n----- end -----\n"
                             % cls.driver.log_text())

    @classmethod
    def _stop_broker(cls):
        cls.broker.stop(show_log=cls.failed)

    @classmethod
    def _remove_tmp(cls):
        if KEEP or cls.failed:
            sys.stderr.write("[browser test] kept %s\n" % cls.tmp)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    # -- per test ----------------------------------------------------------------------------------

    def setUp(self):
        self._problems_before = self._problems()
        self._skips_before = self._skips()

    def tearDown(self):
        failed = self._problems() != self._problems_before
        if failed:
            type(self).failed = True
        skips = self._skips()[len(self._skips_before):]
        name = self.id().rsplit(".", 1)[-1]
        try:
            self.driver.call("T.result", skips[-1][1] if skips and not failed else not failed,
                             name)
            self.driver.screenshot(os.path.join(self.out_dir, name + ".png"))
        except AssertionError as e:
            sys.stderr.write("[browser test] screenshot after %s: %s\n" % (name, e))

    def _skips(self):
        result = getattr(getattr(self, "_outcome", None), "result", None)
        return list(getattr(result, "skipped", ()))

    def _problems(self):
        result = getattr(getattr(self, "_outcome", None), "result", None)
        return len(getattr(result, "failures", ())) + len(getattr(result, "errors", ()))

    # -- helpers -----------------------------------------------------------------------------------

    def page(self, fn, *args, **kw):
        return self.driver.call("T." + fn, *args, **kw)

    def url(self, scheme, path):
        return "%s://%s:%d%s" % (scheme, HOST, getattr(self.broker, scheme + "_port"), path)

    def topic(self, *parts):
        """An MQTT topic of this run and its STOMP destination (a/b == /topic/a.b)."""
        levels = (self.prefix,) + parts
        return "/".join(levels), "/topic/" + ".".join(levels)

    def need_stomp(self):
        if not self.has_stomp:
            self.skipTest("%s has no STOMP" % self.broker.kind)

    def page_next(self, name, ms=PAGE_TIMEOUT_MS):
        return self.page("next", name, ms, timeout_ms=ms)

    def assert_page_got(self, name, where, body, ms=PAGE_TIMEOUT_MS):
        """The next message client `name` received is `body` (bytes) on topic/destination
        `where`; checks length and SHA-256 always, the text too when the page kept it."""
        m = self.page_next(name, ms)
        got = m.get("topic") or m.get("destination")
        self.assertEqual(got, where, "%s received %r" % (name, m))
        self.assertEqual(m["length"], len(body), "%s: length of %r" % (name, m.get("body")))
        self.assertEqual(m["sha256"], sha256(body), "%s: content" % name)
        if len(body) <= 4096:
            self.assertEqual(m["body"], body.decode())
        return m

    def assert_paho_got(self, topic, body):
        m = self.paho.get()
        self.assertEqual((m.topic, len(m.payload), sha256(m.payload)),
                         (topic, len(body), sha256(body)), "paho got %r" % m)
        return m

    def assert_stomp_got(self, destination, body):
        f = self.stomp.get()
        self.assertEqual((f.get("destination"), len(f.body), sha256(f.body)),
                         (destination, len(body), sha256(body)), "stomp.py got %r" % f)
        return f

    def assert_quiet(self, *names):
        """The page clients are connected on their first WebSocket, with nothing unread."""
        for n in names:
            st = self.page("status", n)
            self.assertTrue(st["connected"], "%s not connected: %r" % (n, st))
            self.assertEqual(st["socketState"], 1, "%s socket not OPEN: %r" % (n, st))
            self.assertEqual(st["sockets"], 1, "%s reconnected: %r" % (n, st))
            bad = [e for e in st["events"] if re.search("close|error|offline|reconnect|lost",
                                                        e["type"])]
            self.assertEqual(bad, [], "%s: %r" % (n, st))
            self.assertEqual(self.page("pending", n), [], "%s: unexpected messages" % n)

    def mqtt_connect(self, name, url, opts=None, subprotocol="mqtt"):
        info = self.page("mqttConnect", name, url, opts or {})
        self.assertEqual(info["returnCode"], 0, info)
        self.assertEqual(info["subprotocol"], subprotocol, info)
        self.assertEqual(self.page("status", name)["offered"], [subprotocol])
        return info

    def stomp_connect(self, name, url, opts=None, version="1.2"):
        info = self.page("stompConnect", name, url, opts or {})
        self.assertEqual(info["version"], version, info)
        offered = ["v%s.stomp" % v.replace(".", "") for v in
                   (opts or {}).get("versions", ["1.2", "1.1", "1.0"])]
        self.assertEqual(self.page("status", name)["offered"], offered)
        self.assertEqual(info["subprotocol"], offered[0], info)
        return info

    # -- the tests -----------------------------------------------------------------------------------

    def exchange(self, scheme):
        """mqtt.js (3.1.1, subprotocol mqtt) and STOMP.js (1.2, defaults) on `scheme`, both ways
        with paho and stomp.py, across protocols, browser to browser, and 200 KiB messages."""
        self.page("phase", "%s: mqtt.js and STOMP.js <-> paho and stomp.py" % scheme)
        m, s, big = "m-" + scheme, "s-" + scheme, "big-" + scheme
        to_m, _ = self.topic(scheme, "to-mqtt-page")
        to_s, to_s_dest = self.topic(scheme, "to-stomp-page")
        back, back_dest = self.topic(scheme, "from-page")
        large, large_dest = self.topic(scheme, "large")

        self.paho.subscribe([(back, 1), (large, 1)])
        if self.has_stomp:
            self.stomp.subscribe(back_dest)
            self.stomp.subscribe(large_dest)

        # mqtt.js, defaults (MQTT 3.1.1, keepalive 60 s, subprotocol "mqtt"), on /mqtt.
        self.mqtt_connect(m, self.url(scheme, "/mqtt"))
        self.assertEqual(self.page("mqttSubscribe", m, to_m + "/#", 1), [1])
        body = ("paho to mqtt.js over %s" % scheme).encode()
        self.paho.publish(to_m + "/py", body, qos=1)
        self.assertEqual(self.assert_page_got(m, to_m + "/py", body)["qos"], 1)
        body = ("mqtt.js to paho over %s" % scheme).encode()
        self.page("mqttPublish", m, back, body.decode(), 1)
        self.assert_paho_got(back, body)
        if self.has_stomp:
            self.assert_stomp_got(back_dest, body)
        # 200 KiB from mqtt.js, and to it.
        sent = self.page("mqttPublish", m, large, {"pattern": LARGE, "seed": "m" + scheme}, 1)
        body = pattern(LARGE, "m" + scheme)
        self.assertEqual(sent["sha256"], sha256(body))
        self.assert_paho_got(large, body)
        if self.has_stomp:
            self.assert_stomp_got(large_dest, body)
        body = pattern(LARGE, "p" + scheme)
        self.paho.publish(to_m + "/large", body, qos=1)
        self.assert_page_got(m, to_m + "/large", body)

        if not self.has_stomp:
            self.assert_quiet(m)
            return
        # STOMP.js, defaults (1.2 offered first, heart-beat 10000,10000, no host header), on
        # /stomp.
        info = self.stomp_connect(s, self.url(scheme, "/stomp"))
        self.assertTrue(info["heartBeat"] and "0,0" != info["heartBeat"], info)
        self.page("stompSubscribe", s, to_s_dest)
        body = ("stomp.py to STOMP.js over %s" % scheme).encode()
        self.stomp.send(to_s_dest, body, receipt=True)
        self.assert_page_got(s, to_s_dest, body)
        body = ("paho to STOMP.js over %s" % scheme).encode()
        self.paho.publish(to_s, body, qos=1)
        self.assert_page_got(s, to_s_dest, body)
        body = ("mqtt.js to STOMP.js over %s" % scheme).encode()
        self.page("mqttPublish", m, to_s, body.decode(), 1)
        self.assert_page_got(s, to_s_dest, body)
        body = ("STOMP.js to paho and stomp.py over %s" % scheme).encode()
        self.page("stompSend", s, back_dest, body.decode())
        self.assert_paho_got(back, body)
        self.assert_stomp_got(back_dest, body)
        body = ("STOMP.js to mqtt.js over %s" % scheme).encode()
        self.page("stompSend", s, "/topic/%s.%s.to-mqtt-page.stomp" % (self.prefix, scheme),
                  body.decode())
        self.assert_page_got(m, to_m + "/stomp", body)

        # 200 KiB from STOMP.js split into 8 KiB WebSocket messages (splitLargeFrames), on /ws;
        # and 200 KiB from stomp.py to STOMP.js.
        self.stomp_connect(big, self.url(scheme, "/ws"), {"splitLargeFrames": True})
        sent = self.page("stompSend", big, large_dest, {"pattern": LARGE, "seed": "s" + scheme})
        body = pattern(LARGE, "s" + scheme)
        self.assertEqual(sent["sha256"], sha256(body))
        self.assertGreaterEqual(sent["chunks"], LARGE // 8192, sent)
        self.assert_paho_got(large, body)
        self.assert_stomp_got(large_dest, body)
        body = pattern(LARGE, "q" + scheme)
        self.stomp.send(to_s_dest, body, receipt=True)
        self.assert_page_got(s, to_s_dest, body)
        self.assert_quiet(m, s, big)

    def test_1_ws(self):
        self.exchange("ws")

    def test_2_wss(self):
        self.exchange("wss")

    def test_3_mqtt_v31(self):
        """mqtt.js with protocolVersion 3 (MQIsdp) offers subprotocol mqttv3.1 only."""
        for scheme in ("ws", "wss"):
            with self.subTest(scheme=scheme):
                self.page("phase", "%s: mqtt.js MQTT 3.1 (MQIsdp, mqttv3.1)" % scheme)
                name = "m31-" + scheme
                t, dest = self.topic(scheme, "v31")
                self.paho.subscribe([(t + "/back", 1)])
                self.mqtt_connect(name, self.url(scheme, "/ws"),
                                  {"protocolVersion": 3, "protocolId": "MQIsdp"}, "mqttv3.1")
                self.assertEqual(self.page("mqttSubscribe", name, t, 1), [1])
                body = b"paho to MQTT 3.1 mqtt.js"
                self.paho.publish(t, body, qos=1)
                self.assert_page_got(name, t, body)
                body = b"MQTT 3.1 mqtt.js to paho"
                self.page("mqttPublish", name, t + "/back", body.decode(), 1)
                self.assert_paho_got(t + "/back", body)
                if self.has_stomp:
                    body = b"stomp.py to MQTT 3.1 mqtt.js"
                    self.stomp.send(dest, body, receipt=True)
                    self.assert_page_got(name, t, body)
                self.assert_quiet(name)

    def test_4_mqtt_v5(self):
        """mqtt.js with protocolVersion 5 (subprotocol mqtt). ternd has no MQTT 5 yet (it
        refuses a v5 CONNECT): skipped then, with what mqtt.js saw."""
        self.page("phase", "ws: mqtt.js MQTT 5")
        name = "m5-ws"
        t, _ = self.topic("ws", "v5")
        try:
            self.page("mqttConnect", name, self.url("ws", "/mqtt"), {"protocolVersion": 5})
        except PageError as e:
            if not self.is_mosquitto:
                self.skipTest("ternd refused MQTT 5 (no MQTT 5 yet): %s"
                              % str(e).split("\n")[0].rsplit(": Error: ", 1)[-1])
            raise
        self.assertEqual(self.page("mqttSubscribe", name, t, 1), [1])
        body = b"paho to MQTT 5 mqtt.js"
        self.paho.publish(t, body, qos=1)
        self.assert_page_got(name, t, body)
        self.paho.subscribe([(t + "/back", 1)])
        body = b"MQTT 5 mqtt.js to paho"
        self.page("mqttPublish", name, t + "/back", body.decode(), 1)
        self.assert_paho_got(t + "/back", body)
        self.assert_quiet(name)

    def test_5_stomp_versions(self):
        """STOMP.js offering only 1.1 (v11.stomp) or only 1.0 (v10.stomp)."""
        self.need_stomp()
        for versions, path in ((["1.1"], "/stomp"), (["1.0"], "/ws")):
            v = versions[0]
            with self.subTest(version=v):
                self.page("phase", "ws: STOMP.js %s only" % v)
                name = "s%s-ws" % v.replace(".", "")
                t, dest = self.topic("ws", "stomp" + v.replace(".", ""))
                self.stomp_connect(name, self.url("ws", path), {"versions": versions}, v)
                self.page("stompSubscribe", name, dest)
                body = ("stomp.py to STOMP.js %s" % v).encode()
                self.stomp.send(dest, body, receipt=True)
                self.assert_page_got(name, dest, body)
                self.paho.subscribe([(t + "/back", 1)])
                body = ("STOMP.js %s to paho" % v).encode()
                self.page("stompSend", name, dest + ".back", body.decode())
                self.assert_paho_got(t + "/back", body)
                self.assert_quiet(name)

    def test_6_idle_keepalive(self):
        """mqtt.js and STOMP.js connections left idle on ws and wss stay up: STOMP.js and the
        broker exchange heart-beats (10 s each way, asked for by STOMP.js's defaults; each side
        gives up after 20 s without), mqtt.js sends PINGREQ (a client with keepalive 5 s shows
        them; the default 60 s one just stays up). Waits for two heart-beats each way on every
        STOMP connection (about 20 s idle) and three PINGRESPs, then exchanges a message."""
        self.page("phase", "idle: heart-beats and PINGREQ over ws and wss")
        spec = {}
        names = []
        back, back_dest = self.topic("idle-back")
        self.paho.subscribe([(back + "/#", 1)])
        for scheme in ("ws", "wss"):
            t, dest = self.topic("idle", scheme)
            m, k, s = "idle-m-" + scheme, "idle-k-" + scheme, "idle-s-" + scheme
            self.mqtt_connect(m, self.url(scheme, "/mqtt"))
            self.mqtt_connect(k, self.url(scheme, "/mqtt"), {"keepalive": 5})
            self.assertEqual(self.page("mqttSubscribe", m, t, 1), [1])
            self.assertEqual(self.page("mqttSubscribe", k, t, 1), [1])
            spec[m] = {}
            spec[k] = {"pingreqs": 3, "pingresps": 3}
            names += [(m, t), (k, t)]
            if self.has_stomp:
                self.stomp_connect(s, self.url(scheme, "/stomp"))
                self.page("stompSubscribe", s, dest)
                spec[s] = {"pings": 2, "pongs": 2}
                names.append((s, dest))
        t0 = time.monotonic()
        done = self.page("waitCounters", spec, IDLE_TIMEOUT_MS, timeout_ms=IDLE_TIMEOUT_MS)
        idle = time.monotonic() - t0
        sys.stderr.write("[browser test] idle %.1f s: %s\n" % (idle, json.dumps(done["counts"])))
        self.assertGreaterEqual(idle, 12 if self.has_stomp else 10, done)
        self.assert_quiet(*[n for n, _ in names])
        # Still exchanging messages, both ways, on every connection.
        for scheme in ("ws", "wss"):
            t, _ = self.topic("idle", scheme)
            body = ("after idle on %s" % scheme).encode()
            self.paho.publish(t, body, qos=1)
            for n, where in names:
                if n.endswith("-" + scheme):
                    self.assert_page_got(n, where, body)
        for n, _ in names:
            body = ("%s still up" % n).encode()
            if n.startswith("idle-s-"):
                self.page("stompSend", n, "%s.%s" % (back_dest, n), body.decode())
            else:
                self.page("mqttPublish", n, "%s/%s" % (back, n), body.decode(), 1)
            self.assert_paho_got("%s/%s" % (back, n), body)
        if not self.is_mosquitto:
            self.assertEqual(self.broker.count_log("STOMP-HEARTBEAT|KEEPALIVE|TIMEOUT"), 0,
                             self.broker.log_text())

    def test_7_allowed_origins(self):
        """A ws:// listener with allowed_origins (config file) takes the page's Origin when it is
        listed and refuses the WebSocket handshake when it is not (a browser always sends
        Origin; a separate ternd for each case)."""
        if self.is_mosquitto or self.proxy:
            self.skipTest("ternd's own WebSocket listeners only")
        other = "https://app.example.com"
        for allowed, ok in (([other, self.origin], True), ([other], False)):
            with self.subTest(allowed=allowed):
                self.page("phase", "ws listener with allowed_origins %s" % allowed)
                conf = os.path.join(self.tmp, "origins-%d.conf" % len(allowed))
                with open(conf, "w") as f:
                    f.write("listeners:\n  - url: ws://%s:0\n    allowed_origins:\n" % HOST
                            + "".join('      - "%s"\n' % o for o in allowed))
                b = harness.Broker(listeners=0, extra_args=["-c", conf])
                b.start()
                self.addCleanup(b.stop, show_log=False)
                line = b.wait_log(r"TERN-READY.* ws://127\.0\.0\.1:\d+")[0]
                url = "ws://%s:%s" % (HOST, re.search(r" ws://127\.0\.0\.1:(\d+)", line).group(1))
                m, s = "om-%d" % len(allowed), "os-%d" % len(allowed)
                if ok:
                    self.mqtt_connect(m, url + "/mqtt")
                    self.stomp_connect(s, url + "/stomp")
                    self.assert_quiet(m, s)
                    self.page("close", [m, s])
                else:
                    with self.assertRaises(PageError):
                        self.page("mqttConnect", m, url + "/mqtt", {})
                    with self.assertRaises(PageError):
                        self.page("stompConnect", s, url + "/stomp", {})
                    for n in (m, s):
                        st = self.page("status", n)
                        self.assertIsNone(st["connectInfo"], st)
                        self.assertFalse(st["subprotocol"], st)  # the WebSocket never opened
                    b.wait_log(r"WS-ORIGIN .*'%s' is not allowed" % re.escape(self.origin),
                               count=2)
                b.stop()

    @harness.mosquitto_differs("it closes after an MQTT DISCONNECT without a WebSocket Close "
                               "frame (code 1006)")
    def test_8_close_handshake(self):
        """A client that says goodbye (MQTT DISCONNECT; STOMP DISCONNECT, RECEIPT) sees the
        WebSocket closing handshake end the connection [RFC 6455 7.1.1, 7.1.5]: wasClean, code
        1000 or 1005 (no status), not 1006 (TCP gone without a Close frame)."""
        for scheme in ("ws", "wss"):
            with self.subTest(scheme=scheme):
                self.page("phase", "%s: goodbye and the WebSocket closing handshake" % scheme)
                names = ["bye-m-" + scheme]
                self.mqtt_connect(names[0], self.url(scheme, "/mqtt"))
                if self.has_stomp:
                    names.append("bye-s-" + scheme)
                    self.stomp_connect(names[1], self.url(scheme, "/stomp"))
                self.page("close", names)
                closes = self.page("waitClosed", names)
                bad = {n: c for n, c in closes.items()
                       if not (c["wasClean"] and c["code"] in (1000, 1005))}
                self.assertEqual(bad, {}, "closed without a closing handshake")

    def test_9_screenshot_and_origin(self):
        """The page loaded both libraries from the local server only; a screenshot is saved."""
        self.assertIn("/node_modules/mqtt/dist/mqtt.min.js", self.http_requests)
        self.assertIn("/node_modules/@stomp/stompjs/bundles/stomp.umd.min.js", self.http_requests)
        self.assertNotIn("BLOCKED", self.driver.log_text())
        self.page("render")
        path = os.path.join(self.out_dir, "tern-browser.png")
        self.driver.screenshot(path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        sys.stderr.write("[browser test] screenshot: %s\n" % path)


if __name__ == "__main__":
    unittest.main()
