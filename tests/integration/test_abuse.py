"""Abuse: clients that stop reading, leave in every way, flood, nest topics deeply, send garbage
first, or open too many connections. The broker must never let one of them hold back anybody
else for long, must keep its memory bounded, must log each kind of trouble without flooding the
log, and must stay up.

The behaviour asserted here is the contract of the flow-control / limits defect issue:
  1. flow control never sticks: a publisher held back by a stalled QoS 1 (or STOMP) subscriber
     gets all its PUBACKs (RECEIPTs) within 1 s of that subscriber leaving, however it leaves;
  2. QoS 0 is dropped only for slow consumers (behind for longer than slow_consumer_timeout),
     logged once per episode (SUB-QOS0-DROP ... SUB-SLOW-END), and they block nobody for long;
  3. retained messages sent on SUBSCRIBE go out under flow control, never dropped;
  4. max_topic_levels (200) for PUBLISH topics, SUBSCRIBE filters, will topics, STOMP
     destinations;
  5. a first packet that is not CONNECT closes the connection at once;
  6. a closing connection gets at most close_timeout to flush (NET-CLOSE-TIMEOUT);
  7. refused connections are logged at most once per second, with a count (NET-MAX-CONN).

The stalled clients are raw sockets with a small receive buffer that never read after their
SUBACK/RECEIPT. The kernel still takes up to 4 MiB (tcp_wmem) from the broker towards such a
client before the broker's own output buffer for it fills, so tests that need a broker-side
backlog send more than that, or wait for the log line that shows it. Nothing here sleeps to let
something happen: waits are on paho callbacks, socket reads, log lines and thread progress, each
with a timeout; "the publisher got stuck" is "no PUBACK for QUIET seconds" (nothing else signals
it). Counts are modest so the file stays well under ctest's 300 s with an AddressSanitizer ternd.
"""

import calendar
import math
import os
import re
import select
import shutil
import socket
import struct
import tempfile
import threading
import time
import unittest
import uuid

from harness import (BrokerTestCase, Broker, StompTestCase, RawClient, RawStomp, HOST,
                     IS_MOSQUITTO, TIMEOUT, PUBACK, PUBLISH, SUBACK, DISCONNECT_BYTES,
                     PINGREQ_BYTES, STOMP_EXTERNAL, connect_packet, mosquitto_differs,
                     needs_broker_control, publish_packet,
                     stomp_frame, subscribe_packet, tern_only, unique_id, unique_name, varint)

TERN = not IS_MOSQUITTO

# ASan keeps freed memory in a quarantine (256 MiB by default), so an ASan ternd's RSS grows with
# the traffic that went through it rather than with what it holds. A small quarantine keeps the
# memory bounds below meaningful; an ASAN_OPTIONS setting given by the caller still wins (later
# flags override earlier ones).
os.environ["ASAN_OPTIONS"] = "quarantine_size_mb=16:" + os.environ.get("ASAN_OPTIONS", "")

MAX_QUEUED = 1000  # limits.max_queued_messages (default)
MAX_INFLIGHT = 100  # limits.max_inflight (default)
SLOW_TIMEOUT = 1.0  # limits.slow_consumer_timeout (default, 1000 ms)
SMALL_RCVBUF = 4096  # a stalled client's SO_RCVBUF (the kernel doubles it)
QUIET = 1.0  # no acknowledgement for this long: the publisher is held back
ACK_LIMIT = 1.0  # the contract: every PUBACK/RECEIPT within 1 s of the subscriber leaving

# A broker log line's timestamp, e.g. 2026-12-07T12:55:54.558Z.
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z?\s")


# -- helpers ------------------------------------------------------------------------------------


def rss_mib(pid):
    """The resident set size of process pid, in MiB (VmRSS from /proc)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS for pid %d" % pid)


def is_asan(pid):
    try:
        with open("/proc/%d/maps" % pid) as f:
            return "libasan" in f.read()
    except OSError:
        return False


def levels(n, first=None):
    """An MQTT topic of exactly n levels: `first` (default "a"), then "a"s."""
    return "/".join([first or "a"] + ["a"] * (n - 1))


def stomp_levels(n, first=None):
    """A /topic/ destination of exactly n levels ('.' separated)."""
    return "/topic/" + ".".join([first or "a"] + ["a"] * (n - 1))


def log_seconds(line):
    """The broker's timestamp of a log line, in seconds since the epoch (as time.time())."""
    m = LOG_TIME.match(line)
    if not m:
        raise AssertionError("no timestamp in log line %r" % line)
    whole, _, frac = m.group(1).partition(".")
    t = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))  # ternd logs UTC
    return t + (float("0." + frac) if frac else 0.0)


def numbers_in(line, drop=()):
    """The whole numbers in a log line's message: after its log ID, without the peer address
    and the given strings (client ids, which contain digits)."""
    msg = line.split(None, 3)[-1]
    for s in drop:
        msg = msg.replace(s, " ")
    msg = re.sub(r"\d+\.\d+\.\d+\.\d+:\d+", " ", msg)
    return [int(x) for x in re.findall(r"\b\d+\b", msg)]


