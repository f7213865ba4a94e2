"""Shared harness for Tern's integration tests: a real broker, real clients, 127.0.0.1 only.

The broker under test is ternd (env TERND, the path of the binary) or, with BROKER=mosquitto, the
Debian mosquitto as a reference broker, so the tests themselves can be checked before ternd exists.

Contract with ternd (see tests/integration/CMakeLists.txt):
  ternd --listen mqtt://127.0.0.1:0 [--listen stomp://127.0.0.1:0] [--listen amqp://127.0.0.1:0]
        --data DIR [--log-level L]
  - port 0: ternd picks a free port and, once listening, logs to stderr one line per listener
    containing `TERN-READY` and then ` mqtt://127.0.0.1:PORT` (` stomp://...`, ` amqp://...`);
  - SIGTERM: ternd shuts down and exits 0. Anything else (a crash, a sanitizer report, a leak)
    fails the test that owned the broker, with the broker's stderr printed.

Waiting is done on events (paho callbacks, queues, conditions, socket reads) with timeouts; no
test sleeps to let something happen. Run the tests with /usr/bin/python3 (it has paho-mqtt 1.6.1
and stomp.py 8).

STOMP (test_stomp.py): Broker(stomp=True) adds a STOMP listener (broker.stomp_port);
StompTestCase gives each test such a broker, StompClient (stomp.py, frames in queues) and
RawStomp (exact bytes). With STOMP_EXTERNAL the STOMP tests run against an already running
broker instead (the reference is ActiveMQ 5.17, whose STOMP Tern mimics); tests that restart or
kill the broker are skipped then (needs_broker_control).

AMQP 1.0 (test_amqp.py): Broker(amqp=True) adds an AMQP listener (broker.amqp_port); a
StompTestCase subclass with AMQP = True gets one too (its LIMITS still apply).

Environment:
  BROKER=mosquitto   test against /usr/sbin/mosquitto instead of ternd
  TERND=PATH         the ternd binary (required unless BROKER=mosquitto)
  TERN_LOG_LEVEL=L   pass --log-level L to ternd (e.g. debug)
  TERN_IT_NO_SKIP=1  with BROKER=mosquitto, also run the tests marked as skipped for it
  TERN_IT_KEEP=1     keep the broker's data directory and always print its log at stop
  STOMP_EXTERNAL=H:P the STOMP tests use the broker listening there and start none
  MQTT_EXTERNAL=H:P  with STOMP_EXTERNAL: that broker's MQTT port, for the cross-protocol tests
"""

import hashlib
import itertools
import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

import paho.mqtt.client as paho
import stomp

HOST = "127.0.0.1"
BROKER_KIND = os.environ.get("BROKER", "ternd")
IS_MOSQUITTO = BROKER_KIND == "mosquitto"
# TERN_IT_NO_SKIP=1 runs the Tern-only and known-to-differ tests against mosquitto too.
_SKIP_FOR_MOSQUITTO = IS_MOSQUITTO and os.environ.get("TERN_IT_NO_SKIP") != "1"

READY_TIMEOUT = 20.0  # ternd may be an AddressSanitizer build
STOP_TIMEOUT = 20.0
TIMEOUT = 10.0  # default wait for one event (a CONNACK, a message, a close)

# Sanitizer reports that fail a test even if the exit code was somehow 0.
SANITIZER_RE = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|"
                          r"WARNING: ThreadSanitizer")


def tern_only(reason):
    """Skip under BROKER=mosquitto: the test checks a Tern-specific behaviour."""
    return unittest.skipIf(_SKIP_FOR_MOSQUITTO, "Tern-specific: " + reason)


def mosquitto_differs(reason):
    """Skip under BROKER=mosquitto: Mosquitto 2.0 is known to get this wrong (checked)."""
    return unittest.skipIf(_SKIP_FOR_MOSQUITTO, "Mosquitto 2.0.11 is known to differ: " + reason)


_ids = itertools.count(1)


def unique_id(prefix="c"):
    """A client id unique in this run (MQTT 3.1.1 servers must accept 1-23 characters)."""
    return "%s-%d-%d" % (prefix[:8], os.getpid() % 100000, next(_ids))


def make_test_certs(prefix="tern-certs-"):
    """A new folder holding tests/tls/mkcerts.sh's test CA (ca.pem), server (server.pem/.key,
    localhost and 127.0.0.1), client (client.pem/.key) and rogue certificates."""
    folder = tempfile.mkdtemp(prefix=prefix)
    mkcerts = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tls", "mkcerts.sh")
    subprocess.run(["sh", mkcerts, folder], check=True, timeout=120, stdout=subprocess.DEVNULL)
    return folder


def varied_payload(n, seed):
    """n bytes that differ everywhere (a truncated or shifted copy does not compare equal)."""
    block = hashlib.sha256(seed).digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


