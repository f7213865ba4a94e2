"""WebSocket listeners: ws:// and wss:// (protocols/ws/ws.c, libwebsockets on ternd's loop).

One WebSocket listener serves every protocol, picked by the subprotocol the client offers:
`mqtt` (MQTT 3.1.1 and 5), `mqttv3.1` (MQTT 3.1, MQIsdp), `v10.stomp`, `v11.stomp`, `v12.stomp`,
`amqp` and `AMQPWSB10`; the handshake answers with the chosen one. A client that offers none gets
the protocol its first bytes show (MQTT CONNECT, STOMP CONNECT/STOMP, the AMQP header), on any
path; an offer of only unknown subprotocols is refused. Both directions are byte streams: a packet
or frame may span WebSocket messages and a message may hold several. The largest incoming message
is the broker's message size limit. Bad input (plain HTTP, unknown subprotocols, a message over
the limit, a text message for MQTT/AMQP, an unmasked client frame, TLS garbage, a TLS client that
stops mid-handshake) closes the connection, is logged once, and leaves the broker up.

Clients: paho-mqtt 1.6.1 with transport="websockets" (real MQTT over WS), websocket-client for
exact bytes (WsStream and WsRawStomp: the harness' RawClient/RawStomp readers over WebSocket
messages), hand-made HTTP upgrades and frames on plain sockets for what websocket-client would not
send (unmasked frames), and Qpid Proton's protocol engine (proton.Transport, no I/O of its own)
pumped through WebSocket binary messages for AMQP, as Proton has no WebSocket transport.

Log IDs checked (each once per connection, naming the peer as 127.0.0.1:PORT, which the test knows
from its own socket; "once" is checked after a later connection has done a full round trip):
WS-NOT-UPGRADE, WS-ORIGIN, WS-SUBPROTOCOL, WS-TEXT, WS-TOO-LARGE, WS-PROTOCOL; TLS failures on wss
may be logged under any ID that names the peer (WS-LWS for libwebsockets' own lines).

Run: TERND=build/dev/tools/ternd/ternd /usr/bin/python3 tests/integration/test_websocket.py -v
"""

import base64
import hashlib
import os
import queue
import re
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import time
import unittest

import paho.mqtt.client as paho
import websocket
from websocket import ABNF
from proton import (Collector, Connection as ProtonConnection, Delivery, Endpoint, Event,
                    Message as AmqpMessage, Transport)

from harness import (make_test_certs, varied_payload, CONNACK, HOST, IS_MOSQUITTO, PINGREQ_BYTES, PINGRESP_BYTES, PUBLISH, SUBACK,
                     TIMEOUT, Broker, BrokerTestCase, Client, RawClient, RawStomp, StompClient,
                     connect_packet, mqtt_str, packet, publish_packet, stomp_frame,
                     subscribe_packet, unique_id, unique_name)

MIB = 1 << 20
HERE = os.path.dirname(os.path.abspath(__file__))
CERTS = None  # the folder mkcerts.sh made, for this module
LARGE_TIMEOUT = 120.0  # 5 MiB through WebSocket (and TLS), possibly an AddressSanitizer build
WRITE_CHUNK = 262144  # ws.h: the broker's output leaves in binary messages of up to 256 KiB

SUBPROTOCOLS = ("mqtt", "mqttv3.1", "v10.stomp", "v11.stomp", "v12.stomp", "amqp", "AMQPWSB10")
AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
SASL_HEADER = b"AMQP\x03\x01\x00\x00"
CLOSE_NORMAL, CLOSE_PROTOCOL, CLOSE_UNACCEPTABLE, CLOSE_TOO_BIG = 1000, 1002, 1003, 1009


def setUpModule():
    global CERTS
    if IS_MOSQUITTO:
        raise unittest.SkipTest("Tern's WebSocket listeners (mosquitto has no STOMP/AMQP)")
    CERTS = make_test_certs("tern-ws-certs-")


def tearDownModule():
    if CERTS:
        shutil.rmtree(CERTS, ignore_errors=True)


def cert(name):
    return os.path.join(CERTS, name)


def tls_args():
    return ["--tls-cert", cert("server.pem"), "--tls-key", cert("server.key")]


payload = varied_payload


def digest(b):
    return "%d bytes sha256 %s" % (len(b), hashlib.sha256(b).hexdigest()[:16])


def client_context():
    return ssl.create_default_context(cafile=cert("ca.pem"))


def peer_re(peer):
    return re.escape(peer) + r"\b"