def small_rcvbuf_socket(host, port, rcvbuf=SMALL_RCVBUF):
    """A connected TCP socket whose receive buffer was made small before connecting (so the
    window it offers stays small)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(TIMEOUT)
    s.connect((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class StalledMqtt(RawClient):
    """A raw MQTT client with a small receive buffer; the test stops reading it after setup."""

    def __init__(self, broker, rcvbuf=SMALL_RCVBUF):  # pylint: disable=super-init-not-called
        self.sock = small_rcvbuf_socket(getattr(broker, "host", HOST), broker.port, rcvbuf)
        self.timeout = TIMEOUT
        self.buf = b""
        self.closed_by_peer = False


class StalledStomp(RawStomp):
    """A raw STOMP client with a small receive buffer; the test stops reading it after setup."""

    def __init__(self, broker, rcvbuf=SMALL_RCVBUF):  # pylint: disable=super-init-not-called
        self.sock = small_rcvbuf_socket(getattr(broker, "host", HOST), broker.stomp_port, rcvbuf)
        self.timeout = TIMEOUT
        self.buf = b""
        self.closed_by_peer = False
        self.eols = []
        self._fill_time = None


def leave(sock, how, disconnect_bytes):
    """The ways a client leaves. A socket with unread input cannot send a FIN by close() (Linux
    sends an RST then), so "fin" is shutdown(SHUT_WR): the broker reads EOF."""
    if how == "disconnect":
        sock.sendall(disconnect_bytes)
    elif how == "fin":
        sock.shutdown(socket.SHUT_WR)
    elif how == "rst":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    else:
        raise ValueError(how)


def wait_peer_gone(sock, timeout, probe):
    """Seconds until the broker has closed this connection, found without reading from it
    (reading would let the broker finish flushing): an RST, which the broker's kernel sends
    when it closes with our bytes unread or when a probe reaches a closed socket, or a FIN.
    A probe (`probe`, harmless bytes) goes out every 0.1 s. None if still open after timeout."""
    start = time.monotonic()
    deadline = start + timeout
    sock.setblocking(False)
    poller = select.poll()
    poller.register(sock, select.POLLERR | select.POLLHUP | select.POLLRDHUP)
    while True:
        try:
            sock.send(probe)
        except BlockingIOError:
            pass  # our send buffer is full: the broker is not reading; still open
        except OSError:  # EPIPE, ECONNRESET: gone
            return time.monotonic() - start
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        if poller.poll(max(min(left, 0.1), 0.001) * 1000):
            return time.monotonic() - start


class Reader(threading.Thread):
    """A raw MQTT subscriber reading on its own thread, as fast as it can (or not at all while
    paused). Payloads are b"%08d" sequence numbers (counted once each in `seen`) or markers
    starting with b"M"; QoS 1 PUBLISHes are PUBACKed. `max_gap` is the longest time between two
    reads that brought data, from the first data until the first marker."""

    def __init__(self, raw, capacity, paused=False, hiccup=None):
        """hiccup: (count, seconds): once `count` messages have arrived, stop reading for
        `seconds` (a deliberate stall, as a client busy elsewhere for a moment)."""
        super().__init__(name="reader", daemon=True)
        self.hiccup = hiccup
        self.raw = raw
        self.sock = raw.sock
        self.seen = bytearray(capacity)
        self.distinct = 0
        self.total = 0
        self.retained = 0
        self.qos = [0, 0, 0]
        self.markers = []
        self.max_gap = 0.0
        self.last_data = None
        self.tracking = True
        self.eof = False
        self.error = None
        self.done = False
        self.stopping = False
        self.go = threading.Event()
        if not paused:
            self.go.set()
        self.cond = threading.Condition()

    def pause(self):
        self.go.clear()

    def resume(self):
        self.go.set()

    def stop(self):
        self.stopping = True
        self.go.set()
        self.join(5.0)

    def run(self):
        buf = bytearray(self.raw.buf)  # what came with the SUBACK
        self.raw.buf = b""
        try:
            self.sock.settimeout(0.2)
            self._consume(buf)
            while not self.stopping:
                if not self.go.is_set():
                    self.go.wait(0.2)
                    continue
                try:
                    data = self.sock.recv(1 << 18)
                except socket.timeout:
                    continue
                except ConnectionResetError:
                    data = b""
                if not data:
                    self.eof = True
                    break
                now = time.monotonic()
                if self.tracking and self.last_data is not None:
                    self.max_gap = max(self.max_gap, now - self.last_data)
                self.last_data = now
                buf += data
                self._consume(buf)
                if self.hiccup and self.total >= self.hiccup[0]:
                    time.sleep(self.hiccup[1])
                    self.hiccup = None
                    self.last_data = None  # the gap we made is not the broker's
        except Exception as e:  # reported by the waits
            self.error = e
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def _consume(self, buf):
        """Parse the whole packets in buf (removed from it) and send the PUBACKs they need."""
        acks = memoryview(self._parse(buf))
        while acks and not self.stopping:
            try:
                acks = acks[self.sock.send(acks):]
            except socket.timeout:
                pass

    def _parse(self, buf):
        acks = bytearray()
        i, n = 0, len(buf)
        seen = self.seen
        cap = len(seen)
        while n - i >= 2:
            first = buf[i]
            j, length, mult = i + 1, 0, 1
            complete = False
            while j < n:
                b = buf[j]
                j += 1
                length += (b & 0x7F) * mult
                mult *= 128
                if b < 0x80:
                    complete = True
                    break
            if not complete or j + length > n:
                break
            end = j + length
            if first >> 4 == PUBLISH:
                qos = (first >> 1) & 3
                p = j + 2 + ((buf[j] << 8) | buf[j + 1])
                if qos:
                    acks += b"\x40\x02" + buf[p:p + 2]
                    p += 2
                payload = buf[p:end]
                with self.cond:
                    self.total += 1
                    self.qos[qos] += 1
                    if first & 1:
                        self.retained += 1
                    if payload[:1] == b"M":
                        self.markers.append(bytes(payload))
                        self.tracking = False
                    else:
                        seq = int(payload[:8])
                        if seq < cap and not seen[seq]:
                            seen[seq] = 1
                            self.distinct += 1
            i = end
        del buf[:i]
        with self.cond:
            self.cond.notify_all()
        return bytes(acks)

    def missing(self, lo, hi):
        return [k for k in range(lo, hi) if not self.seen[k]]

    def _wait(self, pred, timeout, what, idle=None):
        deadline = time.monotonic() + timeout
        last, since = self.total, time.monotonic()
        with self.cond:
            while not pred():
                now = time.monotonic()
                if self.total != last:
                    last, since = self.total, now
                why = None
                if self.error or self.done:
                    why = "reader ended (%s)" % (self.error or ("EOF" if self.eof else "stopped"))
                elif now >= deadline:
                    why = "deadline %.0f s" % timeout
                elif idle and now - since >= idle:
                    why = "stalled: nothing for %.0f s" % idle
                if why:
                    raise AssertionError("%s: %s; have %d distinct of %d messages"
                                         % (what, why, self.distinct, self.total))
                self.cond.wait(min(deadline - now, 0.5))

    def wait_marker(self, token, timeout):
        self._wait(lambda: token in self.markers, timeout, "marker %r" % token)

    def wait_distinct(self, count, timeout, idle):
        self._wait(lambda: self.distinct >= count, timeout, "%d messages" % count, idle)


class TimedSender(threading.Thread):
    """Publishes QoS 0 messages (`size` bytes, payload b"%08d" % seq) on a raw connection,
    `chunk` messages per sendall, recording when each chunk was taken: `max_gap` is the
    longest the publisher was blocked. Stops after `count` messages or when stop() is called."""

    def __init__(self, raw, topic, first, count, size, chunk=16):
        super().__init__(name="sender", daemon=True)
        self.sock = raw.sock
        self.head = publish_packet(topic, b"\x00" * size)[:-size]
        self.pad = b"p" * (size - 8)
        self.next = first
        self.end = first + count
        self.chunk = chunk
        self.max_gap = 0.0
        self.last_progress = None
        self.stopping = False
        self.error = None

    def stop(self):
        self.stopping = True
        self.join(10.0)

    def run(self):
        try:
            self.sock.settimeout(120.0)
            self.last_progress = time.monotonic()
            while self.next < self.end and not self.stopping:
                hi = min(self.next + self.chunk, self.end)
                data = b"".join(self.head + b"%08d" % k + self.pad for k in range(self.next, hi))
                self.sock.sendall(data)
                now = time.monotonic()
                self.max_gap = max(self.max_gap, now - self.last_progress)
                self.last_progress = now
                self.next = hi
        except Exception as e:
            self.error = e


class ReceiptCounter:
    """Counts RECEIPT frames read from a RawStomp in this thread; fails on any other frame."""

    def __init__(self, r):
        self.r = r
        self.count = 0

    def _read_until(self, deadline):
        """Read frames until deadline; raises socket.timeout then, EOFError on close."""
        while True:
            f = self.r._parse()  # pylint: disable=protected-access
            if f is not None:
                if f.command != "RECEIPT":
                    raise AssertionError("expected RECEIPTs, got %r" % f)
                self.count += 1
                return
            self.r._fill(deadline)  # pylint: disable=protected-access

    def until_quiet(self, quiet, limit):
        """The count once no RECEIPT came for `quiet` seconds (within `limit` in all)."""
        end = time.monotonic() + limit
        while True:
            if time.monotonic() > end:
                raise AssertionError("RECEIPTs never stopped within %.0f s (%d)" % (limit,
                                                                                  self.count))
            try:
                self._read_until(time.monotonic() + quiet)
            except socket.timeout:
                return self.count
            except EOFError:
                raise AssertionError("publisher's connection closed after %d RECEIPTs"
                                     % self.count)

    def until(self, n, timeout):
        deadline = time.monotonic() + timeout
        try:
            while self.count < n:
                self._read_until(deadline)
        except socket.timeout:
            pass
        except EOFError:
            raise AssertionError("publisher's connection closed after %d RECEIPTs" % self.count)
        return self.count


class Writer(threading.Thread):
    """sendall(data) on its own thread (through a dup of the socket, so the reader's timeouts
    do not apply to it): the broker may stop reading for a while."""

    def __init__(self, sock, data):
        super().__init__(name="writer", daemon=True)
        self.sock = sock.dup()
        self.sock.settimeout(120.0)
        self.data = data
        self.error = None

    def run(self):
        try:
            self.sock.sendall(self.data)
        except OSError as e:
            self.error = e

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def wait_acks_quiet(client, quiet, limit):
    """The number of completed publishes once none has completed for `quiet` seconds."""
    end = time.monotonic() + limit
    with client._cond:  # pylint: disable=protected-access
        last, since = client.published_count, time.monotonic()
        while True:
            now = time.monotonic()
            if client.published_count != last:
                last, since = client.published_count, now
            elif now - since >= quiet:
                return last
            if now > end:
                raise AssertionError("PUBACKs never stopped within %.0f s (%d)" % (limit, last))
            client._cond.wait(max(quiet - (now - since), 0.01))  # pylint: disable=protected-access


def mem_limit(limit_mib, asan):
    """A bound on RSS growth: ASan adds redzones (~25% on 1 KiB blocks) and its 16 MiB
    quarantine (see ASAN_OPTIONS above)."""
    return limit_mib * 1.25 + 24.0 if asan else limit_mib


class MemoryMixin:
    """RSS baseline after start, and the check against it."""

    def _mem_baseline(self):
        pid = self.broker.proc.pid
        self.asan = is_asan(pid)
        self.scale = 4.0 if self.asan else 1.0  # for waits that are not what is asserted
        self.rss0 = rss_mib(pid)

    def rss(self):
        return rss_mib(self.broker.proc.pid)

    def assert_rss_growth(self, limit_mib, what, rss=None):
        grew = (self.rss() if rss is None else rss) - self.rss0
        allowed = mem_limit(limit_mib, self.asan)
        self.assertLess(grew, allowed, "broker RSS grew %.1f MiB (from %.1f MiB) %s; allowed "
                        "%.1f MiB" % (grew, self.rss0, what, allowed))


class AbuseTestCase(MemoryMixin, BrokerTestCase):
    """A broker per test, with the class's LIMITS (ternd only: `-c FILE` with a limits: section;
    mosquitto keeps its harness settings)."""

    LIMITS = {}

    def setUp(self):
        args = []
        if self.LIMITS and TERN:
            conf_dir = tempfile.mkdtemp(prefix="tern-abuse-conf-")
            self.addCleanup(shutil.rmtree, conf_dir, True)
            conf = os.path.join(conf_dir, "abuse.conf")
            with open(conf, "w") as f:
                f.write("limits:\n")
                for key, value in self.LIMITS.items():
                    f.write("  %s: %s\n" % (key, value))
            args = ["-c", conf]
        self.broker = Broker(extra_args=args)
        self._problems_before = self._problems()
        self.addCleanup(self._stop_broker)
        self.broker.start()
        self._mem_baseline()

    def stalled(self, topic, qos, client_id=None, clean=True, keepalive=60):
        """A raw subscriber with a small receive buffer, subscribed; it is never read again."""
        s = StalledMqtt(self.broker)
        self.addCleanup(s.close)
        s.connect(client_id=client_id, clean=clean, keepalive=keepalive)
        s.send(subscribe_packet(1, [(topic, qos)]))
        p = s.recv_packet()
        self.assertEqual((p.type, p.body), (SUBACK, b"\x00\x01" + bytes([qos])))
        return s

    def reader(self, topic, qos, capacity, paused=False, small=False, client_id=None,
               hiccup=None):
        """A Reader subscribed to topic (SUBACK checked), running."""
        raw = StalledMqtt(self.broker, small) if small else RawClient(self.broker)
        self.addCleanup(raw.close)
        raw.connect(client_id=client_id)
        raw.send(subscribe_packet(1, [(topic, qos)]))
        p = raw.recv_packet()
        self.assertEqual((p.type, p.body), (SUBACK, b"\x00\x01" + bytes([qos])))
        r = Reader(raw, capacity, paused=paused, hiccup=hiccup)
        self.addCleanup(r.stop)
        r.start()
        return r

    def publisher(self):
        """A raw publisher, connected. (Its buffers stay at their defaults: a small SO_SNDBUF
        on loopback, whose MSS is 64 KiB, makes every write wait for a window probe.)"""
        return self.raw(connect=True)

    def marker(self, pub, topic, token, pid=1):
        """A QoS 1 marker on pub's raw connection; waits for its PUBACK (skipping the PUBACKs
        of earlier QoS 1 publishes, which use other packet ids)."""
        pub.sock.settimeout(TIMEOUT)
        pub.send(publish_packet(topic, token, qos=1, pid=pid))
        deadline = time.monotonic() + TIMEOUT * self.scale
        while True:
            p = pub.recv_packet(timeout=max(deadline - time.monotonic(), 0.01))
            self.assertEqual(p.type, PUBACK, "publisher got %r" % p)
            if p.body == struct.pack(">H", pid):
                return

    def run_sender(self, sender, stall_limit):
        """Start sender and wait for it; fail as soon as it makes no progress for
        stall_limit seconds (the publisher is blocked)."""
        sender.start()
        while sender.is_alive():
            sender.join(0.2)
            if sender.last_progress is not None and sender.is_alive():
                blocked = time.monotonic() - sender.last_progress
                if blocked > stall_limit:
                    self.fail("QoS 0 publisher blocked for more than %.1f s (after %d messages)"
                              % (blocked, sender.next))
        if sender.error:
            raise AssertionError("QoS 0 publisher failed: %r" % sender.error)


# -- 1. flow control never sticks ---------------------------------------------------------------


class FlowLeaveBase(AbuseTestCase):
    """A QoS 1 subscriber stops reading; its publisher (paho, 5000 in flight) is held back once
    the subscriber's queue is full (max_queued_messages + max_inflight). The subscriber leaves;
    every PUBACK the publisher still waits for arrives within 1 s."""

    N = 3000

    def stuck_publisher(self, clean, keepalive=60):
        topic = "abuse/flow/" + unique_id("t")
        cid = unique_id("stall")
        sub = self.stalled(topic, 1, client_id=cid, clean=clean, keepalive=keepalive)
        pub = self.client("flowpub", connect=False)
        pub.mqtt.max_inflight_messages_set(5000)
        pub.connect()
        payload = b"x" * 64
        for _ in range(self.N):
            pub.publish(topic, payload, qos=1, wait=False)
        acked = wait_acks_quiet(pub, QUIET, 30 * self.scale)
        self.assertLess(acked, self.N, "the publisher was never held back by the stalled "
                        "subscriber (all %d PUBACKs came)" % self.N)
        self.assertGreaterEqual(acked, MAX_QUEUED, "held back at %d PUBACKs, before the "
                                "subscriber's queue was full (max_queued_messages + "
                                "max_inflight = %d)" % (acked, MAX_QUEUED + MAX_INFLIGHT))
        return sub, pub, acked

    def assert_all_acks_within(self, pub, since, what):
        try:
            pub.wait_published(self.N, timeout=15 * self.scale)
        except AssertionError:
            self.fail("only %d of %d PUBACKs %.1f s after %s: the publisher stays stuck"
                      % (pub.published_count, self.N, time.monotonic() - since, what))
        elapsed = time.monotonic() - since
        self.assertLessEqual(elapsed, ACK_LIMIT, "the last PUBACK came %.2f s after %s"
                             % (elapsed, what))

    def leave_and_check(self, how, clean):
        sub, pub, acked = self.stuck_publisher(clean)
        rss_stuck = self.rss()
        t0 = time.monotonic()
        leave(sub.sock, how, DISCONNECT_BYTES)
        self.assert_all_acks_within(pub, t0, "the subscriber's %s (stuck at %d)"
                                    % (how.upper(), acked))
        self.assert_rss_growth(32, "while the publisher was held back", rss_stuck)
        self.assert_broker_up()

    def keepalive_and_check(self, clean):
        keepalive = 4  # ternd closes it after 6 s of silence; the stall check takes ~1.5 s
        sub, pub, acked = self.stuck_publisher(clean, keepalive=keepalive)
        self.assertEqual(self.broker.count_log(r"MQTT-KEEPALIVE"), 0,
                         "the keep-alive expired before the stall was seen: raise keepalive")
        self.broker.wait_log(r"MQTT-KEEPALIVE", timeout=1.5 * keepalive + 10 * self.scale)
        t0 = time.monotonic()
        self.assert_all_acks_within(pub, t0, "the broker closed the subscriber for its "
                                    "keep-alive (stuck at %d)" % acked)
        self.assert_rss_growth(32, "after the keep-alive close")
        self.assert_broker_up()


NO_FLOW_IN_MOSQUITTO = ("Mosquitto never makes a publisher wait for a subscriber (it queues "
                        "or drops), so there is no stall to recover from")


@tern_only(NO_FLOW_IN_MOSQUITTO)
class FlowLeaveCleanTest(FlowLeaveBase):
    def test_mqtt_disconnect_clean_session_releases_publisher(self):
        """A clean-session subscriber that stopped reading sends DISCONNECT: its publisher,
        held back until then, gets all its PUBACKs within 1 s."""
        self.leave_and_check("disconnect", clean=True)

    def test_mqtt_fin_clean_session_releases_publisher(self):
        """A stalled clean-session subscriber's socket is shut down (FIN, no DISCONNECT):
        the publisher gets all its PUBACKs within 1 s."""
        self.leave_and_check("fin", clean=True)

    def test_mqtt_rst_clean_session_releases_publisher(self):
        """A stalled clean-session subscriber's connection is reset (RST): the publisher gets
        all its PUBACKs within 1 s."""
        self.leave_and_check("rst", clean=True)

    def test_mqtt_keepalive_clean_session_releases_publisher(self):
        """A stalled clean-session subscriber also stops sending; ternd closes it after 1.5 x
        its keep-alive (MQTT-KEEPALIVE): the publisher gets all its PUBACKs within 1 s of
        that."""
        self.keepalive_and_check(clean=True)


@tern_only(NO_FLOW_IN_MOSQUITTO)
class FlowLeavePersistentTest(FlowLeaveBase):
    """The same with a persistent session (clean session 0): once it has left, its messages
    queue offline and no publisher waits for an offline session. A stalled persistent session
    also stops holding publishers back once it is a slow consumer (it then pages to the
    journal), so slow_consumer_timeout is set far out here: the leave must release them."""

    LIMITS = {"slow_consumer_timeout": 600000}

    def test_mqtt_disconnect_persistent_session_releases_publisher(self):
        """A stalled persistent-session subscriber sends DISCONNECT: the publisher gets all
        its PUBACKs within 1 s."""
        self.leave_and_check("disconnect", clean=False)

    def test_mqtt_fin_persistent_session_releases_publisher(self):
        """A stalled persistent-session subscriber's socket is shut down (FIN): all PUBACKs
        within 1 s."""
        self.leave_and_check("fin", clean=False)

    def test_mqtt_rst_persistent_session_releases_publisher(self):
        """A stalled persistent-session subscriber's connection is reset (RST): all PUBACKs
        within 1 s."""
        self.leave_and_check("rst", clean=False)

    def test_mqtt_keepalive_persistent_session_releases_publisher(self):
        """A stalled persistent-session subscriber is closed for its keep-alive: all PUBACKs
        within 1 s of that."""
        self.keepalive_and_check(clean=False)


@tern_only(NO_FLOW_IN_MOSQUITTO)
class SlowPersistentSessionTest(FlowLeaveBase):
    """A persistent session (clean session 0) that stops reading holds its QoS 1 publisher back
    only until it is a slow consumer (slow_consumer_timeout, 500 ms here); then its messages are
    paged to the journal, as if it were offline, and nothing is lost: when the client comes back
    it gets every one, in order."""

    LIMITS = {"slow_consumer_timeout": 500}
    N = 5000

    def test_stalled_persistent_session_pages_and_loses_nothing(self):
        """The publisher of 5,000 QoS 1 messages to a stalled persistent subscriber gets all
        its PUBACKs (never stuck at max_queued_messages + max_inflight), the broker logs the
        slow consumer, and the subscriber, reconnecting, receives all 5,000 in order."""
        topic = "abuse/slowpersist/" + unique_id("t")
        cid = unique_id("slowp")
        sub = self.stalled(topic, 1, client_id=cid, clean=False)
        pub = self.client("slowpub", connect=False)
        pub.mqtt.max_inflight_messages_set(5000)
        pub.connect()
        for i in range(self.N):
            pub.publish(topic, b"%d" % i, qos=1, wait=False)
        try:
            pub.wait_published(self.N, timeout=20 * self.scale)
        except AssertionError:
            self.fail("the publisher is stuck at %d of %d PUBACKs behind a stalled persistent "
                      "session" % (pub.published_count, self.N))
        self.broker.wait_log(r"SUB-QOS0-DROP", timeout=5 * self.scale)
        self.assert_rss_growth(32, "while the session was paging")
        leave(sub.sock, "rst", DISCONNECT_BYTES)
        back = self.client("slowp-back", client_id=cid, clean_session=False)
        # At least once: re-sent ones (DUP) may repeat, but the first copies come in order.
        deadline = time.monotonic() + 30 * self.scale
        seen, order = set(), []
        while len(seen) < self.N:
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail("only %d of %d messages came back after the slow episode"
                          % (len(seen), self.N))
            v = int(back.get(timeout=left).payload)
            if v not in seen:
                seen.add(v)
                order.append(v)
        self.assertEqual(order, list(range(self.N)), "messages out of order")
        self.assert_broker_up()


@tern_only(NO_FLOW_IN_MOSQUITTO)
@needs_broker_control("sets ternd's limits")
class StompQueueFlowTest(StompTestCase):
    """A named queue without consumers takes max_offline_messages (200 here), then its producer
    waits (its RECEIPTs stop); a consumer arrives and drains it, and every RECEIPT comes. Nothing
    is dropped and the queue does not grow past its limit."""

    LIMIT = 200
    LIMITS = {"max_offline_messages": LIMIT}
    N = 1000

    def test_full_queue_holds_its_producer_until_drained(self):
        """1,000 SENDs with receipts to a queue nobody consumes: the RECEIPTs stop near 200 (the
        producer waits, nothing is dropped); a consumer then gets all 1,000, in order, and the
        producer every RECEIPT."""
        dest = "/queue/" + unique_name("qflow")
        pub = self.raw_stomp(connect=True)
        data = b"".join(stomp_frame("SEND", [("destination", dest), ("receipt", "r%d" % i)],
                                    b"%d" % i, content_length=True) for i in range(self.N))
        writer = Writer(pub.sock, data)
        self.addCleanup(writer.close)
        writer.start()
        receipts = ReceiptCounter(pub)
        got = receipts.until_quiet(QUIET, 30)
        self.assertGreaterEqual(got, self.LIMIT, "held back before the queue was full")
        self.assertLess(got, self.N, "the producer was never held back by the full queue")
        con = self.stomp(name="drain")
        con.subscribe(dest)
        bodies = [con.get(timeout=30).body for _ in range(self.N)]
        self.assertEqual(bodies, [b"%d" % i for i in range(self.N)])
        self.assertEqual(receipts.until(self.N, 30), self.N)
        writer.join(5.0)
        self.assertIsNone(writer.error)


@needs_broker_control("reads the broker process's memory")
class StompFlowLeaveTest(MemoryMixin, StompTestCase):
    """The STOMP form of the above: SENDs with receipts to /topic/X behind a stalled subscriber
    of /topic/X (client-individual acks, prefetch 100, never reads); when it leaves, every
    RECEIPT arrives within 1 s."""

    N = 3000

    def setUp(self):
        super().setUp()
        self._mem_baseline()

    def run_leave(self, how):
        dest = "/topic/" + unique_name("flow")
        sub = StalledStomp(self.broker)
        self.addCleanup(sub.close)
        sub.connect()
        sub.send_frame("SUBSCRIBE", [("id", "1"), ("destination", dest),
                                     ("ack", "client-individual"),
                                     ("activemq.prefetchSize", "100"), ("receipt", "sub-1")])
        f = sub.recv_frame()
        self.assertEqual((f.command, f.get("receipt-id")), ("RECEIPT", "sub-1"))
        pub = self.raw_stomp(connect=True)
        body = b"y" * 64
        data = b"".join(stomp_frame("SEND", [("destination", dest), ("receipt", "r%d" % i)],
                                    body, content_length=True) for i in range(self.N))
        writer = Writer(pub.sock, data)
        self.addCleanup(writer.close)
        writer.start()
        receipts = ReceiptCounter(pub)
        got = receipts.until_quiet(QUIET, 30 * self.scale)
        self.assertLess(got, self.N, "the producer was never held back by the stalled "
                        "subscriber (all %d RECEIPTs came)" % self.N)
        self.assertGreaterEqual(got, MAX_QUEUED, "held back at %d RECEIPTs, before the "
                                "subscriber's queue was full" % got)
        rss_stuck = self.rss()
        t0 = time.monotonic()
        leave(sub.sock, how, stomp_frame("DISCONNECT"))
        have = receipts.until(self.N, 15 * self.scale)
        elapsed = time.monotonic() - t0
        self.assertEqual(have, self.N, "only %d of %d RECEIPTs %.1f s after the subscriber's %s "
                         "(stuck at %d): the producer stays stuck"
                         % (have, self.N, elapsed, how.upper(), got))
        self.assertLessEqual(elapsed, ACK_LIMIT, "the last RECEIPT came %.2f s after the "
                             "subscriber's %s" % (elapsed, how.upper()))
        writer.join(5.0)
        self.assertIsNone(writer.error)
        self.assert_rss_growth(32, "while the producer was held back", rss_stuck)
        self.assert_stomp_up()

    def test_stomp_disconnect_releases_producer(self):
        """A stalled STOMP subscriber sends DISCONNECT: the producer's RECEIPTs all come
        within 1 s."""
        self.run_leave("disconnect")

    def test_stomp_fin_releases_producer(self):
        """A stalled STOMP subscriber's socket is shut down (FIN): all RECEIPTs within 1 s."""
        self.run_leave("fin")

    def test_stomp_rst_releases_producer(self):
        """A stalled STOMP subscriber's connection is reset (RST): all RECEIPTs within 1 s."""
        self.run_leave("rst")