def free_port():
    """A port that was free a moment ago (only used for mosquitto, which cannot pick one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class BrokerError(AssertionError):
    """The broker failed to start, crashed, or did not exit cleanly. An AssertionError, so
    unittest reports it as a test failure wherever it is raised (setUp, test or cleanup)."""


class Broker:
    """One broker process: start() waits until it listens, stop() checks it exits cleanly."""

    def __init__(self, kind=None, listeners=1, data_dir=None, extra_args=(), stomp=False,
                 amqp=False, listen=()):
        """listeners: how many `--listen mqtt://127.0.0.1:0` (ternd only); data_dir: a given
        --data folder (by default a new temporary one, removed after a clean stop);
        extra_args: more ternd options; stomp: also `--listen stomp://127.0.0.1:0` (ternd
        only), its port in stomp_port; amqp: also `--listen amqp://127.0.0.1:0` (ternd only),
        its port in amqp_port; listen: more schemes, each `--listen SCHEME://127.0.0.1:0`
        (e.g. "mqtts", "wss"), their ports in ports_by[SCHEME] (a list, in order) and by
        port_of(SCHEME) (the first)."""
        self.kind = kind or BROKER_KIND
        self.host = HOST
        self.listeners = listeners
        self.stomp = stomp
        self.amqp = amqp
        self.listen = list(listen)
        self.ports_by = {}
        self.extra_args = list(extra_args)
        self.port = None  # the first MQTT listener's
        self.ports = []  # the MQTT listeners'
        self.stomp_port = None
        self.amqp_port = None
        self.proc = None
        self.data_dir = data_dir
        self._own_data_dir = data_dir is None
        self._lines = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = None
        self._ready_re = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self):
        if self._own_data_dir:
            self.data_dir = tempfile.mkdtemp(prefix="tern-it-")
        if self.kind == "mosquitto":
            self._start_mosquitto()
        else:
            self._start_ternd()
        return self

    def _start_ternd(self):
        ternd = os.environ.get("TERND")
        if not ternd:
            raise BrokerError("set TERND=/path/to/ternd (or BROKER=mosquitto to test mosquitto)")
        cmd = [ternd]
        for _ in range(self.listeners):
            cmd += ["--listen", "mqtt://%s:0" % HOST]
        if self.stomp:
            cmd += ["--listen", "stomp://%s:0" % HOST]
        if self.amqp:
            cmd += ["--listen", "amqp://%s:0" % HOST]
        for scheme in self.listen:
            cmd += ["--listen", "%s://%s:0" % (scheme, HOST)]
        cmd += ["--data", self.data_dir] + self.extra_args
        if os.environ.get("TERN_LOG_LEVEL"):
            cmd += ["--log-level", os.environ["TERN_LOG_LEVEL"]]
        env = dict(os.environ)
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        self._ready_re = re.compile(r"TERN-READY.* ([a-z]+)://127\.0\.0\.1:(\d+)")
        self._spawn(cmd, env)
        found = self._wait_ready(self.listeners + int(self.stomp) + int(self.amqp)
                                 + len(self.listen))
        by_proto = {}
        for m in found:
            by_proto.setdefault(m.group(1), []).append(int(m.group(2)))
        self.ports_by = by_proto
        self.ports = by_proto.get("mqtt", [])
        self.port = self.ports[0] if self.ports else None
        self.stomp_port = by_proto["stomp"][0] if self.stomp and "stomp" in by_proto else None
        self.amqp_port = by_proto["amqp"][0] if self.amqp and "amqp" in by_proto else None
        if (len(self.ports) != self.listeners or (self.stomp and self.stomp_port is None)
                or (self.amqp and self.amqp_port is None)):
            self._kill()
            raise BrokerError("expected %d mqtt, %d stomp and %d amqp ready lines, got %r\n%s"
                              % (self.listeners, int(self.stomp), int(self.amqp), by_proto,
                                 self.log_text()))

    def port_of(self, scheme):
        """The port of the first `scheme` listener (see listen=)."""
        return self.ports_by[scheme][0]

    def _start_mosquitto(self):
        if self.stomp or self.amqp:
            raise BrokerError("mosquitto has no STOMP or AMQP (use STOMP_EXTERNAL for STOMP)")
        # The port is chosen here and can be taken by someone else before mosquitto binds it;
        # then mosquitto exits at once and we try another one.
        last = None
        for _ in range(5):
            port = free_port()
            conf = os.path.join(self.data_dir, "mosquitto.conf")
            with open(conf, "w") as f:
                f.write("listener %d %s\n" % (port, HOST))
                f.write("allow_anonymous true\n"
                        "persistence false\n"
                        "max_queued_messages 100000\n"
                        "max_inflight_messages 0\n"
                        # A size limit like the one ternd has, for test_badinput.
                        "max_packet_size 1048576\n"
                        "log_dest stderr\n"
                        "log_timestamp_format %Y-%m-%dT%H:%M:%S\n"
                        "user root\n")
            self._ready_re = re.compile(r"mosquitto version \S+ running")
            self._spawn(["mosquitto", "-c", conf], dict(os.environ))
            try:
                self._wait_ready(1)
                self.port = port
                self.ports = [port]
                self._probe_mosquitto()
                return
            except BrokerError as e:
                last = e
                if "Address already in use" not in self.log_text():
                    raise
        raise last

    def _probe_mosquitto(self):
        # Mosquitto installs its SIGTERM handler, logs "running" and only then sets its run
        # flag (src/mosquitto.c: `run = 1;` before the main loop), so a SIGTERM right after
        # that line can be lost (seen: no exit within 20 s). One CONNECT/CONNACK round trip
        # shows its main loop is running.
        r = RawClient(self)
        try:
            r.send(connect_packet(unique_id("probe")))
            p = r.recv_packet()
            if p.raw != b"\x20\x02\x00\x00":
                raise BrokerError("mosquitto answered the probe with %r" % p)
            r.send(DISCONNECT_BYTES)
            r.expect_closed()
        finally:
            r.close()

    def _spawn(self, cmd, env):
        with self._cond:
            self._lines = []
            self._eof = False
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env)
        self._reader = threading.Thread(target=self._drain, args=(self.proc.stderr,),
                                        name="broker-stderr", daemon=True)
        self._reader.start()

    def _drain(self, pipe):
        # Keeps reading stderr for the broker's whole life, so it never blocks on a full pipe.
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self._lines.append(line)
                self._cond.notify_all()
        pipe.close()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _wait_ready(self, count):
        """Wait for `count` ready lines; returns their regex matches."""
        deadline = time.monotonic() + READY_TIMEOUT
        seen = 0
        found = []
        with self._cond:
            while True:
                for line in self._lines[seen:]:
                    m = self._ready_re.search(line)
                    if m:
                        found.append(m)
                seen = len(self._lines)
                if len(found) >= count:
                    return found
                if self._eof:
                    self._cond.release()
                    try:
                        self._kill()
                    finally:
                        self._cond.acquire()
                    raise BrokerError("broker exited before it was ready (%s)\n%s"
                                      % (" ".join(self.cmd), "\n".join(self._lines)))
                left = deadline - time.monotonic()
                if left <= 0:
                    self._cond.release()
                    try:
                        self._kill()
                    finally:
                        self._cond.acquire()
                    raise BrokerError("broker not ready within %.0f s (%s)\n%s"
                                      % (READY_TIMEOUT, " ".join(self.cmd),
                                         "\n".join(self._lines)))
                self._cond.wait(left)

    def _kill(self):
        """Kill (if still running) and forget a broker that never became ready; stop() then
        has nothing more to report."""
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.kill()
        proc.wait(STOP_TIMEOUT)
        self._reader.join(STOP_TIMEOUT)

    def crash(self):
        """SIGKILL the broker (a crash: nothing flushed, no clean exit) and wait for it. The
        data folder is kept for the next start()."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.kill()
        proc.wait(STOP_TIMEOUT)
        self._reader.join(STOP_TIMEOUT)
        if SANITIZER_RE.search(self.log_text()):
            raise BrokerError("sanitizer report before the crash:\n" + self.log_text())

    def stop(self, show_log=False, sig=signal.SIGTERM):
        """Send sig (SIGTERM), wait, and raise BrokerError unless the broker exited 0 with no
        sanitizer report; then, and with show_log, print the broker's stderr. Idempotent."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        problem = None
        if proc.poll() is not None:
            problem = "broker died during the test with exit code %d" % proc.returncode
        else:
            proc.send_signal(sig)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
                problem = "broker did not exit within %.0f s of %s" % (STOP_TIMEOUT,
                                                                        signal.Signals(sig).name)
        self._reader.join(STOP_TIMEOUT)
        rc = proc.returncode
        if problem is None and rc != 0:
            problem = "broker exited with code %d after %s" % (rc, signal.Signals(sig).name)
        if problem is None and SANITIZER_RE.search(self.log_text()):
            problem = "sanitizer report in the broker's stderr"
        keep = os.environ.get("TERN_IT_KEEP") == "1"
        if problem or keep or show_log:
            sys.stderr.write("\n----- %s stderr (%s) -----\n%s\n----- end -----\n"
                             % (self.kind, self.data_dir, self.log_text()))
        if not problem and not keep and self._own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        if problem:
            raise BrokerError("%s (data dir %s)" % (problem, self.data_dir))

    def is_running(self):
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- log -------------------------------------------------------------------------------

    def log_lines(self):
        with self._cond:
            return list(self._lines)

    def log_text(self):
        return "\n".join(self.log_lines())

    def count_log(self, pattern):
        r = re.compile(pattern)
        return sum(1 for line in self.log_lines() if r.search(line))

    def wait_log(self, pattern, count=1, timeout=TIMEOUT):
        """Wait until `count` stderr lines match `pattern` (a regex); returns the lines."""
        r = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [line for line in self._lines if r.search(line)]
                if len(hits) >= count:
                    return hits
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    raise AssertionError("expected %d log line(s) matching %r, saw %d:\n%s"
                                         % (count, pattern, len(hits), "\n".join(self._lines)))
                self._cond.wait(left)

    @property
    def uri(self):
        """For Paho C."""
        return "tcp://%s:%d" % (self.host, self.port)


def _host_port(value, var):
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError("%s=%r: expected HOST:PORT" % (var, value))
    return host, int(port)


STOMP_EXTERNAL = os.environ.get("STOMP_EXTERNAL")
MQTT_EXTERNAL = os.environ.get("MQTT_EXTERNAL")


class ExternalBroker:
    """A broker this harness did not start (STOMP_EXTERNAL, MQTT_EXTERNAL): the same
    attributes as Broker where they make sense; it cannot be stopped, crashed or restarted."""

    kind = "external"

    def __init__(self):
        self.host, self.stomp_port = _host_port(STOMP_EXTERNAL, "STOMP_EXTERNAL")
        self.port = None
        if MQTT_EXTERNAL:
            mqtt_host, self.port = _host_port(MQTT_EXTERNAL, "MQTT_EXTERNAL")
            if mqtt_host != self.host:
                raise ValueError("STOMP_EXTERNAL and MQTT_EXTERNAL name different hosts")
        self.ports = [self.port] if self.port else []

    def start(self):
        return self

    def stop(self, show_log=False, sig=None):
        pass

    def is_running(self):
        return True

    def log_text(self):
        return ""


# -- paho client wrapper ------------------------------------------------------------------------


class Message:
    """What a subscriber saw, copied out of paho's MQTTMessage."""

    __slots__ = ("topic", "payload", "qos", "retain", "dup", "mid")

    def __init__(self, m):
        self.topic = m.topic
        self.payload = bytes(m.payload)
        self.qos = m.qos
        self.retain = bool(m.retain)
        self.dup = bool(m.dup)
        self.mid = m.mid

    def __repr__(self):
        return "Message(%r, %r, qos=%d, retain=%d)" % (self.topic, self.payload[:40], self.qos,
                                                       self.retain)