def ws_frame(data, opcode=ABNF.OPCODE_BINARY, fin=True, mask=True, rsv=0):
    """One WebSocket frame's bytes, built by hand (masked with a fixed key unless mask=False)."""
    n = len(data)
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack(">BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack(">BBH", b0, mbit | 126, n)
    else:
        head = struct.pack(">BBQ", b0, mbit | 127, n)
    if not mask:
        return head + data
    key = b"\x37\xfa\x21\x3d"
    masked = bytes(c ^ key[i % 4] for i, c in enumerate(data))
    return head + key + masked


def parse_frames(data):
    """Server frames (unmasked) in data: [(opcode, payload)], stopping at an incomplete one."""
    out = []
    i = 0
    while i + 2 <= len(data):
        op, n = data[i] & 0x0F, data[i + 1] & 0x7F
        j = i + 2
        if n == 126:
            if j + 2 > len(data):
                break
            n = struct.unpack(">H", data[j:j + 2])[0]
            j += 2
        elif n == 127:
            if j + 8 > len(data):
                break
            n = struct.unpack(">Q", data[j:j + 8])[0]
            j += 8
        if j + n > len(data):
            break
        out.append((op, data[j:j + n]))
        i = j + n
    return out


def close_code(frames):
    for op, data in frames:
        if op == ABNF.OPCODE_CLOSE:
            return struct.unpack(">H", data[:2])[0] if len(data) >= 2 else None
    return None


class Upgrade:
    """A hand-made HTTP request on a plain (or TLS) socket: the status line, the response
    headers, and after a 101 the WebSocket bytes that follow, for tests that need to send what
    websocket-client would not (unmasked frames, no upgrade at all)."""

    KEY = base64.b64encode(b"tern-ws-test-key").decode()

    def __init__(self, port, path="/mqtt", protocols=None, origin=None, tls=False, upgrade=True,
                 extra=(), timeout=TIMEOUT, first=b""):
        sock = socket.create_connection((HOST, port), timeout=timeout)
        if tls:
            sock = client_context().wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.peer = "%s:%d" % sock.getsockname()[:2]
        self.timeout = timeout
        lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port]
        if upgrade:
            lines += ["Upgrade: websocket", "Connection: Upgrade",
                      "Sec-WebSocket-Key: " + self.KEY, "Sec-WebSocket-Version: 13"]
        if protocols:
            lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
        if origin:
            lines.append("Origin: " + origin)
        lines += list(extra)
        # first: WebSocket bytes sent in the same write as the request (before the 101)
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + first)
        self.buf = b""
        self.eof = False
        head = self._read_until(b"\r\n\r\n")
        status_line, _, rest = head.partition(b"\r\n")
        self.status_line = status_line.decode("latin-1")
        parts = self.status_line.split(" ", 2)
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        self.headers = {}
        for line in rest.split(b"\r\n"):
            name, sep, value = line.decode("latin-1").partition(":")
            if sep:
                self.headers[name.strip().lower()] = value.strip()

    def _read_until(self, marker):
        deadline = time.monotonic() + self.timeout
        while marker not in self.buf:
            if not self._recv(deadline):
                raise AssertionError("closed before %r; got %r" % (marker, self.buf))
        head, _, self.buf = self.buf.partition(marker)
        return head

    def _recv(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timed out; have %r" % self.buf[:200])
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            chunk = b""
        except socket.timeout:
            raise AssertionError("timed out; have %r" % self.buf[:200])
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def send(self, data):
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            return False

    def read_until_closed(self, timeout=None):
        """Everything until the broker closes the connection (a close frame it sends is
        answered, as a client would); fails if it is still open after timeout."""
        deadline = time.monotonic() + (timeout or self.timeout)
        answered = False
        try:
            while self._recv(deadline):
                if not answered and close_code(parse_frames(self.buf)) is not None:
                    self.send(ws_frame(b"\x03\xe8", ABNF.OPCODE_CLOSE))
                    answered = True
        except AssertionError:
            raise AssertionError("broker did not close the connection within %.1f s (got %r)"
                                 % (timeout or self.timeout, self.buf[:200]))
        return self.buf

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class WsStream(RawClient):
    """RawClient's readers (recv_exact, recv_packet, expect_closed, connect) over a WebSocket
    connection made by websocket-client: the payloads of the broker's messages form the byte
    stream; send() writes one message (binary unless told). A close frame from the broker ends
    the stream (its code in close_code); opcodes and sizes of the messages are kept in
    `messages`, pings from the broker counted in `pings`."""

    def __init__(self, url, subprotocols=None, timeout=TIMEOUT, origin=None, opcode=None,
                 **options):
        if url.startswith("wss:"):
            options.setdefault("sslopt", {"ca_certs": cert("ca.pem")})
        self.ws = websocket.create_connection(url, timeout=timeout, subprotocols=subprotocols,
                                              origin=origin, **options)
        self.sock = self.ws.sock
        self.peer = "%s:%d" % self.sock.getsockname()[:2]
        self.timeout = timeout
        self.buf = b""
        self.closed_by_peer = False
        self.close_code = None
        self.messages = []
        self.pings = 0
        self.opcode = opcode or ABNF.OPCODE_BINARY

    @property
    def subprotocol(self):
        return self.ws.getsubprotocol()

    def send(self, data, opcode=None):
        """One message; returns False if the broker had already closed the connection."""
        try:
            self.ws.send(data, opcode or self.opcode)
            return True
        except (websocket.WebSocketConnectionClosedException, BrokenPipeError,
                ConnectionResetError, ssl.SSLError, socket.timeout,
                websocket.WebSocketTimeoutException):
            self.closed_by_peer = True
            return False

    def send_fragments(self, parts, opcode=None):
        """One message in len(parts) frames (the first with opcode, then continuations)."""
        try:
            for i, part in enumerate(parts):
                op = (opcode or self.opcode) if i == 0 else ABNF.OPCODE_CONT
                self.ws.send_frame(ABNF.create_frame(part, op, fin=int(i == len(parts) - 1)))
            return True
        except (websocket.WebSocketConnectionClosedException, BrokenPipeError,
                ConnectionResetError, ssl.SSLError):
            self.closed_by_peer = True
            return False

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        self.ws.settimeout(left)
        try:
            op, data = self.ws.recv_data(control_frame=True)
        except (websocket.WebSocketTimeoutException, socket.timeout):
            raise socket.timeout()
        except (websocket.WebSocketConnectionClosedException, ConnectionResetError,
                BrokenPipeError, ssl.SSLError, websocket.WebSocketProtocolException):
            self.closed_by_peer = True
            raise EOFError()
        if op == ABNF.OPCODE_CLOSE:
            self.close_code = struct.unpack(">H", data[:2])[0] if len(data) >= 2 else None
            self.closed_by_peer = True
            raise EOFError()
        if op in (ABNF.OPCODE_PING, ABNF.OPCODE_PONG):
            self.pings += op == ABNF.OPCODE_PING
            return
        self.messages.append((op, len(data)))
        self.buf += data

    def wait_closed(self, timeout=None):
        """expect_closed(), then also the TCP connection's end (the close handshake done)."""
        data = self.expect_closed(timeout)
        sock = self.ws.sock  # None once websocket-client has seen the end (and closed it)
        if sock is None:
            return data
        deadline = time.monotonic() + (timeout or self.timeout)
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            while sock.recv(4096):
                pass
        except socket.timeout:
            raise AssertionError("close frame %r, but the TCP connection still open after "
                                 "%.1f s" % (self.close_code, timeout or self.timeout))
        except (ConnectionResetError, ssl.SSLError, OSError):
            pass
        return data

    def close(self):
        try:
            self.ws.close(timeout=1)
        except Exception:  # noqa: BLE001 (whatever state the test left it in)
            pass
        try:
            self.ws.shutdown()
        except Exception:  # noqa: BLE001
            pass


class WsRawStomp(RawStomp, WsStream):
    """RawStomp (exact STOMP bytes, heart-beat EOLs recorded) over WebSocket text messages."""

    def __init__(self, url, subprotocols=("v12.stomp",), opcode=ABNF.OPCODE_TEXT, **kw):
        WsStream.__init__(self, url, subprotocols=list(subprotocols) if subprotocols else None,
                          opcode=opcode, **kw)
        self.eols = []
        self._fill_time = None


class WsClient(Client):
    """The harness' paho client (callbacks into queues) with transport="websockets"."""

    def __init__(self, broker, port, path="/mqtt", tls=False, name="w", **kw):
        super().__init__(broker, name=name, port=port, **kw)
        old = self.mqtt
        self.mqtt = paho.Client(client_id=self.client_id, clean_session=True,
                                protocol=paho.MQTTv311, transport="websockets")
        for cb in ("on_connect", "on_message", "on_subscribe", "on_unsubscribe", "on_publish",
                   "on_disconnect"):
            setattr(self.mqtt, cb, getattr(old, cb))
        self.mqtt.ws_set_options(path=path)
        if tls:
            self.mqtt.tls_set(ca_certs=cert("ca.pem"))


class AmqpWs:
    """An AMQP 1.0 client over WebSocket: Qpid Proton's engine (Connection + Transport, no I/O)
    whose output goes out in binary messages (each chunk split in two messages, so frames span
    messages) and whose input is the broker's message payloads. SASL ANONYMOUS first."""

    def __init__(self, url, subprotocol="amqp", timeout=TIMEOUT):
        self.ws = WsStream(url, subprotocols=[subprotocol] if subprotocol else None,
                           timeout=timeout)
        self.conn = ProtonConnection()
        self.conn.container = unique_id("amqpws")
        self.conn.hostname = "localhost"
        self.transport = Transport()
        self.transport.sasl().allowed_mechs("ANONYMOUS")
        self.transport.bind(self.conn)
        self.collector = Collector()
        self.conn.collect(self.collector)
        self.received = queue.Queue()
        self.input = b""  # every byte the broker sent, for the header checks
        self.conn.open()
        self.session = self.conn.session()
        self.session.open()

    def _flush(self):
        while True:
            n = self.transport.pending()
            if n <= 0:
                return
            data = self.transport.peek(n)
            self.transport.pop(len(data))
            half = max(len(data) // 2, 1)
            for part in (data[:half], data[half:]):
                if part and not self.ws.send(part):
                    raise AssertionError("AMQP over WS: broker closed the connection")

    def _events(self):
        while True:
            ev = self.collector.peek()
            if ev is None:
                return
            if ev.type == Event.DELIVERY:
                d = ev.delivery
                link = d.link
                if link.is_receiver and d.readable and not d.partial:
                    m = AmqpMessage()
                    m.decode(link.recv(d.pending))
                    d.update(Delivery.ACCEPTED)
                    d.settle()
                    link.flow(1)
                    self.received.put(m)
            self.collector.pop()

    def run_until(self, pred, what, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            self._flush()
            self._events()
            if pred():
                return
            if self.conn.remote_condition or self.transport.condition:
                raise AssertionError("AMQP over WS: %s / %s while waiting for %s"
                                     % (self.conn.remote_condition, self.transport.condition,
                                        what))
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("AMQP over WS: no %s within %.1f s" % (what, timeout))
            try:
                self.ws._fill(time.monotonic() + min(left, 0.5))
            except socket.timeout:
                continue
            except EOFError:
                raise AssertionError("AMQP over WS: closed by the broker while waiting for %s"
                                     % what)
            data, self.ws.buf = self.ws.buf, b""
            self.input += data
            while data:
                cap = self.transport.capacity()
                if cap <= 0:
                    raise AssertionError("AMQP over WS: transport closed (%s)"
                                         % self.transport.condition)
                self.transport.push(data[:cap])
                data = data[cap:]

    def opened(self):
        self.run_until(lambda: self.conn.state & Endpoint.REMOTE_ACTIVE, "open")

    def sender(self, address):
        s = self.session.sender(unique_id("snd"))
        s.target.address = address
        s.open()
        self.run_until(lambda: s.state & Endpoint.REMOTE_ACTIVE and s.credit > 0,
                       "attach and credit for %s" % address)
        return s

    def receiver(self, address, credit=10):
        r = self.session.receiver(unique_id("rcv"))
        r.source.address = address
        r.open()
        r.flow(credit)
        self.run_until(lambda: r.state & Endpoint.REMOTE_ACTIVE, "attach of %s" % address)
        return r

    def send(self, sender, body):
        self.run_until(lambda: sender.credit > 0, "credit")
        d = sender.delivery(unique_id("tag"))
        sender.send(AmqpMessage(body=body, inferred=True).encode())
        sender.advance()
        self.run_until(lambda: d.remote_state == Delivery.ACCEPTED, "accepted outcome")
        d.settle()

    def get(self, timeout=TIMEOUT):
        found = []
        self.run_until(lambda: found.append(self.received.get_nowait()) is None
                       if not self.received.empty() else False, "a message", timeout)
        return found[0]

    def close(self):
        try:
            self.conn.close()
            self._flush()
        except Exception:  # noqa: BLE001
            pass
        self.ws.close()


class WsTestCase(BrokerTestCase):
    """Each test gets a broker with MQTT, STOMP and AMQP on TCP and a ws:// and a wss://
    listener (the test certificates); a class's LIMITS (a dict) become ternd's `limits:`."""

    LIMITS = {}

    def setUp(self):
        extra = tls_args()
        if self.LIMITS:
            fd, conf = tempfile.mkstemp(prefix="tern-ws-", suffix=".conf")
            with os.fdopen(fd, "w") as f:
                f.write("limits:\n" + "".join("  %s: %s\n" % kv for kv in self.LIMITS.items()))
            self.addCleanup(os.unlink, conf)
            extra += ["-c", conf]
        self.broker = Broker(stomp=True, amqp=True, listen=("ws", "wss"), extra_args=extra)
        self._problems_before = self._problems()
        self.addCleanup(self._stop_broker)
        self.broker.start()

    # -- clients -----------------------------------------------------------------------------

    def url(self, path="/mqtt", tls=False, port=None):
        scheme = "wss" if tls else "ws"
        return "%s://%s:%d%s" % (scheme, HOST, port or self.broker.port_of(scheme), path)

    def ws(self, subprotocols=("mqtt",), path="/mqtt", tls=False, port=None, **kw):
        """A WsStream, closed after the test."""
        w = WsStream(self.url(path, tls, port), list(subprotocols) if subprotocols else None,
                     **kw)
        self.addCleanup(w.close)
        return w

    def ws_mqtt(self, client_id=None, tls=False, path="/mqtt", keepalive=60, **kw):
        """A WsStream with an accepted MQTT 3.1.1 CONNECT."""
        w = self.ws(("mqtt",), path, tls, **kw)
        w.send(connect_packet(client_id or unique_id("ws"), keepalive=keepalive))
        p = w.recv_packet()
        self.assertEqual(p.raw, b"\x20\x02\x00\x00", "CONNACK over WS")
        return w

    def ws_stomp(self, subprotocols=("v12.stomp",), path="/stomp", tls=False, **kw):
        s = WsRawStomp(self.url(path, tls), subprotocols, **kw)
        self.addCleanup(s.close)
        return s

    def ws_paho(self, tls=False, path="/mqtt", connect=True, name="w"):
        scheme = "wss" if tls else "ws"
        c = WsClient(self.broker, self.broker.port_of(scheme), path=path, tls=tls, name=name)
        self.addCleanup(c.close)
        if connect:
            c.connect()
        return c

    def stomp_tcp(self, name="s"):
        c = StompClient(self.broker, version="1.2", name=name)
        self.addCleanup(c.close)
        c.connect()
        return c

    def amqp_ws(self, subprotocol="amqp", tls=False, path="/amqp"):
        a = AmqpWs(self.url(path, tls), subprotocol)
        self.addCleanup(a.close)
        a.opened()
        return a

    def upgrade(self, tls=False, port=None, **kw):
        u = Upgrade(port or self.broker.port_of("wss" if tls else "ws"), tls=tls, **kw)
        self.addCleanup(u.close)
        return u

    # -- checks ------------------------------------------------------------------------------

    def assert_ws_up(self, tls=False):
        """The broker runs; MQTT over ws (and wss) and over TCP still carry a message both
        ways."""
        self.assertTrue(self.broker.is_running(), "broker process exited")
        for t in sorted({False, tls}):
            topic = "up/" + unique_id("t")
            tcp = self.client("up-tcp")
            tcp.subscribe([(topic, 1)])
            w = self.ws_mqtt(tls=t)
            w.send(subscribe_packet(1, [(topic, 1)]))
            self.assertEqual(w.recv_packet().type, SUBACK)
            w.send(publish_packet(topic, b"still up", qos=0))
            m = tcp.get()
            self.assertEqual((m.topic, m.payload), (topic, b"still up"))
            p = w.recv_packet()
            self.assertEqual(p.publish_fields()[::2], (topic, b"still up"))
            tcp.disconnect()
            w.close()

    def assert_logged_once(self, log_id, peer):
        """After a later round trip (assert_ws_up), exactly one log line with this ID names
        this peer."""
        self.broker.wait_log(r"%s %s" % (log_id, peer_re(peer)))
        self.assert_ws_up()
        lines = [l for l in self.broker.log_lines() if re.search(peer_re(peer), l)]
        hits = [l for l in lines if log_id in l]
        self.assertEqual(len(hits), 1, "expected one %s line for %s:\n%s"
                         % (log_id, peer, "\n".join(lines)))

    def assert_peer_logged_once(self, peer):
        """Exactly one log line (any ID) names peer, after a later round trip."""
        self.assert_ws_up(tls=True)
        lines = [l for l in self.broker.log_lines() if re.search(peer_re(peer), l)]
        self.assertEqual(len(lines), 1, "expected one log line naming %s, got:\n%s"
                         % (peer, "\n".join(lines) or "(none)"))


def expect_handshake_refused(case, u, status):
    case.assertEqual(u.status, status, "%s; headers %r" % (u.status_line, u.headers))
    case.assertNotIn("sec-websocket-accept", u.headers)
    u.read_until_closed()


# -- subprotocols and paths ----------------------------------------------------------------------


class SubprotocolTest(WsTestCase):

    def exchange(self, w, name):
        """The protocol that subprotocol `name` stands for, spoken over w: its connect and the
        broker's answer."""
        if name == "mqtt":
            w.send(connect_packet(unique_id("sp")))
            self.assertEqual(w.recv_packet().raw, b"\x20\x02\x00\x00")
        elif name == "mqttv3.1":
            w.send(connect_packet(unique_id("sp"), proto_name=b"MQIsdp", level=3))
            self.assertEqual(w.recv_packet().raw, b"\x20\x02\x00\x00")
        elif name.endswith(".stomp"):
            version = "1.%s" % name[2]
            w.send(stomp_frame("CONNECT", [("accept-version", version), ("host", "localhost")]))
            f = WsRawStomp.recv_frame(w)
            self.assertEqual(f.command, "CONNECTED", f)
            self.assertEqual(f.get("version"), version, f)
        else:
            w.send(SASL_HEADER)
            self.assertEqual(w.recv_exact(8), SASL_HEADER)
            head = w.recv_exact(8)  # sasl-mechanisms: a SASL frame (type 1)
            self.assertEqual(head[5], 1, head)

    def test_each_subprotocol_answered_and_served(self):
        for tls in (False, True):
            for name in SUBPROTOCOLS:
                with self.subTest(subprotocol=name, tls=tls):
                    w = WsRawStomp(self.url("/ws", tls), [name], opcode=ABNF.OPCODE_BINARY)
                    self.addCleanup(w.close)
                    # websocket-client lowercases what it read; the exact answer below
                    self.assertEqual(w.subprotocol.lower(), name.lower())
                    self.exchange(w, name)
                    w.close()
                    u = self.upgrade(tls=tls, path="/x", protocols=["nope", name])
                    self.assertEqual(u.status, 101, u.status_line)
                    self.assertEqual(u.headers.get("sec-websocket-protocol"), name)

    def test_amqp_plain_header_answered(self):
        for name in ("amqp", "AMQPWSB10"):
            with self.subTest(subprotocol=name):
                w = self.ws((name,), "/")
                w.send(AMQP_HEADER)
                self.assertEqual(w.recv_exact(8), AMQP_HEADER)

    def test_first_known_of_several_offers_chosen(self):
        w = self.ws(("foo", "v12.stomp", "bar"), "/stomp")
        self.assertEqual(w.subprotocol, "v12.stomp")
        w2 = self.ws(("xmpp", "mqtt"), "/")
        self.assertEqual(w2.subprotocol, "mqtt")
        self.exchange(w2, "mqtt")

    def test_mqtt5_connect_answered_as_over_tcp(self):
        # MQTT 5 goes to the MQTT adapter over `mqtt` as over TCP: whatever the adapter answers
        # a 5.0 CONNECT (today 3.1.1's "unacceptable protocol version"), it answers both alike.
        body = mqtt_str("MQTT") + bytes([5, 0x02]) + struct.pack(">H", 60) + b"\x00" + \
            mqtt_str(unique_id("v5"))
        v5 = packet(0x10, body)
        r = self.raw()
        r.send(v5)
        tcp_answer = r.recv_packet().raw
        w = self.ws(("mqtt",))
        w.send(v5)
        self.assertEqual(w.recv_packet().raw, tcp_answer)
        self.assertEqual(tcp_answer[0] >> 4, CONNACK)

    def test_no_subprotocol_first_bytes_pick_protocol_on_any_path(self):
        cases = [
            ("mqtt 3.1.1", lambda: [connect_packet(unique_id("sn"))], "mqtt"),
            ("mqtt 3.1", lambda: [connect_packet(unique_id("sn"), proto_name=b"MQIsdp",
                                                 level=3)], "mqttv3.1"),
            ("mqtt split", lambda: [bytes([b]) for b in connect_packet(unique_id("sn"))],
             "mqtt"),
            ("stomp CONNECT", lambda: [stomp_frame("CONNECT", [("accept-version", "1.2"),
                                                              ("host", "localhost")])],
             "v12.stomp"),
            ("stomp STOMP", lambda: [stomp_frame("STOMP", [("accept-version", "1.1"),
                                                          ("host", "localhost")])],
             "v11.stomp"),
            ("stomp after heart-beats", lambda: [b"\n", b"\r\n",
                                                 stomp_frame("CONNECT",
                                                             [("accept-version", "1.2"),
                                                              ("host", "localhost")])],
             "v12.stomp"),
            ("amqp sasl", lambda: [SASL_HEADER], "amqp"),
            ("amqp split", lambda: [b"AM", b"QP\x00", b"\x01\x00\x00"], "amqp-plain"),
        ]
        for path in ("/mqtt", "/ws", "/stomp", "/", "/some/deep/path?x=1"):
            for what, msgs, kind in cases:
                with self.subTest(path=path, first=what):
                    w = WsRawStomp(self.url(path), None, opcode=ABNF.OPCODE_BINARY)
                    self.addCleanup(w.close)
                    self.assertIsNone(w.ws.getheaders().get("sec-websocket-protocol"))
                    for m in msgs():
                        w.send(m)
                    if kind == "amqp-plain":
                        self.assertEqual(w.recv_exact(8), AMQP_HEADER)
                    elif kind == "amqp":
                        self.assertEqual(w.recv_exact(8), SASL_HEADER)
                    elif kind.startswith("mqtt"):
                        self.assertEqual(w.recv_packet().raw, b"\x20\x02\x00\x00")
                    else:
                        f = w.recv_frame()
                        self.assertEqual(f.command, "CONNECTED", f)
                        self.assertEqual(f.get("version"), "1." + kind[2])
                    w.close()

    def test_only_unknown_subprotocols_refused(self):
        for offer in (["foo"], ["mqttv5", "stomp", "amqp10"], ["MQTT"]):
            with self.subTest(offer=offer):
                u = self.upgrade(protocols=offer)
                expect_handshake_refused(self, u, 400)
                self.assert_logged_once("WS-SUBPROTOCOL", u.peer)
        # websocket-client sees the refusal as such
        with self.assertRaises(websocket.WebSocketBadStatusException):
            WsStream(self.url(), ["nonesuch"])

    def test_paho_over_ws_on_any_path(self):
        for path in ("/mqtt", "/ws", "/stomp", "/"):
            with self.subTest(path=path):
                c = self.ws_paho(path=path)
                topic = "p/" + c.client_id
                c.subscribe([(topic, 1)])
                c.publish(topic, b"hi " + path.encode(), qos=1)
                self.assertEqual(c.get().payload, b"hi " + path.encode())
                c.disconnect()


# -- byte streams ---------------------------------------------------------------------------------


class StreamTest(WsTestCase):

    def test_mqtt_packet_spans_messages(self):
        topic = "span/" + unique_id("t")
        tcp = self.client("tcp-sub")
        tcp.subscribe([(topic, 0)])
        w = self.ws(("mqtt",))
        for b in connect_packet(unique_id("span")):  # the CONNECT one byte per message
            w.send(bytes([b]))
        self.assertEqual(w.recv_packet().raw, b"\x20\x02\x00\x00")
        body = payload(200000, b"span")
        pub = publish_packet(topic, body)
        # cut inside the fixed header, inside the topic, inside the payload
        cuts = [0, 1, 3, 8, 100000, len(pub)]
        for a, b in zip(cuts, cuts[1:]):
            w.send(pub[a:b])
        m = tcp.get()
        self.assertEqual((m.topic, digest(m.payload)), (topic, digest(body)))
        # one message in fragments (continuation frames), cut inside the header too
        body2 = payload(70000, b"frag")
        pub2 = publish_packet(topic, body2)
        w.send_fragments([pub2[:1], pub2[1:5], pub2[5:40000], pub2[40000:]])
        m = tcp.get()
        self.assertEqual((m.topic, digest(m.payload)), (topic, digest(body2)))

    def test_several_mqtt_packets_in_one_message(self):
        w = self.ws(("mqtt",))
        topic = "many/" + unique_id("t")
        w.send(connect_packet(unique_id("many")) + subscribe_packet(7, [(topic, 1)])
               + publish_packet(topic, b"one", qos=1, pid=1) + publish_packet(topic, b"two")
               + PINGREQ_BYTES)
        got = [w.recv_packet() for _ in range(6)]
        types = [p.type for p in got]
        self.assertEqual(types[:2], [CONNACK, SUBACK], got)
        pubs = [p.publish_fields()[2] for p in got if p.type == PUBLISH]
        self.assertEqual(pubs, [b"one", b"two"], got)
        self.assertIn(PINGRESP_BYTES, [p.raw for p in got])
        self.assertIn(4, types, "PUBACK for pid 1: %r" % got)

    def test_stomp_frames_span_messages_and_share_them(self):
        dest = "/queue/" + unique_name("wsq")
        s = self.ws_stomp()
        frame = stomp_frame("CONNECT", [("accept-version", "1.2"), ("host", "localhost")])
        for i in range(0, len(frame), 5):  # CONNECT in 5-byte text messages
            s.send(frame[i:i + 5])
        self.assertEqual(s.recv_frame().command, "CONNECTED")
        # SUBSCRIBE, two SENDs and a receipt request in one message
        s.send(stomp_frame("SUBSCRIBE", [("destination", dest), ("id", "0")])
               + stomp_frame("SEND", [("destination", dest)], "first", content_length=True)
               + b"\n" + stomp_frame("SEND", [("destination", dest)], "second")
               + stomp_frame("SUBSCRIBE", [("destination", "/queue/x" + unique_name()),
                                           ("id", "1"), ("receipt", "r1")]))
        got = [s.recv_frame() for _ in range(3)]
        self.assertEqual(sorted(f.command for f in got), ["MESSAGE", "MESSAGE", "RECEIPT"], got)
        self.assertEqual([f.body for f in got if f.command == "MESSAGE"], [b"first", b"second"])
        # a binary body with a NUL in it, in a binary message cut mid-body
        body = b"\x00\x01bin\x00ary\xff" * 1000
        f = stomp_frame("SEND", [("destination", dest)], body, content_length=True)
        s.send(f[:20], ABNF.OPCODE_BINARY)
        s.send(f[20:5000], ABNF.OPCODE_BINARY)
        s.send(f[5000:], ABNF.OPCODE_BINARY)
        self.assertEqual(s.recv_frame().body, body)

    def test_stomp_server_heartbeats_are_lone_newlines(self):
        s = self.ws_stomp()
        f = s.connect("1.2", {"heart-beat": "0,500"})
        sx = int(f["heart-beat"].split(",")[0])
        self.assertGreater(sx, 0, f)
        interval = max(sx, 500) / 1000.0
        n_before = len(s.messages)
        times = s.wait_eols(5, timeout=interval * 5 + 5)
        gaps = [b - a for a, b in zip(times[1:], times[2:])]
        self.assertLessEqual(max(gaps), interval * 1.5 + 0.25, gaps)
        beats = s.messages[n_before:]
        self.assertTrue(beats)
        self.assertTrue(all(n in (1, 2) for _, n in beats), "heart-beat messages %r" % beats)
        self.assertEqual(s.pings, 0, "ternd sent WebSocket pings")

    def test_stomp_silent_client_closed_like_tcp(self):
        # The client promises heart-beats every 1000 ms and sends nothing: over WS and over TCP
        # alike, the broker closes it after about twice that.
        t0 = time.monotonic()
        ws = self.ws_stomp()
        ws.connect("1.2", {"heart-beat": "1000,1000"})
        tcp = RawStomp(self.broker)
        self.addCleanup(tcp.close)
        f = tcp.connect("1.2", {"heart-beat": "1000,1000"})
        self.assertGreater(int(f["heart-beat"].split(",")[1]), 0, f)
        closed = {}

        def watch(name, conn):
            try:
                conn.expect_closed(timeout=6)
                closed[name] = time.monotonic() - t0
            except AssertionError as e:
                closed[name] = e

        th = threading.Thread(target=watch, args=("tcp", tcp))
        th.start()
        watch("ws", ws)
        th.join(10)
        for name in ("ws", "tcp"):
            self.assertIsInstance(closed.get(name), float, "%s: %r" % (name, closed.get(name)))
            self.assertGreaterEqual(closed[name], 1.0, "%s closed too early" % name)
            self.assertLessEqual(closed[name], 3.5, "%s closed too late" % name)
        self.assertLess(abs(closed["ws"] - closed["tcp"]), 1.0, closed)
        self.assert_ws_up()

    def test_stomp_client_heartbeats_keep_connection_open(self):
        s = self.ws_stomp()
        s.connect("1.2", {"heart-beat": "1000,0"})
        end = time.monotonic() + 3.5  # well past 2x the promised interval
        while time.monotonic() < end:
            self.assertTrue(s.send(b"\n"), "closed although the client sent heart-beats")
            self.assertTrue(s.still_open(0.25), "closed although the client sent heart-beats")
        s.send_frame("SUBSCRIBE", {"destination": "/queue/" + unique_name(), "id": "0",
                                   "receipt": "alive"})
        self.assertEqual(s.recv_frame().get("receipt-id"), "alive")

    def test_mqtt_keepalive_by_pingreq_not_websocket_pings(self):
        # keepalive 1 s: PINGREQ keeps it open; silence closes it after 1.5 s although the
        # client would answer any WebSocket ping (websocket-client does so by itself).
        w = self.ws_mqtt(keepalive=1)
        end = time.monotonic() + 3.5
        while time.monotonic() < end:
            w.send(PINGREQ_BYTES)
            self.assertEqual(w.recv_packet(timeout=2).raw, PINGRESP_BYTES)
            try:
                w._fill(time.monotonic() + 0.3)
                self.fail("unexpected bytes %r" % w.buf)
            except socket.timeout:
                pass
        t0 = time.monotonic()
        w.expect_closed(timeout=5)
        self.assertGreaterEqual(time.monotonic() - t0, 1.0)
        self.assertLessEqual(time.monotonic() - t0, 3.0)
        self.assertEqual(w.pings, 0, "ternd sent WebSocket pings")

    def test_paho_keepalive_over_ws(self):
        c = self.ws_paho(connect=False)
        c.connect(keepalive=1)
        topic = "ka/" + c.client_id
        c.subscribe([(topic, 0)])
        deadline = time.monotonic() + 3.5  # paho pings every second; still connected
        while time.monotonic() < deadline:
            self.assertFalse(c.disconnected.wait(0.5), "paho was disconnected")
        c.publish(topic, b"alive")
        self.assertEqual(c.get().payload, b"alive")


# -- limits ---------------------------------------------------------------------------------------


class LimitTest(WsTestCase):
    LIMITS = {"max_message_size": MIB}

    def test_message_at_the_limit_accepted(self):
        topic = "lim/" + unique_id("t")
        tcp = self.client("tcp-sub")
        tcp.subscribe([(topic, 0)])
        w = self.ws_mqtt()
        body = payload(MIB, b"at-limit")
        self.assertTrue(w.send(publish_packet(topic, body)))  # one message: packet > 1 MiB
        m = tcp.get(timeout=30)
        self.assertEqual(digest(m.payload), digest(body))

    def over_limit(self, send):
        w = self.ws_mqtt()
        topic = "lim/" + unique_id("t")
        chunk = publish_packet(topic, payload(30000, b"small"))
        n = (MIB + 65536) // len(chunk) + 4  # > limit + framing, every packet small and valid
        send(w, chunk * n)
        w.wait_closed(timeout=15)
        self.assertEqual(w.close_code, CLOSE_TOO_BIG)
        self.assert_logged_once("WS-TOO-LARGE", w.peer)

    def test_message_over_the_limit_closed_1009(self):
        self.over_limit(lambda w, data: w.send(data))

    def test_fragmented_message_over_the_limit_closed_1009(self):
        self.over_limit(lambda w, data: w.send_fragments(
            [data[i:i + 50000] for i in range(0, len(data), 50000)]))

    def test_many_messages_each_under_the_limit_fine(self):
        topic = "lim/" + unique_id("t")
        tcp = self.client("tcp-sub")
        tcp.subscribe([(topic, 0)])
        w = self.ws_mqtt()
        body = payload(600000, b"under")
        for _ in range(4):  # 2.4 MB in all, 600 KB per message
            self.assertTrue(w.send(publish_packet(topic, body)))
        for m in tcp.get_n(4, timeout=30):
            self.assertEqual(digest(m.payload), digest(body))


# -- Origin allow-list and per-listener limits (listeners from a config file) ------------------


class ConfigListenerTest(BrokerTestCase):
    """Listeners from the config: ws with an Origin allow-list, ws without one but with its own
    max_message_size, and MQTT/TCP."""

    ORIGINS = ["https://good.example", "http://localhost:8080"]

    def setUp(self):
        fd, conf = tempfile.mkstemp(prefix="tern-ws-", suffix=".conf")
        with os.fdopen(fd, "w") as f:
            f.write("listeners:\n"
                    "  - url: ws://127.0.0.1:0\n"
                    "    allowed_origins: [%s]\n"
                    "  - url: ws://127.0.0.1:0\n"
                    "    max_message_size: 100000\n"
                    "  - url: mqtt://127.0.0.1:0\n" % ", ".join(self.ORIGINS))
        self.addCleanup(os.unlink, conf)
        self.broker = Broker(listeners=0, extra_args=["-c", conf])
        self._problems_before = self._problems()
        self.addCleanup(self._stop_broker)
        self.broker.start()
        lines = self.broker.wait_log(r"TERN-READY .* (ws|mqtt)://127\.0\.0\.1:\d+", count=3)
        ports = [re.search(r" (ws|mqtt)://127\.0\.0\.1:(\d+)", l).groups() for l in lines]
        self.ws_ports = [int(p) for s, p in ports if s == "ws"]
        self.broker.port = [int(p) for s, p in ports if s == "mqtt"][0]  # for Client
        self.assertEqual(len(self.ws_ports), 2, lines)

    def mqtt_over(self, port, origin=None, suppress_origin=False):
        w = WsStream("ws://%s:%d/mqtt" % (HOST, port), ["mqtt"], origin=origin,
                     suppress_origin=suppress_origin)
        self.addCleanup(w.close)
        w.send(connect_packet(unique_id("or")))
        self.assertEqual(w.recv_packet().raw, b"\x20\x02\x00\x00")
        return w

    def test_allowed_origins(self):
        listed, open_ = self.ws_ports
        for origin in self.ORIGINS:
            with self.subTest(origin=origin):
                self.mqtt_over(listed, origin)
        for origin in ("https://evil.example", "https://good.example.evil", "null"):
            with self.subTest(refused=origin):
                u = Upgrade(listed, protocols=["mqtt"], origin=origin)
                self.addCleanup(u.close)
                expect_handshake_refused(self, u, 403)
                self.broker.wait_log(r"WS-ORIGIN %s" % peer_re(u.peer))
                self.mqtt_over(listed, self.ORIGINS[0])  # a later round trip
                self.assertEqual(self.broker.count_log(r"WS-ORIGIN %s" % peer_re(u.peer)), 1)
        with self.subTest("no Origin on a listener with a list: allowed (not a browser)"):
            self.mqtt_over(listed, suppress_origin=True)
        with self.subTest("listener without a list: any Origin, or none"):
            self.mqtt_over(open_, "https://evil.example")
            self.mqtt_over(open_, suppress_origin=True)
        self.assertTrue(self.broker.is_running())

    def test_listener_max_message_size(self):
        # One message of seven 30000-byte PUBLISHes: each packet is under the listener's
        # max_message_size (100000), the message over it (plus framing).
        listed, small = self.ws_ports
        topic = "ll/" + unique_id("t")
        body = payload(30000, b"listener-limit")
        message = publish_packet(topic, body) * 7
        tcp = Client(self.broker, name="tcp")
        self.addCleanup(tcp.close)
        tcp.connect()
        tcp.subscribe([(topic, 0)])
        ok = self.mqtt_over(listed, self.ORIGINS[0])  # the default limit (100 MiB)
        ok.send(message)
        self.assertEqual([digest(m.payload) for m in tcp.get_n(7)], [digest(body)] * 7)
        w = self.mqtt_over(small)
        w.send(message)
        w.wait_closed()
        self.assertEqual(w.close_code, CLOSE_TOO_BIG)
        self.broker.wait_log(r"WS-TOO-LARGE %s" % peer_re(w.peer))
        self.mqtt_over(small)
        self.assertEqual(self.broker.count_log(r"WS-TOO-LARGE %s" % peer_re(w.peer)), 1)


# -- bad input -------------------------------------------------------------------------------------


class BadInputTest(WsTestCase):
    LIMITS = {"tls_handshake_timeout": 1000}

    def test_plain_http_request_426(self):
        for tls in (False, True):
            with self.subTest(tls=tls):
                u = self.upgrade(tls=tls, path="/", upgrade=False)
                self.assertEqual(u.status, 426, u.status_line)
                u.read_until_closed()
                self.assert_logged_once("WS-NOT-UPGRADE", u.peer)

    def test_plain_http_post_and_garbage_line(self):
        u = self.upgrade(path="/mqtt", upgrade=False, extra=["Content-Length: 3"])
        self.assertGreaterEqual(u.status, 400, u.status_line)
        self.assertLess(u.status, 500, u.status_line)
        u.read_until_closed()
        s = socket.create_connection((HOST, self.broker.port_of("ws")), timeout=TIMEOUT)
        self.addCleanup(s.close)
        s.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00\r\n\r\n")  # MQTT, not HTTP
        s.settimeout(TIMEOUT)
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        self.assertNotIn(b"\x20\x02\x00\x00", data)
        self.assert_ws_up()

    def test_text_message_for_mqtt_closed_1003(self):
        w = self.ws(("mqtt",))
        w.send(connect_packet(unique_id("txt")), ABNF.OPCODE_TEXT)
        w.wait_closed()
        self.assertEqual(w.close_code, CLOSE_UNACCEPTABLE)
        self.assertEqual(w.buf, b"", "the broker answered a text CONNECT")
        self.assert_logged_once("WS-TEXT", w.peer)

    def test_text_message_after_connect_closed_1003(self):
        w = self.ws_mqtt()
        w.send(PINGREQ_BYTES, ABNF.OPCODE_TEXT)
        w.wait_closed()
        self.assertEqual(w.close_code, CLOSE_UNACCEPTABLE)
        self.assert_logged_once("WS-TEXT", w.peer)

    def test_text_message_for_amqp_closed_1003(self):
        w = self.ws(("amqp",), "/amqp")
        w.send(AMQP_HEADER, ABNF.OPCODE_TEXT)
        w.wait_closed()
        self.assertEqual(w.close_code, CLOSE_UNACCEPTABLE)
        self.assert_logged_once("WS-TEXT", w.peer)

    def test_text_message_for_sniffed_mqtt_closed_1003(self):
        # No subprotocol; the first (text) message shows MQTT: refused as with `mqtt`.
        w = self.ws(None, "/")
        w.send(connect_packet(unique_id("txt")), ABNF.OPCODE_TEXT)
        w.wait_closed()
        self.assertEqual(w.buf, b"", "the broker answered a text CONNECT")
        self.assertEqual(w.close_code, CLOSE_UNACCEPTABLE)
        self.assert_logged_once("WS-TEXT", w.peer)

    def test_unmasked_client_frame_closed(self):
        # RFC 6455 5.1: a server MUST close the connection on an unmasked client frame
        # (libwebsockets 4.1 does not: ws' guard.h does).
        u = self.upgrade(protocols=["mqtt"])
        self.assertEqual(u.status, 101, u.status_line)
        u.send(ws_frame(connect_packet(unique_id("unm")), mask=False))
        frames = parse_frames(u.read_until_closed())
        self.assertNotIn(ABNF.OPCODE_BINARY, [op for op, _ in frames],
                         "the broker answered an unmasked frame: %r" % frames)
        self.assertEqual(close_code(frames), CLOSE_PROTOCOL, frames)
        self.assert_logged_once("WS-PROTOCOL", u.peer)

    def test_unmasked_frame_with_the_request_closed(self):
        # The frame arrives in the same segment as the HTTP request, before the 101.
        u = self.upgrade(protocols=["mqtt"],
                         first=ws_frame(connect_packet(unique_id("unm")), mask=False))
        self.assertEqual(u.status, 101, u.status_line)
        frames = parse_frames(u.read_until_closed())
        self.assertNotIn(ABNF.OPCODE_BINARY, [op for op, _ in frames], frames)
        self.assertEqual(close_code(frames), CLOSE_PROTOCOL, frames)
        self.assert_logged_once("WS-PROTOCOL", u.peer)

    def test_unmasked_frame_over_wss_closed(self):
        u = self.upgrade(protocols=["v12.stomp"], tls=True)
        self.assertEqual(u.status, 101, u.status_line)
        u.send(ws_frame(stomp_frame("CONNECT", [("accept-version", "1.2"), ("host", "localhost")]),
                        mask=False))
        frames = parse_frames(u.read_until_closed())
        self.assertNotIn(ABNF.OPCODE_BINARY, [op for op, _ in frames], frames)
        self.assertEqual(close_code(frames), CLOSE_PROTOCOL, frames)
        self.assert_logged_once("WS-PROTOCOL", u.peer)

    def test_unmasked_ping_after_masked_traffic_closed(self):
        # Masked frames of every length encoding (7-bit, 16-bit, 64-bit), split across writes
        # anywhere, are served; then an unmasked control frame (no data for the adapter)
        # still closes the connection.
        topic = "unm/" + unique_id("t")
        u = self.upgrade(protocols=["mqtt"])
        self.assertEqual(u.status, 101, u.status_line)
        stream = (ws_frame(connect_packet(unique_id("unm")))
                  + ws_frame(subscribe_packet(1, [(topic, 0)]))
                  + ws_frame(publish_packet(topic, varied_payload(300, b"a"), qos=0))
                  + ws_frame(publish_packet(topic, varied_payload(70000, b"b"), qos=0))
                  + ws_frame(b"", opcode=ABNF.OPCODE_PING))
        for i in range(0, len(stream), 997):
            self.assertTrue(u.send(stream[i:i + 997]))
        deadline = time.monotonic() + TIMEOUT
        while len([op for op, _ in parse_frames(u.buf) if op == ABNF.OPCODE_PONG]) < 1 or \
                len(b"".join(d for op, d in parse_frames(u.buf)
                             if op == ABNF.OPCODE_BINARY)) < 70300:
            self.assertTrue(u._recv(deadline), "closed early: %r" % parse_frames(u.buf))
        got = b"".join(d for op, d in parse_frames(u.buf) if op == ABNF.OPCODE_BINARY)
        self.assertIn(varied_payload(70000, b"b"), got)
        u.buf = b""
        u.send(ws_frame(b"x", opcode=ABNF.OPCODE_PING, mask=False))
        frames = parse_frames(u.read_until_closed())
        # (libwebsockets may have answered the ping before the broker saw it was unmasked)
        self.assertNotIn(ABNF.OPCODE_BINARY, [op for op, _ in frames], frames)
        self.assertEqual(close_code(frames), CLOSE_PROTOCOL, frames)
        self.assert_logged_once("WS-PROTOCOL", u.peer)

    def test_reserved_bits_and_bad_opcode_closed(self):
        for what, frame in (("rsv1 without an extension",
                             ws_frame(connect_packet(unique_id("rsv")), rsv=4)),
                            ("opcode 3", ws_frame(b"xx", opcode=3)),
                            ("fragmented ping", ws_frame(b"p", opcode=ABNF.OPCODE_PING,
                                                         fin=False))):
            with self.subTest(what):
                u = self.upgrade(protocols=["mqtt"])
                self.assertEqual(u.status, 101, u.status_line)
                u.send(frame)
                frames = parse_frames(u.read_until_closed())
                self.assertNotIn(ABNF.OPCODE_BINARY, [op for op, _ in frames], frames)
        self.assert_ws_up()

    def test_no_subprotocol_unknown_first_bytes(self):
        w = self.ws(None, "/")
        w.send(b"GET / HTTP/1.1\r\n\r\n")
        w.wait_closed()
        self.assertEqual(w.close_code, CLOSE_PROTOCOL)
        self.assert_logged_once("WS-PROTOCOL", w.peer)

    def test_no_subprotocol_and_silence_closed(self):
        t0 = time.monotonic()
        w = self.ws(None, "/")
        w.wait_closed(timeout=15)
        self.assertGreaterEqual(time.monotonic() - t0, 9.5)
        self.assert_logged_once("WS-PROTOCOL", w.peer)

    def test_tls_garbage_to_wss(self):
        s = socket.create_connection((HOST, self.broker.port_of("wss")), timeout=TIMEOUT)
        self.addCleanup(s.close)
        peer = "%s:%d" % s.getsockname()[:2]
        s.sendall(b"\x55" * 7 + os.urandom(1000))
        s.settimeout(TIMEOUT)
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
        self.assertTrue(self.broker.is_running())
        self.assert_peer_logged_once(peer)

    def test_tls_client_stops_mid_handshake(self):
        # limits.tls_handshake_timeout: 1000 (ms): closed within about 1-3 s.
        for what in ("ClientHello then silence", "half a ClientHello", "nothing at all"):
            with self.subTest(what):
                inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
                obj = client_context().wrap_bio(inc, out, server_hostname="localhost")
                try:
                    obj.do_handshake()
                except ssl.SSLWantReadError:
                    pass
                hello = out.read()
                data = {"ClientHello then silence": hello,
                        "half a ClientHello": hello[:len(hello) // 2],
                        "nothing at all": b""}[what]
                t0 = time.monotonic()
                s = socket.create_connection((HOST, self.broker.port_of("wss")),
                                             timeout=TIMEOUT)
                self.addCleanup(s.close)
                peer = "%s:%d" % s.getsockname()[:2]
                s.sendall(data)
                s.settimeout(6)
                try:
                    while s.recv(4096):
                        pass
                except ConnectionResetError:
                    pass
                except socket.timeout:
                    self.fail("still open after %.1f s" % (time.monotonic() - t0))
                took = time.monotonic() - t0
                self.assertGreaterEqual(took, 0.9)
                self.assertLessEqual(took, 3.5, "closed after %.1f s" % took)
                self.assert_peer_logged_once(peer)


# -- across protocols ------------------------------------------------------------------------------


class CrossProtocolTest(WsTestCase):

    def test_mqtt_ws_and_tcp_both_ways(self):
        for tls in (False, True):
            with self.subTest(tls=tls):
                w = self.ws_paho(tls=tls)
                t = self.client("tcp")
                topic = "x/" + w.client_id
                w.subscribe([(topic + "/from-tcp", 2)])
                t.subscribe([(topic + "/from-ws", 2)])
                for qos in (0, 1, 2):
                    w.publish(topic + "/from-ws", b"ws q%d" % qos, qos=qos)
                    t.publish(topic + "/from-tcp", b"tcp q%d" % qos, qos=qos)
                self.assertEqual([m.payload for m in t.get_n(3)], [b"ws q0", b"ws q1", b"ws q2"])
                self.assertEqual([m.payload for m in w.get_n(3)],
                                 [b"tcp q0", b"tcp q1", b"tcp q2"])

    def test_stomp_ws_and_tcp_both_ways(self):
        q = "/queue/" + unique_name("xq")
        s_ws = self.ws_stomp()
        s_ws.connect("1.2")
        s_tcp = self.stomp_tcp()
        s_tcp.subscribe(q + ".tcp")
        s_ws.send_frame("SUBSCRIBE", {"destination": q + ".ws", "id": "0", "receipt": "sub"})
        self.assertEqual(s_ws.recv_frame().get("receipt-id"), "sub")
        s_ws.send_frame("SEND", {"destination": q + ".tcp"}, "from ws", content_length=True)
        self.assertEqual(s_tcp.get().body, b"from ws")
        s_tcp.send(q + ".ws", b"from tcp")
        f = s_ws.recv_frame()
        self.assertEqual((f.command, f.body), ("MESSAGE", b"from tcp"))

    def test_mqtt_topic_is_stomp_topic_across_transports(self):
        base = unique_name("a")
        s_ws = self.ws_stomp()
        s_ws.connect("1.2")
        s_ws.send_frame("SUBSCRIBE", {"destination": "/topic/%s.b" % base, "id": "0",
                                      "receipt": "sub"})
        self.assertEqual(s_ws.recv_frame().get("receipt-id"), "sub")
        w = self.ws_paho()
        w.subscribe([("%s/c" % base, 0)])
        t = self.client("tcp")
        t.publish("%s/b" % base, b"mqtt tcp -> stomp ws", qos=1)
        f = s_ws.recv_frame()
        self.assertEqual((f.command, f.body), ("MESSAGE", b"mqtt tcp -> stomp ws"))
        w.publish("%s/b" % base, b"mqtt ws -> stomp ws", qos=1)
        self.assertEqual(s_ws.recv_frame().body, b"mqtt ws -> stomp ws")
        s_tcp = self.stomp_tcp()
        s_tcp.send("/topic/%s.c" % base, b"stomp tcp -> mqtt ws")
        self.assertEqual((w.get().topic, ), ("%s/c" % base, ))
        s_ws.send_frame("SEND", {"destination": "/topic/%s.c" % base}, "stomp ws -> mqtt ws")
        self.assertEqual(w.get().payload, b"stomp ws -> mqtt ws")

    def test_amqp_over_ws(self):
        for sub, tls in (("amqp", False), ("AMQPWSB10", False), ("amqp", True), (None, False)):
            with self.subTest(subprotocol=sub, tls=tls):
                a = self.amqp_ws(sub, tls)
                self.assertTrue(a.input.startswith(SASL_HEADER), a.input[:16])
                self.assertIn(AMQP_HEADER, a.input, a.input[:80])
                base = unique_name("amqp")
                t = self.client("tcp")
                t.subscribe([("%s/x" % base, 1)])
                snd = a.sender("topic://%s.x" % base)
                a.send(snd, b"amqp ws -> mqtt tcp")
                self.assertEqual(t.get().payload, b"amqp ws -> mqtt tcp")
                rcv = a.receiver("topic://%s.y" % base)
                t.publish("%s/y" % base, b"mqtt tcp -> amqp ws", qos=1)
                m = a.get()
                self.assertEqual(bytes(m.body), b"mqtt tcp -> amqp ws")
                q = "queue://" + unique_name("aq")
                s_tcp = self.stomp_tcp()
                s_tcp.subscribe("/queue/" + q[len("queue://"):])
                a.send(a.sender(q), b"amqp ws -> stomp tcp")
                self.assertEqual(s_tcp.get().body, b"amqp ws -> stomp tcp")
                del rcv
                a.close()


# -- large messages and many connections ---------------------------------------------------------


class LargeTest(WsTestCase):

    def test_5mib_publish_over_ws_and_wss_both_ways(self):
        for tls in (False, True):
            with self.subTest(tls=tls):
                body = payload(5 * MIB, b"large-%d" % tls)
                topic = "big/" + unique_id("t")
                t = self.client("tcp")
                t.subscribe([(topic + "/up", 1)])
                w = self.ws_paho(tls=tls)
                w.publish(topic + "/up", body, qos=1, timeout=LARGE_TIMEOUT)
                m = t.get(timeout=LARGE_TIMEOUT)
                self.assertEqual((m.topic, digest(m.payload)), (topic + "/up", digest(body)))
                # and back: TCP -> a raw WS subscriber, which also sees the message sizes
                r = self.ws_mqtt(tls=tls)
                r.send(subscribe_packet(1, [(topic + "/down", 0)]))
                self.assertEqual(r.recv_packet().type, SUBACK)
                back = body[::-1]
                t.publish(topic + "/down", back, qos=1, timeout=LARGE_TIMEOUT)
                p = r.recv_packet(timeout=LARGE_TIMEOUT)
                self.assertEqual(p.publish_fields()[0], topic + "/down")
                self.assertEqual(digest(p.publish_fields()[2]), digest(back))
                ops = {op for op, _ in r.messages}
                self.assertEqual(ops, {ABNF.OPCODE_BINARY})
                self.assertLessEqual(max(n for _, n in r.messages), WRITE_CHUNK)
                # and paho over WS receives it too
                w.subscribe([(topic + "/down", 0)])
                t.publish(topic + "/down", body, qos=1, timeout=LARGE_TIMEOUT)
                self.assertEqual(digest(w.get(timeout=LARGE_TIMEOUT).payload), digest(body))
                w.disconnect()
                t.disconnect()


class ChurnTest(WsTestCase):

    def test_100_connections_opened_and_closed(self):
        deadline = time.monotonic() + 120
        kinds = ["mqtt-clean", "mqtt-drop", "stomp", "handshake-only", "sniff-drop",
                 "upgrade-abandoned", "wss-mqtt", "amqp-header", "refused", "half-frame"]
        for i in range(100):
            self.assertLess(time.monotonic(), deadline, "churn loop too slow (at %d)" % i)
            kind = kinds[i % len(kinds)]
            with self.subTest(i=i, kind=kind):
                if kind == "mqtt-clean":
                    w = self.ws_mqtt()
                    w.send(b"\xe0\x00")
                    w.wait_closed()
                elif kind == "mqtt-drop":
                    w = self.ws_mqtt()
                    w.sock.close()  # no DISCONNECT, no close frame
                elif kind == "stomp":
                    s = self.ws_stomp()
                    s.connect("1.2")
                    s.close()
                elif kind == "handshake-only":
                    w = self.ws(("mqtt",))
                    w.close()
                elif kind == "sniff-drop":
                    w = self.ws(None, "/")
                    w.send(b"\x10")  # MQTT picked, CONNECT never finished
                    w.sock.close()
                elif kind == "upgrade-abandoned":
                    s = socket.create_connection((HOST, self.broker.port_of("ws")))
                    s.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: web")
                    s.close()
                elif kind == "wss-mqtt":
                    w = self.ws_mqtt(tls=True)
                    w.close()
                elif kind == "amqp-header":
                    w = self.ws(("amqp",))
                    w.send(AMQP_HEADER)
                    self.assertEqual(w.recv_exact(8), AMQP_HEADER)
                    w.sock.close()
                elif kind == "refused":
                    u = self.upgrade(protocols=["nope"])
                    self.assertEqual(u.status, 400)
                    u.close()
                else:
                    w = self.ws(("mqtt",))
                    w.sock.sendall(ws_frame(connect_packet("x"))[:5])  # half a frame, gone
                    w.sock.close()
        self.assert_ws_up(tls=True)
        s = self.ws_stomp()
        s.connect("1.2")
        s.send_frame("SUBSCRIBE", {"destination": "/queue/" + unique_name(), "id": "0",
                                   "receipt": "ok"})
        self.assertEqual(s.recv_frame().get("receipt-id"), "ok")


if __name__ == "__main__":
    unittest.main()