# -- 2. QoS 0 is dropped only for slow consumers ------------------------------------------------


class QoS0Test(AbuseTestCase):
    def test_qos0_burst_to_four_fast_subscribers_loses_nothing(self):
        """A publisher bursts QoS 0 messages at four subscribers that read as fast as they can,
        first 30,000 of 64 B, then 10,000 of 1 KiB while each subscriber has one short hiccup
        (0.4 s, well under slow_consumer_timeout): every subscriber gets every message. The
        broker pauses the publisher while one is briefly behind instead of dropping."""
        small, big = 30000, 10000
        topic = "abuse/burst/" + unique_id("t")
        # The kernel alone buffers up to 4 MiB towards a subscriber that does not read
        # (tcp_wmem), so the second burst, with the hiccups, is the one that surely gets each
        # subscriber behind by more than that plus its output buffer plus max_queued_messages.
        readers = [self.reader(topic, 1, small + big, hiccup=(small + 1 + 1500 + 2000 * i, 0.4))
                   for i in range(4)]
        pub = self.publisher()
        pub.sock.settimeout(60 * self.scale)
        for lo, hi, size, token in ((0, small, 64, b"M-small"), (small, small + big, 1024,
                                                                 b"M-big")):
            pad = b"b" * (size - 8)
            pub.sock.sendall(b"".join(publish_packet(topic, b"%08d" % k + pad)
                                      for k in range(lo, hi)))
            self.marker(pub, topic, token)
            for i, r in enumerate(readers):
                r.wait_marker(token, 30 * self.scale)
                missing = r.missing(lo, hi)
                self.assertEqual(len(missing), 0, "subscriber %d lost %d of %d QoS 0 messages "
                                 "of %d B (first: %r)" % (i, len(missing), hi - lo, size,
                                                          missing[:10]))
        self.assertEqual([r.hiccup for r in readers], [None] * 4, "a hiccup did not happen")
        if TERN:
            self.assertEqual(self.broker.count_log(r"SUB-QOS0-DROP"), 0,
                             "a fast subscriber was treated as a slow consumer")
        self.assert_rss_growth(48, "after the bursts")
        self.assert_broker_up()

    def test_qos0_stalled_subscriber_blocks_nobody_for_long(self):
        """One of four subscribers stops reading for good while a publisher sends 60,000 QoS 0
        messages of 1 KiB: the publisher is never blocked for more than 2 x
        slow_consumer_timeout, the three others get every message with no pause longer than
        that, the stalled one is logged once as a slow consumer (SUB-QOS0-DROP, then
        SUB-SLOW-END with the dropped count when it leaves), and the broker does not keep the
        messages it could not deliver."""
        n, size = 60000, 1024
        topic = "abuse/stall0/" + unique_id("t")
        cid = letters_id("stalled")  # no digits: the count in the log line stands out
        stalled = self.stalled(topic, 0, client_id=cid)
        fast = [self.reader(topic, 1, n) for _ in range(3)]
        pub = self.publisher()
        sender = TimedSender(pub, topic, 0, n, size)
        self.run_sender(sender, 2 * SLOW_TIMEOUT + 3.0)
        self.marker(pub, topic, b"M-stall-end")
        for r in fast:
            r.wait_marker(b"M-stall-end", 30 * self.scale)
        rss_loaded = self.rss()
        self.assertLessEqual(sender.max_gap, 2 * SLOW_TIMEOUT,
                             "the QoS 0 publisher was blocked for %.2f s" % sender.max_gap)
        for i, r in enumerate(fast):
            self.assertEqual(r.distinct, n, "fast subscriber %d got %d of %d (first missing: "
                             "%r)" % (i, r.distinct, n, r.missing(0, n)[:10]))
            self.assertLessEqual(r.max_gap, 2 * SLOW_TIMEOUT, "fast subscriber %d waited %.2f s "
                                 "for traffic" % (i, r.max_gap))
        if TERN:  # Mosquitto queues them all (up to max_queued_messages, 100000 here)
            self.assert_rss_growth(28, "holding a stalled subscriber of 60 MiB of QoS 0",
                                   rss_loaded)
            drops = self.broker.wait_log(r"SUB-QOS0-DROP")
            self.assertEqual(len(drops), 1, "one slow-consumer episode, logged once: %r" % drops)
        leave(stalled.sock, "rst", b"")
        if TERN:
            end = self.broker.wait_log(r"SUB-SLOW-END", timeout=5 * self.scale)
            self.assertEqual(len(end), 1, end)
            counts = [k for k in numbers_in(end[0], drop=[cid]) if 0 < k <= n]
            self.assertTrue(counts, "SUB-SLOW-END without a dropped count: %r" % end[0])
        self.assert_broker_up()