class Client:
    """A paho MQTT 3.1.1 client on its own network thread, with everything it receives in
    queues, so a test waits on events instead of sleeping. Make them with
    BrokerTestCase.client(), which also closes them at the end of the test."""

    def __init__(self, broker, client_id=None, clean_session=True, name="c", on_message=None,
                 port=None):
        self.broker = broker
        self.host = getattr(broker, "host", HOST)
        self.port = port or broker.port
        self.client_id = unique_id(name) if client_id is None else client_id
        self.mqtt = paho.Client(client_id=self.client_id, clean_session=clean_session,
                                protocol=paho.MQTTv311)
        self.messages = queue.Queue()
        self._on_message_hook = on_message
        self._cond = threading.Condition()
        self._connack = None
        self._subacks = {}
        self._unsubacks = set()
        self._published = set()
        self.published_count = 0
        self.disconnected = threading.Event()
        self.disconnect_rc = None
        self._marker_sub = False
        m = self.mqtt
        m.on_connect = self._on_connect
        m.on_message = self._on_message
        m.on_subscribe = self._on_subscribe
        m.on_unsubscribe = self._on_unsubscribe
        m.on_publish = self._on_publish
        m.on_disconnect = self._on_disconnect
        self._started = False

    # callbacks run on paho's thread
    def _on_connect(self, c, userdata, flags, rc):
        with self._cond:
            self._connack = (rc, bool(flags.get("session present", 0)))
            self._cond.notify_all()

    def _on_message(self, c, userdata, m):
        msg = Message(m)
        if self._on_message_hook:
            self._on_message_hook(msg)
        self.messages.put(msg)

    def _on_subscribe(self, c, userdata, mid, granted):
        with self._cond:
            self._subacks[mid] = list(granted)
            self._cond.notify_all()

    def _on_unsubscribe(self, c, userdata, mid):
        with self._cond:
            self._unsubacks.add(mid)
            self._cond.notify_all()

    def _on_publish(self, c, userdata, mid):
        with self._cond:
            self._published.add(mid)
            self.published_count += 1
            self._cond.notify_all()

    def _on_disconnect(self, c, userdata, rc):
        self.disconnect_rc = rc
        self.disconnected.set()
        with self._cond:
            self._cond.notify_all()

    def _wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s: timed out after %.1f s waiting for %s"
                                         % (self.client_id, timeout,
                                            what() if callable(what) else what))
                self._cond.wait(min(left, 1.0))

    # -- actions ------------------------------------------------------------------------------

    def connect(self, keepalive=60, will=None, timeout=TIMEOUT, expect_rc=0):
        """Connect and wait for the CONNACK; returns session_present. will is
        (topic, payload, qos, retain)."""
        if will:
            self.mqtt.will_set(*will)
        self._connack = None
        self.disconnected.clear()
        self.mqtt.connect(self.host, self.port, keepalive)
        if not self._started:
            self.mqtt.loop_start()
            self._started = True
        self._wait(lambda: self._connack is not None, timeout, "CONNACK")
        rc, session_present = self._connack
        if rc != expect_rc:
            raise AssertionError("%s: CONNACK rc %d, expected %d" % (self.client_id, rc,
                                                                      expect_rc))
        return session_present

    def subscribe(self, topics, timeout=TIMEOUT):
        """topics: [(filter, qos), ...] in one SUBSCRIBE; returns the granted QoS list."""
        rc, mid = self.mqtt.subscribe(list(topics))
        if rc != paho.MQTT_ERR_SUCCESS:
            raise AssertionError("subscribe failed: %s" % paho.error_string(rc))
        self._wait(lambda: mid in self._subacks, timeout, "SUBACK")
        with self._cond:
            return self._subacks.pop(mid)

    def unsubscribe(self, topics, timeout=TIMEOUT):
        rc, mid = self.mqtt.unsubscribe(list(topics))
        if rc != paho.MQTT_ERR_SUCCESS:
            raise AssertionError("unsubscribe failed: %s" % paho.error_string(rc))
        self._wait(lambda: mid in self._unsubacks, timeout, "UNSUBACK")

    def publish(self, topic, payload=b"", qos=0, retain=False, wait=True, timeout=TIMEOUT):
        """Publish; with wait, block until paho has completed the QoS flow (sent for QoS 0,
        PUBACK for 1, PUBCOMP for 2). Returns the mid."""
        info = self.mqtt.publish(topic, payload, qos, retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise AssertionError("publish failed: %s" % paho.error_string(info.rc))
        if wait:
            self._wait(lambda: info.mid in self._published, timeout, "publish of mid %d"
                       % info.mid)
        return info.mid

    def wait_published(self, count, timeout):
        """Wait until `count` publishes in total have completed their QoS flow."""
        self._wait(lambda: self.published_count >= count, timeout,
                   lambda: "%d completed publishes (have %d)" % (count, self.published_count))

    def get(self, timeout=TIMEOUT):
        """The next message; fails if none arrives within timeout."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("%s: no message within %.1f s" % (self.client_id, timeout))

    def get_n(self, n, timeout=TIMEOUT, idle=None):
        """The next n messages; fails after timeout in total, or after `idle` seconds
        without any message (a stall shows up sooner than the deadline)."""
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            left = deadline - time.monotonic()
            wait = max(min(left, idle or left), 0.001)
            try:
                out.append(self.messages.get(timeout=wait))
            except queue.Empty:
                why = "stalled: nothing for %.0f s" % idle if left > wait else \
                    "deadline %.0f s" % timeout
                raise AssertionError("%s: got %d of %d messages (%s); last ones: %r"
                                     % (self.client_id, len(out), n, why, out[-4:]))
        return out

    def until_marker(self, publisher, timeout=TIMEOUT):
        """Messages that arrive before a marker published now by `publisher`.

        This is how a test shows that something did NOT arrive without sleeping: the broker
        handles messages in order and writes them to each subscriber in order, so whatever it
        was going to deliver to us before this call goes out ahead of the marker. The marker
        is QoS 2 because paho hands a QoS 2 message to the application only on PUBREL: a QoS 1
        marker could overtake earlier QoS 2 messages whose PUBREL is still on its way (seen
        with ternd). The marker topic is this client's own, subscribed at QoS 2 on first use;
        a wildcard subscription of the test may see it too, which is skipped."""
        topic = "marker/" + self.client_id
        if not self._marker_sub:
            self.subscribe([(topic, 2)])
            self._marker_sub = True
        token = ("marker-%d" % next(_ids)).encode()
        publisher.publish(topic, token, qos=2, timeout=timeout)
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            try:
                m = self.messages.get(timeout=max(left, 0.001))
            except queue.Empty:
                raise AssertionError("%s: marker not received within %.1f s; before it: %r"
                                     % (self.client_id, timeout, seen))
            if m.topic == topic and m.payload == token:
                return seen
            if m.topic == topic:
                continue  # an older marker delivered again through a wildcard
            seen.append(m)

    def disconnect(self, timeout=TIMEOUT):
        """Send DISCONNECT and wait until paho has closed the socket."""
        if not self._started:
            return
        self.mqtt.disconnect()
        if not self.disconnected.wait(timeout):
            raise AssertionError("%s: disconnect not completed within %.1f s" % (self.client_id,
                                                                                 timeout))

    def close(self):
        """Idempotent: disconnect if connected, stop the network thread."""
        if self._started:
            try:
                self.mqtt.disconnect()
            except OSError:
                pass  # a test closed the socket under paho on purpose
            finally:
                self.mqtt.loop_stop()
                self._started = False


# -- raw socket MQTT (byte-exact) ---------------------------------------------------------------

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = range(8, 15)


def varint(n):
    """MQTT Remaining Length encoding (1-4 bytes)."""
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def mqtt_str(s):
    if isinstance(s, str):
        s = s.encode("utf-8")
    return struct.pack(">H", len(s)) + s


def packet(first_byte, body=b""):
    return bytes([first_byte]) + varint(len(body)) + body


def connect_packet(client_id="", clean=True, keepalive=60, will=None, proto_name=b"MQTT",
                   level=4, flags_extra=0):
    """CONNECT; will is (topic, payload, qos, retain)."""
    flags = 0x02 if clean else 0
    payload = mqtt_str(client_id)
    if will:
        topic, msg, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += mqtt_str(topic) + mqtt_str(msg)
    body = mqtt_str(proto_name) + bytes([level, flags | flags_extra]) + struct.pack(
        ">H", keepalive) + payload
    return packet(0x10, body)


def publish_packet(topic, payload=b"", qos=0, pid=None, retain=False, dup=False):
    fb = 0x30 | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
    body = mqtt_str(topic)
    if qos:
        body += struct.pack(">H", pid)
    return packet(fb, body + payload)


def subscribe_packet(pid, topics):
    body = struct.pack(">H", pid)
    for t, q in topics:
        body += mqtt_str(t) + bytes([q])
    return packet(0x82, body)


def unsubscribe_packet(pid, topics):
    return packet(0xA2, struct.pack(">H", pid) + b"".join(mqtt_str(t) for t in topics))


def ack_packet(kind, pid):
    """PUBACK, PUBREC, PUBREL (flags 0010) or PUBCOMP."""
    return packet((kind << 4) | (0x02 if kind == PUBREL else 0), struct.pack(">H", pid))


PINGREQ_BYTES = b"\xc0\x00"
PINGRESP_BYTES = b"\xd0\x00"
DISCONNECT_BYTES = b"\xe0\x00"


class Packet:
    """A packet read from the broker: the first byte split up, the body, and the whole bytes."""

    def __init__(self, first, body, raw):
        self.type = first >> 4
        self.flags = first & 0x0F
        self.body = body
        self.raw = raw

    @property
    def qos(self):
        return (self.flags >> 1) & 3

    @property
    def dup(self):
        return bool(self.flags & 0x08)

    @property
    def retain(self):
        return bool(self.flags & 0x01)

    def publish_fields(self):
        """(topic, pid or None, payload) of a PUBLISH."""
        assert self.type == PUBLISH, "not a PUBLISH: %r" % self.raw
        n = struct.unpack(">H", self.body[:2])[0]
        topic = self.body[2:2 + n].decode("utf-8")
        rest = self.body[2 + n:]
        if self.qos:
            return topic, struct.unpack(">H", rest[:2])[0], rest[2:]
        return topic, None, rest

    def __repr__(self):
        return "Packet(%s)" % self.raw[:64].hex(" ")


class RawClient:
    """A TCP connection to the broker for exact-byte tests: the test writes the bytes and
    reads back what the broker answers, including when and whether it closes."""

    def __init__(self, broker, timeout=TIMEOUT, port=None):
        self.sock = socket.create_connection((getattr(broker, "host", HOST), port or broker.port),
                                             timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""
        self.closed_by_peer = False

    def send(self, data):
        """Send; returns False if the broker had already closed the connection (which a
        bad-input test expects it may do mid-send)."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            self.closed_by_peer = True
            return False

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed_by_peer = True
            raise EOFError()
        self.buf += chunk

    def recv_exact(self, n, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            while len(self.buf) < n:
                self._fill(deadline)
        except socket.timeout:
            raise AssertionError("timed out waiting for %d bytes, have %r" % (n, self.buf))
        except EOFError:
            raise AssertionError("connection closed by the broker; wanted %d bytes, have %r"
                                 % (n, self.buf))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_packet(self, timeout=None):
        timeout = timeout or self.timeout
        first = self.recv_exact(1, timeout)
        length, mult, raw_len = 0, 1, b""
        for _ in range(4):
            b = self.recv_exact(1, timeout)
            raw_len += b
            length += (b[0] & 0x7F) * mult
            mult *= 128
            if not b[0] & 0x80:
                break
        body = self.recv_exact(length, timeout)
        return Packet(first[0], body, first + raw_len + body)

    def expect_closed(self, timeout=None):
        """Wait until the broker closes the connection; returns the bytes it sent before
        closing (not yet read). Fails if it is still open after timeout."""
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            while True:
                self._fill(deadline)
        except EOFError:
            data, self.buf = self.buf, b""
            return data
        except socket.timeout:
            raise AssertionError("broker did not close the connection within %.1f s (got %r)"
                                 % (timeout or self.timeout, self.buf))

    def connect(self, client_id=None, clean=True, keepalive=60, will=None):
        """CONNECT and expect CONNACK accepted; returns session_present."""
        self.send(connect_packet(unique_id("raw") if client_id is None else client_id, clean,
                                 keepalive, will))
        p = self.recv_packet()
        if p.type != CONNACK or len(p.body) != 2 or p.body[1] != 0:
            raise AssertionError("expected CONNACK accepted, got %r" % p)
        return bool(p.body[0] & 1)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# -- test case base -----------------------------------------------------------------------------


class BrokerTestCase(unittest.TestCase):
    """Each test gets its own broker (self.broker), started in setUp and stopped last; the
    test fails if the broker does not exit cleanly. Clients made through self.client() and
    self.raw() are closed before the broker stops."""

    def setUp(self):
        self.broker = Broker()
        self._problems_before = self._problems()
        self.addCleanup(self._stop_broker)
        self.broker.start()

    def _problems(self):
        # Failures and errors the runner has recorded so far (subtests included), read from
        # unittest's private outcome: a change means this test failed, so the broker's log
        # is printed with it.
        result = getattr(getattr(self, "_outcome", None), "result", None)
        return len(getattr(result, "failures", ())) + len(getattr(result, "errors", ()))

    def _stop_broker(self):
        self.broker.stop(show_log=self._problems() != self._problems_before)

    def client(self, name="c", connect=True, **kw):
        """A paho client (connected unless connect=False), closed at the end of the test."""
        c = Client(self.broker, name=name, **kw)
        self.addCleanup(c.close)
        if connect:
            c.connect()
        return c

    def raw(self, connect=False, port=None, **kw):
        """A raw-socket client (connected with RawClient.connect(**kw) if asked), closed at the
        end of the test."""
        r = RawClient(self.broker, port=port)
        self.addCleanup(r.close)
        if connect:
            r.connect(**kw)
        return r

    def assert_broker_up(self):
        """The broker still runs and a fresh client can connect, subscribe and receive."""
        self.assertTrue(self.broker.is_running(), "broker process exited")
        sub = self.client("up-sub")
        pub = self.client("up-pub")
        topic = "up/" + sub.client_id
        self.assertEqual(sub.subscribe([(topic, 1)]), [1])
        pub.publish(topic, b"still up", qos=1)
        m = sub.get()
        self.assertEqual((m.topic, m.payload, m.qos), (topic, b"still up", 1))
        sub.disconnect()
        pub.disconnect()


# -- STOMP --------------------------------------------------------------------------------------
# Spec: https://stomp.github.io/stomp-specification-1.2.html. Names follow ActiveMQ, which Tern
# mimics: /queue/NAME, /topic/NAME (levels separated by '.', wildcards '*' and '>'),
# /temp-queue/NAME, /temp-topic/NAME; activemq.* headers on SUBSCRIBE.


def unique_name(prefix="d"):
    """A destination name unique in this run and across runs against one external broker
    (a long-lived broker keeps queues, and messages a failed run left in them)."""
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


def needs_broker_control(reason):
    """Skip with STOMP_EXTERNAL: the test stops, kills or restarts the broker."""
    return unittest.skipIf(bool(STOMP_EXTERNAL), "needs its own broker (%s)" % reason)


class StompFrame:
    """A frame from the broker: command, headers (a dict; of a repeated header the first, which
    is the one that counts in 1.2), header_list (all, in wire order) and body (bytes)."""

    __slots__ = ("command", "headers", "header_list", "body")

    def __init__(self, command, headers, body=b"", header_list=None):
        self.command = command
        self.headers = dict(headers)
        self.header_list = list(header_list if header_list is not None else headers.items())
        self.body = body if isinstance(body, bytes) else str(body).encode("utf-8")

    def __getitem__(self, name):
        return self.headers[name]

    def get(self, name, default=None):
        return self.headers.get(name, default)

    def __repr__(self):
        return "StompFrame(%s, %r, %r)" % (self.command, self.headers, self.body[:60])


def stomp_frame(command, headers=(), body=b"", content_length=None):
    """A frame's bytes exactly as given: headers, a dict or (name, value) pairs, are written
    without escaping; content_length True adds the body's length, another value is written
    as it is (for bad-input tests); the NUL is added."""
    if isinstance(headers, dict):
        headers = list(headers.items())
    lines = [command] + ["%s:%s" % (n, v) for n, v in headers]
    if content_length is True:
        lines.append("content-length:%d" % len(body))
    elif content_length is not None:
        lines.append("content-length:%s" % content_length)
    if isinstance(body, str):
        body = body.encode("utf-8")
    return ("\n".join(lines) + "\n\n").encode("utf-8") + body + b"\x00"


class _StompListener(stomp.ConnectionListener):
    """stomp.py calls these on its receiver thread; everything goes to the StompClient."""

    def __init__(self, owner):
        self.owner = owner

    def on_connected(self, frame):
        self.owner._frame("CONNECTED", frame)

    def on_message(self, frame):
        self.owner._frame("MESSAGE", frame)

    def on_receipt(self, frame):
        self.owner._frame("RECEIPT", frame)

    def on_error(self, frame):
        self.owner._frame("ERROR", frame)

    def on_disconnected(self):
        self.owner._closed()


_STOMP_CLASSES = {"1.0": stomp.Connection10, "1.1": stomp.Connection11,
                  "1.2": stomp.Connection12}


class StompClient:
    """A stomp.py connection (1.0, 1.1 or 1.2) whose MESSAGE, RECEIPT and ERROR frames go to
    queues, so a test waits on events instead of sleeping. Frame-level methods take a
    `receipt` flag: with it the frame carries a receipt header and the call returns only once
    the broker's RECEIPT for it came (which is how a test knows a SUBSCRIBE is in place before
    it publishes). Make them with StompTestCase.stomp(), which closes them after the test."""

    def __init__(self, broker, version="1.2", name="s", port=None, heartbeats=(0, 0)):
        self.broker = broker
        self.version = version
        self.name = unique_id(name)
        self.host = getattr(broker, "host", HOST)
        self.port = port or broker.stomp_port
        kw = dict(host_and_ports=[(self.host, self.port)], auto_decode=False,
                  reconnect_attempts_max=1, timeout=TIMEOUT)
        if version != "1.0":
            kw["heartbeats"] = heartbeats
        self.conn = _STOMP_CLASSES[version](**kw)
        self.conn.set_listener("tern", _StompListener(self))
        self.messages = queue.Queue()
        self.errors = queue.Queue()
        self.connected = None  # the CONNECTED frame
        self.closed = threading.Event()  # the socket is closed (by either side)
        self._receipts = {}
        self._failed_receipts = {}  # receipt-id -> the ERROR frame that carried it
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._started = False

    # -- called on stomp.py's thread ----------------------------------------------------------

    def _frame(self, command, f):
        frame = StompFrame(command, f.headers, f.body or b"")
        if command == "MESSAGE":
            self.messages.put(frame)
        elif command == "ERROR":
            self.errors.put(frame)
        with self._cond:
            if command == "CONNECTED":
                self.connected = frame
            elif command == "RECEIPT":
                self._receipts[frame.get("receipt-id")] = frame
            elif command == "ERROR" and frame.get("receipt-id"):
                self._failed_receipts[frame.get("receipt-id")] = frame
            self._cond.notify_all()

    def _closed(self):
        self.closed.set()
        with self._cond:
            self._cond.notify_all()

    def _wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s: timed out after %.1f s waiting for %s%s"
                                         % (self.name, timeout, what, self._error_note()))
                self._cond.wait(min(left, 1.0))

    def _error_note(self):
        errs = list(self.errors.queue)
        return "; ERROR frames: %r" % errs if errs else ""

    def _receipt_header(self, headers, receipt):
        """headers (copied) plus a new receipt id if asked; returns (headers, id or None)."""
        headers = dict(headers or {})
        if not receipt:
            return headers, None
        rid = "%s-r%d" % (self.name, next(self._ids))
        headers["receipt"] = rid
        return headers, rid

    # -- actions ------------------------------------------------------------------------------

    def connect(self, headers=None, timeout=TIMEOUT):
        """CONNECT (1.0) or STOMP (1.1, 1.2, as stomp.py does) with accept-version; waits for
        CONNECTED and returns it, or fails on an ERROR or a close."""
        self.conn.connect(wait=False, headers=dict(headers or {}))
        self._started = True
        self._wait(lambda: self.connected is not None or not self.errors.empty()
                   or self.closed.is_set(), timeout, "CONNECTED")
        if self.connected is None:
            raise AssertionError("%s: no CONNECTED%s" % (self.name, self._error_note()))
        return self.connected

    def send(self, destination, body=b"", headers=None, receipt=False, timeout=TIMEOUT):
        """SEND (stomp.py adds content-length for a non-empty body); with receipt, wait for
        the broker's RECEIPT."""
        headers, rid = self._receipt_header(headers, receipt)
        self.conn.send(destination, body, headers=headers)
        self.wait_receipt(rid, timeout)

    def subscribe(self, destination, ack="auto", id=None, headers=None, receipt=True,
                  timeout=TIMEOUT):
        """SUBSCRIBE; returns the subscription id. Waits for a RECEIPT unless receipt=False."""
        sid = id or "%s-s%d" % (self.name, next(self._ids))
        headers, rid = self._receipt_header(headers, receipt)
        self.conn.subscribe(destination, id=sid, ack=ack, headers=headers)
        self.wait_receipt(rid, timeout)
        return sid

    def unsubscribe(self, id, headers=None, receipt=True, timeout=TIMEOUT):
        headers, rid = self._receipt_header(headers, receipt)
        self.conn.unsubscribe(id=id, headers=headers)
        self.wait_receipt(rid, timeout)

    def ack(self, msg, transaction=None, receipt=False, timeout=TIMEOUT):
        """ACK a MESSAGE frame the way its version says: 1.2 id = the MESSAGE's ack header;
        1.1 message-id and subscription; 1.0 message-id."""
        self._ack_frame("ACK", msg, transaction, receipt, timeout)

    def nack(self, msg, transaction=None, receipt=False, timeout=TIMEOUT):
        """NACK (1.1+), with the same headers as ack()."""
        self._ack_frame("NACK", msg, transaction, receipt, timeout)

    def _ack_frame(self, command, msg, transaction, receipt, timeout):
        headers, rid = self._receipt_header(None, receipt)
        if self.version == "1.2":
            headers["id"] = msg["ack"]
        else:
            headers["message-id"] = msg["message-id"]
            if self.version == "1.1":
                headers["subscription"] = msg["subscription"]
        if transaction:
            headers["transaction"] = transaction
        self.frame(command, headers)
        self.wait_receipt(rid, timeout)

    def begin(self, transaction, receipt=True, timeout=TIMEOUT):
        self._tx_frame("BEGIN", transaction, receipt, timeout)

    def commit(self, transaction, receipt=True, timeout=TIMEOUT):
        self._tx_frame("COMMIT", transaction, receipt, timeout)

    def abort(self, transaction, receipt=True, timeout=TIMEOUT):
        self._tx_frame("ABORT", transaction, receipt, timeout)

    def _tx_frame(self, command, transaction, receipt, timeout):
        headers, rid = self._receipt_header({"transaction": transaction}, receipt)
        self.frame(command, headers)
        self.wait_receipt(rid, timeout)

    def frame(self, command, headers=None, body=b""):
        """Any frame, through stomp.py (which escapes header values in 1.1 and 1.2)."""
        self.conn.send_frame(command, dict(headers or {}), body)

    def wait_receipt(self, rid, timeout=TIMEOUT):
        """The RECEIPT frame whose receipt-id is rid (None: nothing to wait for). Fails at
        once on an ERROR frame for rid or on a close."""
        if rid is None:
            return None
        self._wait(lambda: rid in self._receipts or rid in self._failed_receipts
                   or self.closed.is_set(), timeout, "RECEIPT %s" % rid)
        with self._cond:
            if rid in self._receipts:
                return self._receipts.pop(rid)
            if rid in self._failed_receipts:
                raise AssertionError("%s: ERROR instead of RECEIPT %s: %r"
                                     % (self.name, rid, self._failed_receipts[rid]))
        raise AssertionError("%s: connection closed before RECEIPT %s%s"
                             % (self.name, rid, self._error_note()))

    def get(self, timeout=TIMEOUT):
        """The next MESSAGE; fails if none arrives within timeout."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("%s: no MESSAGE within %.1f s%s" % (self.name, timeout,
                                                                     self._error_note()))

    def get_n(self, n, timeout=TIMEOUT):
        """The next n MESSAGEs, within timeout in total."""
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            try:
                out.append(self.messages.get(timeout=max(deadline - time.monotonic(), 0.001)))
            except queue.Empty:
                raise AssertionError("%s: got %d of %d MESSAGEs within %.1f s: %r%s"
                                     % (self.name, len(out), n, timeout, out,
                                        self._error_note()))
        return out

    def until_body(self, body, timeout=TIMEOUT):
        """MESSAGEs that arrive before the one with this body (not included). With a marker
        sent last to the same destination, this shows what did NOT arrive without sleeping:
        a broker keeps one producer's messages to one destination in order [1.2 "SEND"]."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                m = self.messages.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise AssertionError("%s: no MESSAGE %r within %.1f s; before it: %r%s"
                                     % (self.name, body, timeout, seen, self._error_note()))
            if m.body == body:
                return seen
            seen.append(m)

    def get_error(self, timeout=TIMEOUT):
        """The next ERROR frame."""
        try:
            return self.errors.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("%s: no ERROR frame within %.1f s" % (self.name, timeout))

    def expect_closed(self, timeout=TIMEOUT):
        if not self.closed.wait(timeout):
            raise AssertionError("%s: connection still open after %.1f s" % (self.name,
                                                                             timeout))

    def disconnect(self, timeout=TIMEOUT):
        """DISCONNECT with a receipt [1.2 "Connection Lingering"]: waits for the RECEIPT, then
        stomp.py closes the socket."""
        headers, rid = self._receipt_header(None, True)
        self.conn.send_frame("DISCONNECT", headers)
        receipt = self.wait_receipt(rid, timeout)
        self.expect_closed(timeout)
        return receipt

    def drop(self):
        """Close the socket without DISCONNECT (the client vanishes)."""
        if self._started and not self.closed.is_set():
            self.conn.transport.disconnect_socket()
        self.closed.wait(TIMEOUT)

    def close(self):
        """Idempotent: drop the connection if it is still open."""
        if self._started:
            try:
                self.drop()
            except OSError:
                pass
            self._started = False


