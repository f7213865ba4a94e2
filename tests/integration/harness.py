"""Shared harness for Tern's integration tests: a real broker, real clients, 127.0.0.1 only.

The broker under test is ternd (env TERND, the path of the binary) or, with BROKER=mosquitto, the
Debian mosquitto as a reference broker, so the tests themselves can be checked before ternd exists.

Contract with ternd (see tests/integration/CMakeLists.txt):
  ternd --listen mqtt://127.0.0.1:0 --data DIR [--log-level LEVEL]
  - port 0: ternd picks a free port and, once listening, logs to stderr one line per listener
    containing `TERN-READY` and then ` mqtt://127.0.0.1:PORT`;
  - SIGTERM: ternd shuts down and exits 0. Anything else (a crash, a sanitizer report, a leak)
    fails the test that owned the broker, with the broker's stderr printed.

Waiting is done on events (paho callbacks, queues, conditions, socket reads) with timeouts; no
test sleeps to let something happen. Run the tests with /usr/bin/python3 (it has paho-mqtt 1.6.1).

Environment:
  BROKER=mosquitto   test against /usr/sbin/mosquitto instead of ternd
  TERND=PATH         the ternd binary (required unless BROKER=mosquitto)
  TERN_LOG_LEVEL=L   pass --log-level L to ternd (e.g. debug)
  TERN_IT_NO_SKIP=1  with BROKER=mosquitto, also run the tests marked as skipped for it
  TERN_IT_KEEP=1     keep the broker's data directory and always print its log at stop
"""

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

import paho.mqtt.client as paho

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

    def __init__(self, kind=None, listeners=1, data_dir=None, extra_args=()):
        """listeners: how many `--listen mqtt://127.0.0.1:0` (ternd only); data_dir: a given
        --data folder (by default a new temporary one, removed after a clean stop);
        extra_args: more ternd options."""
        self.kind = kind or BROKER_KIND
        self.listeners = listeners
        self.extra_args = list(extra_args)
        self.port = None  # the first listener's
        self.ports = []
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
        cmd += ["--data", self.data_dir] + self.extra_args
        if os.environ.get("TERN_LOG_LEVEL"):
            cmd += ["--log-level", os.environ["TERN_LOG_LEVEL"]]
        env = dict(os.environ)
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        self._ready_re = re.compile(r"TERN-READY.* mqtt://127\.0\.0\.1:(\d+)")
        self._spawn(cmd, env)
        self.ports = [int(m.group(1)) for m in self._wait_ready(self.listeners)]
        self.port = self.ports[0]

    def _start_mosquitto(self):
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
        return "tcp://%s:%d" % (HOST, self.port)


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
        self.mqtt.connect(HOST, self.port, keepalive)
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
        self.sock = socket.create_connection((HOST, port or broker.port), timeout=timeout)
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