@tern_only("slow-consumer log lines and the slow_consumer_timeout limit")
class SlowConsumerEpisodeTest(AbuseTestCase):
    LIMITS = {"slow_consumer_timeout": 500}
    TIMEOUT_S = 0.5

    def test_slow_consumer_episode_logged_once_and_ends_when_it_catches_up(self):
        """With slow_consumer_timeout 500: a subscriber that stops reading becomes a slow
        consumer (SUB-QOS0-DROP, once) and blocks its QoS 0 publisher for at most 1 s; when it
        reads again and catches up the episode ends (SUB-SLOW-END with the dropped count) and
        it gets every new message again; stalling again starts a second episode, which ends
        (SUB-SLOW-END) when it leaves."""
        n, size = 20000, 1024
        topic = "abuse/episode/" + unique_id("t")
        cid = letters_id("slowpoke")
        # 256 KiB: small, yet over two loopback MSS (64 KiB), so reading again is not slowed
        # down by window probes (silly window avoidance)
        slow = self.reader(topic, 1, n + 1000, paused=True, small=262144, client_id=cid)
        pub = self.publisher()

        def stall_until_dropping(episode, first):
            sender = TimedSender(pub, topic, first, n, size)
            sender.start()
            try:
                self.broker.wait_log(r"SUB-QOS0-DROP", count=episode, timeout=20 * self.scale)
            finally:
                sender.stop()
            self.assertFalse(sender.is_alive(), "QoS 0 publisher still blocked")
            self.assertIsNone(sender.error)
            self.assertLessEqual(sender.max_gap, 2 * self.TIMEOUT_S, "the QoS 0 publisher was "
                                 "blocked for %.2f s" % sender.max_gap)
            return sender.next

        sent = stall_until_dropping(1, 0)
        self.assertEqual(self.broker.count_log(r"SUB-QOS0-DROP"), 1)
        self.assertEqual(self.broker.count_log(r"SUB-SLOW-END"), 0, "episode ended while the "
                         "subscriber was still stalled")
        slow.resume()
        self.marker(pub, topic, b"M-1", pid=1)
        slow.wait_marker(b"M-1", 30 * self.scale)
        end = self.broker.wait_log(r"SUB-SLOW-END", timeout=5 * self.scale)
        dropped = sent - slow.distinct
        self.assertGreater(dropped, 0, "nothing was dropped for the slow consumer")
        self.assertIn(dropped, numbers_in(end[0], drop=[cid]), "SUB-SLOW-END should carry the "
                      "dropped count (%d of %d sent are missing): %r" % (dropped, sent, end[0]))
        # Caught up: nothing new is dropped.
        pub.sock.settimeout(30 * self.scale)
        pub.sock.sendall(b"".join(publish_packet(topic, b"%08d" % k) for k in range(n, n + 200)))
        self.marker(pub, topic, b"M-2", pid=2)
        slow.wait_marker(b"M-2", 10 * self.scale)
        self.assertEqual(slow.missing(n, n + 200), [], "messages dropped after catching up")
        self.assertEqual(self.broker.count_log(r"SUB-QOS0-DROP"), 1)
        # A second episode, ended by leaving.
        slow.pause()
        stall_until_dropping(2, n + 200)
        leave(slow.sock, "rst", b"")
        self.broker.wait_log(r"SUB-SLOW-END", count=2, timeout=5 * self.scale)
        self.assert_broker_up()