class RawStomp(RawClient):
    """A TCP connection to the broker's STOMP port for exact-byte tests (bad input,
    heart-beats). Frames read back keep header values as on the wire (not unescaped). EOLs
    between frames count as heart-beats (including the optional EOLs after a frame, which
    look the same); their arrival times are kept in `eols` (time.monotonic())."""

    _HEAD_END = re.compile(rb"\r?\n\r?\n")

    def __init__(self, broker, timeout=TIMEOUT, port=None):
        super().__init__(broker, timeout, port or broker.stomp_port)
        self.eols = []
        self._fill_time = None

    def _fill(self, deadline):
        super()._fill(deadline)
        self._fill_time = time.monotonic()

    def send_frame(self, command, headers=(), body=b"", content_length=None):
        """See stomp_frame(); returns False if the broker had already closed."""
        return self.send(stomp_frame(command, headers, body, content_length))

    def _take_eols(self):
        while True:
            if self.buf.startswith(b"\n"):
                n = 1
            elif self.buf.startswith(b"\r\n"):
                n = 2
            else:
                return
            self.buf = self.buf[n:]
            self.eols.append(self._fill_time)

    def _parse(self):
        """A whole frame from the buffer, or None if more bytes are needed."""
        self._take_eols()
        m = self._HEAD_END.search(self.buf)
        if not m:
            return None
        lines = [l.rstrip(b"\r").decode("utf-8", "replace")
                 for l in self.buf[:m.start()].split(b"\n")]
        pairs = [tuple(l.split(":", 1)) if ":" in l else (l, "") for l in lines[1:]]
        headers = {}
        for n, v in pairs:
            headers.setdefault(n, v)
        start = m.end()
        if "content-length" in headers:
            end = start + int(headers["content-length"])
            if len(self.buf) <= end:
                return None
            if self.buf[end] != 0:
                raise AssertionError("no NUL after content-length body: %r" % self.buf)
        else:
            end = self.buf.find(b"\x00", start)
            if end < 0:
                return None
        frame = StompFrame(lines[0], headers, self.buf[start:end], pairs)
        self.buf = self.buf[end + 1:]
        return frame

    def recv_frame(self, timeout=None):
        """The next frame (EOLs before it are recorded as heart-beats)."""
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        try:
            while True:
                f = self._parse()
                if f:
                    return f
                self._fill(deadline)
        except socket.timeout:
            raise AssertionError("timed out after %.1f s waiting for a frame, have %r"
                                 % (timeout, self.buf))
        except EOFError:
            raise AssertionError("connection closed by the broker; wanted a frame, have %r"
                                 % self.buf)

    def wait_eols(self, n, timeout=None):
        """Wait until n EOLs (heart-beats) have arrived in all; returns their times. A frame
        arriving meanwhile fails the test."""
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        try:
            while True:
                f = self._parse()
                if f:
                    raise AssertionError("a %s frame while waiting for heart-beats: %r"
                                         % (f.command, f))
                if len(self.eols) >= n:
                    return self.eols[:n]
                self._fill(deadline)
        except socket.timeout:
            raise AssertionError("%d of %d heart-beats within %.1f s" % (len(self.eols), n,
                                                                         timeout))
        except EOFError:
            raise AssertionError("connection closed after %d of %d heart-beats"
                                 % (len(self.eols), n))

    def still_open(self, timeout):
        """True if the broker has not closed the connection within timeout (what it sends
        meanwhile is kept for recv_frame())."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._fill(deadline)
        except socket.timeout:
            return True
        except EOFError:
            return False

    def connect(self, version="1.2", headers=(), command="CONNECT"):
        """CONNECT (or STOMP) with accept-version (unless version is None) and host; fails
        unless CONNECTED comes back, which it returns."""
        h = [("accept-version", version)] if version else []
        h += [("host", "localhost")] + list(headers.items() if isinstance(headers, dict)
                                             else headers)
        self.send_frame(command, h)
        f = self.recv_frame()
        if f.command != "CONNECTED":
            raise AssertionError("expected CONNECTED, got %r" % f)
        return f


class StompTestCase(BrokerTestCase):
    """Each test gets a broker with a STOMP listener (and the MQTT one) in a data folder kept
    across restart_broker(), or, with STOMP_EXTERNAL, the external broker. Clients made
    through stomp(), raw_stomp() and client() are closed before the broker stops. A class's
    LIMITS (a dict) become ternd's `limits:` section; with AMQP = True the broker also has an
    AMQP listener (broker.amqp_port)."""

    LIMITS = {}
    AMQP = False

    def setUp(self):
        if STOMP_EXTERNAL:
            self.broker = ExternalBroker()
            return
        if IS_MOSQUITTO:
            self.skipTest("mosquitto has no STOMP; use STOMP_EXTERNAL for a reference broker")
        self.data_dir = tempfile.mkdtemp(prefix="tern-stomp-")
        extra = []
        if self.LIMITS:  # ternd's `limits:` for this class, through a config file
            conf = os.path.join(self.data_dir + "-conf")
            with open(conf, "w") as f:
                f.write("limits:\n" + "".join("  %s: %s\n" % kv for kv in self.LIMITS.items()))
            self.addCleanup(os.unlink, conf)
            extra = ["-c", conf]
        self.broker = Broker(stomp=True, amqp=self.AMQP, data_dir=self.data_dir,
                             extra_args=extra)
        self._problems_before = self._problems()
        self._stopped_cleanly = False
        self.addCleanup(self._remove_data)
        self.addCleanup(self._stop_broker)
        self.broker.start()

    def _stop_broker(self):
        super()._stop_broker()  # raises BrokerError on an unclean exit
        self._stopped_cleanly = True

    def _remove_data(self):
        # Kept after any failure, for a look at the journal.
        if (self._stopped_cleanly and self._problems() == self._problems_before
                and os.environ.get("TERN_IT_KEEP") != "1"):
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def stomp(self, version="1.2", connect=True, headers=None, name="s", heartbeats=(0, 0)):
        """A StompClient (connected with `headers` unless connect=False), closed after the
        test."""
        c = StompClient(self.broker, version=version, name=name, heartbeats=heartbeats)
        self.addCleanup(c.close)
        if connect:
            c.connect(headers)
        return c

    def raw_stomp(self, connect=False, version="1.2", headers=()):
        r = RawStomp(self.broker)
        self.addCleanup(r.close)
        if connect:
            r.connect(version, headers)
        return r

    def client(self, name="c", connect=True, **kw):
        if not self.broker.port:
            self.skipTest("no MQTT port (set MQTT_EXTERNAL with STOMP_EXTERNAL)")
        return super().client(name, connect, **kw)

    def restart_broker(self, crash=False):
        """Stop (SIGTERM, checked) or crash (SIGKILL) the broker and start it again on the
        same data folder; the ports change. Clients must be closed before."""
        if STOMP_EXTERNAL:
            raise AssertionError("restart_broker() with STOMP_EXTERNAL: mark the test "
                                 "needs_broker_control")
        if crash:
            self.broker.crash()
        else:
            self.broker.stop()
        self.broker.start()

    def assert_stomp_up(self):
        """The broker still serves STOMP: a new connection sends to a queue and receives."""
        if not STOMP_EXTERNAL:
            self.assertTrue(self.broker.is_running(), "broker process exited")
        c = self.stomp(name="up")
        q = "/queue/" + unique_name("up")
        c.subscribe(q)
        c.send(q, b"still up", receipt=True)
        self.assertEqual(c.get().body, b"still up")
        c.disconnect()