def letters_id(prefix):
    """A client id unique in this run with no digits in it (log lines' counts stand out)."""
    return prefix + "-" + "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:10])


# -- 3. retained messages on SUBSCRIBE ----------------------------------------------------------


class RetainedFloodTest(AbuseTestCase):
    N = 20000

    def retained_to_new_subscriber(self, qos):
        prefix = "abuse/ret/" + unique_id("r")
        pub = self.publisher()
        pad = b"r" * 92
        # Stored at the QoS they are to be delivered at (a delivery never exceeds it); QoS 1
        # packet ids 2.. (1 is the marker's), their PUBACKs are skipped by marker().
        data = b"".join(publish_packet("%s/%d" % (prefix, k), b"%08d" % k + pad, qos=qos,
                                       pid=k + 2 if qos else None, retain=True)
                        for k in range(self.N))
        pub.sock.settimeout(60 * self.scale)
        pub.sock.sendall(data)
        self.marker(pub, prefix + "-done", b"M-stored")  # after all of them, in order
        r = self.reader(prefix + "/#", qos, self.N)
        r.wait_distinct(self.N, timeout=60 * self.scale, idle=5 * self.scale)
        self.assertEqual(r.retained, r.total, "retained messages must carry retain 1")
        self.assertEqual(r.qos[qos], r.total, "delivered at QoS %d" % qos)
        self.assert_rss_growth(64, "after %d retained messages" % self.N)
        self.assert_broker_up()

    def test_20000_retained_all_delivered_at_qos0(self):
        """A new QoS 0 subscriber to a filter matching 20,000 retained messages (20 x
        max_queued_messages) receives every one of them."""
        self.retained_to_new_subscriber(0)

    def test_20000_retained_all_delivered_at_qos1(self):
        """The same at QoS 1: all 20,000 arrive, under the in-flight window."""
        self.retained_to_new_subscriber(1)


# -- 4. max_topic_levels ------------------------------------------------------------------------

TOPIC_LEVELS_LOG = r"MQTT-TOPIC-LEVELS"


class TopicLevelsTest(AbuseTestCase):
    def rejected(self, data, after_connect=True):
        """Bytes the broker sends before closing this connection."""
        r = self.raw()
        if after_connect:
            r.connect()
        r.send(data)
        got = r.expect_closed(3.0 * self.scale)
        r.close()
        return got

    def test_200_levels_round_trip(self):
        """A topic of exactly 200 levels works: subscribe (plain and with wildcards), publish,
        receive; a will topic of 200 levels is accepted and delivered."""
        topic = levels(200, unique_name("lv"))
        sub = self.client("deep")
        self.assertEqual(sub.subscribe([(topic, 1)]), [1])
        wild = self.client("deepw")
        self.assertEqual(wild.subscribe([("/".join(["+"] * 199 + ["#"]), 1)]), [1])
        pub = self.client("deeppub")
        pub.publish(topic, b"deep", qos=1)
        for c in (sub, wild):
            m = c.get()
            self.assertEqual((m.topic, m.payload), (topic, b"deep"))
        will_topic = levels(200, unique_name("will"))
        wsub = self.client("willsub")
        self.assertEqual(wsub.subscribe([(will_topic, 0)]), [0])
        r = self.raw()
        r.connect(will=(will_topic, b"gone", 0, False))
        r.close()  # no DISCONNECT: the will goes out
        m = wsub.get(TIMEOUT * self.scale)
        self.assertEqual((m.topic, m.payload), (will_topic, b"gone"))
        self.assert_broker_up()

    @mosquitto_differs("has no topic level limit (2.0.11 accepts 201 levels)")
    def test_publish_over_200_levels_closes(self):
        """A PUBLISH whose topic has 201 (or 5,000) levels closes the connection, without a
        PUBACK; ternd logs MQTT-TOPIC-LEVELS."""
        cases = [("201 levels QoS 0", publish_packet(levels(201), b"x")),
                 ("201 levels QoS 1", publish_packet(levels(201), b"x", qos=1, pid=7)),
                 ("5000 levels QoS 0", publish_packet(levels(5000), b"x"))]
        for name, data in cases:
            with self.subTest(name):
                self.assertEqual(self.rejected(data), b"")
        if TERN:
            self.broker.wait_log(TOPIC_LEVELS_LOG, count=len(cases))
        self.assert_broker_up()

    @mosquitto_differs("has no topic level limit (2.0.11 grants a 201-level filter)")
    def test_subscribe_over_200_levels_closes(self):
        """A SUBSCRIBE with a filter of 201 levels (plain, or with wildcards) closes the
        connection; no SUBACK grants it."""
        cases = [("201 levels", levels(201)),
                 ("201 levels with wildcards", "/".join(["+"] * 200 + ["#"])),
                 ("second filter 201 levels", None)]
        for name, flt in cases:
            with self.subTest(name):
                topics = [("ok/x", 0), (levels(201), 1)] if flt is None else [(flt, 0)]
                got = self.rejected(subscribe_packet(3, topics))
                self.assertFalse(got.startswith(b"\x90") and b"\x80" not in got[4:],
                                 "SUBACK granted a filter of over 200 levels: %r" % got)
        if TERN:
            self.broker.wait_log(TOPIC_LEVELS_LOG, count=len(cases))
        self.assert_broker_up()

    @mosquitto_differs("has no topic level limit (2.0.11 accepts a 201-level will topic)")
    def test_will_topic_over_200_levels_refused(self):
        """A CONNECT whose will topic has 201 levels is refused: the connection is closed,
        with no accepting CONNACK."""
        got = self.rejected(connect_packet(unique_id("w"), will=(levels(201), b"w", 1, False)),
                            after_connect=False)
        self.assertFalse(got.startswith(b"\x20\x02\x00\x00"), "CONNACK accepted it: %r" % got)
        if TERN:
            self.broker.wait_log(TOPIC_LEVELS_LOG)
        self.assert_broker_up()


class StompTopicLevelsTest(StompTestCase):
    def error_then_close(self, command, headers):
        r = self.raw_stomp(connect=True)
        r.send_frame(command, headers, b"x" if command == "SEND" else b"",
                     content_length=True if command == "SEND" else None)
        f = r.recv_frame()
        self.assertEqual(f.command, "ERROR", f)
        self.assertTrue(f.get("message"), "ERROR without a message header: %r" % f)
        r.expect_closed()

    @unittest.skipIf(bool(STOMP_EXTERNAL), "Tern's max_topic_levels (ActiveMQ has none)")
    def test_stomp_send_over_200_levels_error_then_close(self):
        """A SEND to a /topic/ destination of 201 levels gets an ERROR frame, then the
        connection closes."""
        self.error_then_close("SEND", [("destination", stomp_levels(201)), ("receipt", "r1")])
        self.assert_stomp_up()

    @unittest.skipIf(bool(STOMP_EXTERNAL), "Tern's max_topic_levels (ActiveMQ has none)")
    def test_stomp_subscribe_over_200_levels_error_then_close(self):
        """A SUBSCRIBE to a /topic/ destination of 201 levels gets an ERROR frame, then the
        connection closes."""
        self.error_then_close("SUBSCRIBE", [("id", "1"), ("destination", stomp_levels(201)),
                                            ("receipt", "r1")])
        self.assert_stomp_up()

    def test_stomp_200_levels_round_trip(self):
        """A /topic/ destination of exactly 200 levels works, for STOMP and for the MQTT
        subscriber of the same 200-level topic."""
        first = unique_name("lv")
        dest = stomp_levels(200, first)
        s = self.stomp(name="deep")
        s.subscribe(dest)
        m = self.client("deepm")
        self.assertEqual(m.subscribe([(levels(200, first), 0)]), [0])
        s.send(dest, b"deep", receipt=True)
        self.assertEqual(s.get().body, b"deep")
        got = m.get()
        self.assertEqual((got.topic, got.payload), (levels(200, first), b"deep"))
        self.assert_stomp_up()


# -- 5. a first packet that is not CONNECT ------------------------------------------------------


class FirstPacketTest(AbuseTestCase):
    def test_first_packet_not_connect_closed_within_1s(self):
        """A connection whose first byte is not a CONNECT (here a PUBLISH announcing 200,000
        bytes that never come) is closed by the broker within 1 s, not kept until the CONNECT
        deadline."""
        cases = [("PUBLISH announcing 200,000 bytes", b"\x30" + varint(200000)),
                 ("SUBSCRIBE announcing 200,000 bytes", b"\x82" + varint(200000)),
                 ("PUBLISH first byte alone", b"\x30"),
                 ("PINGREQ first byte alone", b"\xc0")]
        for name, data in cases:
            with self.subTest(name):
                r = self.raw()
                t0 = time.monotonic()
                r.send(data)
                got = r.expect_closed(3.0)
                elapsed = time.monotonic() - t0
                r.close()
                self.assertEqual(got, b"")
                self.assertLess(elapsed, 1.0, "closed only after %.1f s" % elapsed)
        self.assert_broker_up()


# -- 6. close_timeout ---------------------------------------------------------------------------


@tern_only("close_timeout and max_output_buffer limits, log lines")
class CloseTimeoutTest(AbuseTestCase):
    LIMITS = {"max_output_buffer": 4096, "close_timeout": 500}
    CLOSE_S = 0.5
    SLACK = 2.0  # "within a few seconds": close_timeout plus this

    def closed_within_close_timeout(self, sock, decision_re, what):
        """The broker decided to close this connection (a log line matching decision_re) while
        output for it was still unread: the connection must be gone within close_timeout plus
        SLACK of that line, closed without flushing (NET-CLOSE-TIMEOUT)."""
        line = self.broker.wait_log(decision_re, timeout=10 * self.scale)[0]
        gone = wait_peer_gone(sock, self.CLOSE_S + self.SLACK + 5.0, PINGREQ_BYTES)
        after = time.time() - log_seconds(line)
        self.assertIsNotNone(gone, "%s: connection still open %.1f s after %r"
                             % (what, after, line))
        self.assertLessEqual(after, self.CLOSE_S + self.SLACK, "%s: connection closed only "
                             "%.1f s after %r" % (what, after, line))
        self.broker.wait_log(r"NET-CLOSE-TIMEOUT", timeout=TIMEOUT)

    def test_client_not_reading_its_pubacks_closed_within_close_timeout(self):
        """A client publishes QoS 1 messages as fast as it can and never reads its PUBACKs.
        With max_output_buffer 4096 the broker stops reading it and then closes it
        (MQTT-OUT-FULL ... closing; at the latest its keep-alive of 2 s runs out, as it is
        not read): with close_timeout 500 the connection is gone within a few seconds of
        that, not held open while the broker waits to flush (NET-CLOSE-TIMEOUT)."""
        r = StalledMqtt(self.broker)
        self.addCleanup(r.close)
        r.connect(keepalive=2)
        # Up to 40 x 65,535 packets (18 MiB, 10 MiB of PUBACKs): the kernel alone takes 4 MiB
        # of output towards a client that does not read, before the broker's buffer fills.
        block = b"".join(publish_packet("ct/out", b"", qos=1, pid=k) for k in range(1, 65536))
        r.sock.setblocking(False)
        blocks, view, last_progress = 0, memoryview(block), time.monotonic()
        while blocks < 40 and time.monotonic() - last_progress < 1.0:
            try:
                n = r.sock.send(view)
            except BlockingIOError:
                select.select([], [r.sock], [], 0.2)  # waits for the broker to read more
                continue
            except OSError:
                break  # the broker closed it already
            last_progress = time.monotonic()
            view = view[n:]
            if not view:
                blocks, view = blocks + 1, memoryview(block)
        self.closed_within_close_timeout(r.sock, r"MQTT-OUT-FULL.*clos|MQTT-KEEPALIVE",
                                         "client not reading its PUBACKs")
        self.assert_broker_up()

    def test_taken_over_stalled_subscriber_closed_within_close_timeout(self):
        """A subscriber stops reading and its output backs up (it becomes a slow consumer); a
        second connection with its client id takes the session over (MQTT-TAKEOVER): the old
        connection is closed within close_timeout (NET-CLOSE-TIMEOUT), not held open for as
        long as its client neither reads nor leaves."""
        cid = unique_id("ct")
        topic = "ct/stall/" + cid
        stalled = self.stalled(topic, 0, client_id=cid)
        pub = self.publisher()
        # QoS 0 of 1 KiB until the subscriber is a slow consumer (at most 20 MiB): the kernel
        # alone buffers 4 MiB towards it before its output buffer fills.
        sender = TimedSender(pub, topic, 0, 20000, 1024)
        sender.start()
        try:
            self.broker.wait_log(r"SUB-QOS0-DROP", timeout=20 * self.scale)
        finally:
            sender.stop()
        self.assertIsNone(sender.error)
        new = self.raw()
        new.connect(client_id=cid)
        self.closed_within_close_timeout(stalled.sock, r"MQTT-TAKEOVER", "taken-over subscriber")
        new.send(DISCONNECT_BYTES)
        self.assert_broker_up()


# -- 7. refused connections are logged at most once per second ----------------------------------


@tern_only("max_connections limit and NET-MAX-CONN log lines")
class MaxConnectionsLogTest(AbuseTestCase):
    LIMITS = {"max_connections": 5}

    def refused(self):
        """Open a connection and expect the broker to close it without a CONNACK."""
        r = RawClient(self.broker)
        try:
            r.send(connect_packet(unique_id("over")))
            got = r.expect_closed(TIMEOUT)
            self.assertEqual(got, b"", "a connection over max_connections got %r" % got)
        finally:
            r.close()

    def test_refused_connections_logged_once_per_second_with_count(self):
        """With max_connections 5 and 5 clients connected, 50 more connections are refused
        quickly, and refusals go on: the log gets NET-MAX-CONN lines carrying a count and the
        reason, a new one after a second of refusals, and never more than one per second (plus
        one)."""
        held = [self.raw(connect=True) for _ in range(5)]
        start = time.monotonic()
        burst = [RawClient(self.broker) for _ in range(50)]
        for r in burst:
            r.send(connect_packet(unique_id("over")))
        for r in burst:
            got = r.expect_closed(TIMEOUT)
            r.close()
            self.assertEqual(got, b"", "a connection over max_connections got %r" % got)
        self.broker.wait_log(r"NET-MAX-CONN")
        # Refusals go on, paced by waiting for the next log line (at most 20 per second).
        deadline = time.monotonic() + 3.0 * self.scale
        attempts = 0
        while self.broker.count_log(r"NET-MAX-CONN") < 2 and time.monotonic() < deadline:
            self.refused()
            attempts += 1
            try:
                self.broker.wait_log(r"NET-MAX-CONN", count=2, timeout=0.05)
            except AssertionError:
                pass
        lines = self.broker.log_lines()
        hits = [l for l in lines if "NET-MAX-CONN" in l]
        elapsed = time.monotonic() - start
        self.assertGreaterEqual(len(hits), 2, "refusals went on for %.1f s (%d more) after the "
                                "first NET-MAX-CONN line, and no second line: %r"
                                % (elapsed, attempts, hits))
        # (+ 0.05: ternd's clock is its event loop's, cached and in whole milliseconds)
        self.assertLessEqual(len(hits), elapsed + 1.05, "%d NET-MAX-CONN lines in %.1f s: %r"
                             % (len(hits), elapsed, hits))
        stamps = [log_seconds(l) for l in hits]
        span = stamps[-1] - stamps[0]
        self.assertLessEqual(len(hits), math.floor(span + 0.05) + 1,
                             "more than one NET-MAX-CONN line per second: %r" % hits)
        for line in hits:
            self.assertTrue(numbers_in(line), "NET-MAX-CONN without a count: %r" % line)
            self.assertIn("max_connections", line, "NET-MAX-CONN without the reason")
        for r in held:
            r.close()
        self.assert_broker_up()


if __name__ == "__main__":
    unittest.main()
