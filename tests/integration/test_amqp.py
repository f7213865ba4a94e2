"""AMQP 1.0 through ternd's AMQP adapter (issue 13), driven by Qpid Proton's Python binding.

Spec: OASIS AMQP 1.0, cited as [AMQP part.section] (e.g. [AMQP 2.2] version negotiation). Both
Proton APIs are used: the blocking one (proton.utils.BlockingConnection) for straight-line
tests, and the event-driven one (proton.reactor.Container with a MessagingHandler, here a
Scenario) where a test needs what the blocking one cannot say: credit granted by hand, the
modified outcome's delivery-failed, undeliverable-here and message-annotations, presettled
deliveries as they arrive. Raw sockets check bad input byte by byte.

Addresses are ActiveMQ's, shared with STOMP and MQTT (protocols/amqp/amqp.h): queue://NAME is
STOMP /queue/NAME; topic://a.b is STOMP /topic/a.b and MQTT a/b; a bare NAME is a queue unless
its terminus has the capability "topic". Dead letters go to queue://DLQ.NAME.

Negative checks ("X was not delivered") never sleep: a marker goes to the same node afterwards
and the test looks at what arrived before it, or, on one connection, the reply to a later
attach shows the broker has handled everything sent before it (frames on one session keep
their order).

Run: TERND=build/dev/tools/ternd/ternd /usr/bin/python3 tests/integration/test_amqp.py -v
"""

import hashlib
import struct
import time
import unittest
import uuid

from proton import (Data, Delivery, Described, Endpoint, Link, Message, SASL, Terminus,
                    Timeout, symbol, uint, ulong)
from proton.handlers import MessagingHandler
from proton.reactor import (AtLeastOnce, AtMostOnce, Container, DurableSubscription,
                            LinkOption)
from proton.utils import BlockingConnection, LinkDetached

from harness import STOMP_EXTERNAL, TIMEOUT, StompTestCase, unique_name

MIB = 1 << 20
MAX_DELIVERIES = 7  # ternd's default limits.max_deliveries, as for STOMP
AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
SASL_HEADER = b"AMQP\x03\x01\x00\x00"

# Performative descriptors [AMQP 2.7] and SASL frames [AMQP 5.3.3].
OPEN, BEGIN, ATTACH, FLOW, TRANSFER, DISPOSITION, DETACH, END, CLOSE = range(0x10, 0x19)
SASL_MECHANISMS, SASL_INIT, SASL_OUTCOME = 0x40, 0x41, 0x44


def payload(n, seed):
    """n bytes that differ everywhere (a truncated or shifted copy does not compare equal)."""
    block = hashlib.sha256(seed).digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


def data_message(body, **kw):
    """A message whose body is one data section (inferred=True; Proton's default would make a
    bytes body an amqp-value holding binary)."""
    return Message(body=body, inferred=True, **kw)


def bodies(msgs):
    return [m.body for m in msgs]


class Capabilities(LinkOption):
    """Capabilities on the terminus the broker resolves: the source of a receiver, the target
    of a sender [AMQP 3.5.3, 3.5.4]."""

    def __init__(self, *caps):
        self.caps = [symbol(c) for c in caps]

    def apply(self, link):
        t = link.source if link.is_receiver else link.target
        t.capabilities.put_array(False, Data.SYMBOL)
        t.capabilities.enter()
        for c in self.caps:
            t.capabilities.put_symbol(c)
        t.capabilities.exit()


def capabilities_of(terminus):
    """A terminus' capabilities (one symbol or an array of them) as a list of str."""
    d = terminus.capabilities
    d.rewind()
    if not d.next():
        return []
    obj = d.get_object()
    return [str(c) for c in getattr(obj, "elements", [obj])]


class NoSource(LinkOption):
    """A receiver that attaches with a null source: Qpid JMS's way to look up (and then, by
    closing the link, delete) a durable subscription by its link name."""

    def apply(self, link):
        link.source.type = Terminus.UNSPECIFIED


# -- raw AMQP frames ---------------------------------------------------------------------------


def frame(body, type_=0, channel=0):
    """A frame [AMQP 2.3.1]: size, doff 2, type, channel, then body."""
    return struct.pack(">IBBH", 8 + len(body), 2, type_, channel) + body


def performative(code, *fields):
    """A described list, encoded by Proton."""
    d = Data()
    d.put_described()
    d.enter()
    d.put_ulong(code)
    d.put_list()
    d.enter()
    for f in fields:
        d.put_object(f)
    d.exit()
    d.exit()
    return d.encode()


def open_frame(container_id="raw"):
    return frame(performative(OPEN, container_id))


class RawFrame:
    """A frame from the broker: type (0 AMQP, 1 SASL), channel, the performative's descriptor
    code and fields (None for an empty, heart-beat frame)."""

    def __init__(self, type_, channel, body):
        self.type = type_
        self.channel = channel
        self.code = None
        self.fields = None
        if body:
            d = Data()
            d.decode(body)
            d.rewind()
            d.next()
            obj = d.get_object()
            self.code = int(obj.descriptor)
            self.fields = list(obj.value)

    def field(self, i):
        return self.fields[i] if self.fields and i < len(self.fields) else None

    def error_condition(self):
        """A close's or detach's error condition name, or None."""
        i = {CLOSE: 0, END: 0, DETACH: 2}.get(self.code)
        err = self.field(i) if i is not None else None
        return str(err.value[0]) if isinstance(err, Described) else None

    def __repr__(self):
        return "RawFrame(type=%d, ch=%d, 0x%s, %r)" % (self.type, self.channel,
                                                        "%02x" % self.code if self.code else "--",
                                                        self.fields)


def read_frame(raw, timeout=None):
    """The next frame from a harness RawClient."""
    head = raw.recv_exact(8, timeout)
    size, doff, type_, channel = struct.unpack(">IBBH", head)
    rest = raw.recv_exact(size - 8, timeout) if size > 8 else b""
    return RawFrame(type_, channel, rest[doff * 4 - 8:])


def read_frames_until_closed(raw, timeout=None):
    """Every frame the broker sends until it closes the connection (fails if it does not)."""
    rest = raw.expect_closed(timeout)
    out = []
    while len(rest) >= 8:
        size, doff, type_, channel = struct.unpack(">IBBH", rest[:8])
        if len(rest) < size:
            break
        out.append(RawFrame(type_, channel, rest[doff * 4:size]))
        rest = rest[size:]
    if rest:
        raise AssertionError("trailing bytes after the last frame: %r" % rest)
    return out


class Connection(BlockingConnection):
    """A BlockingConnection whose links get unique names unless given one (Proton's default,
    container id + address, is the same for two links to one address on one connection,
    which the broker refuses [AMQP 2.6.1])."""

    def create_sender(self, address, handler=None, name=None, options=None):
        return super().create_sender(address, handler, name or unique_name("snd"), options)

    def create_receiver(self, address=None, credit=None, dynamic=False, handler=None,
                        name=None, options=None):
        return super().create_receiver(address, credit, dynamic, handler,
                                       name or unique_name("rcv"), options)

    def abort(self):
        """Drop the connection (no close frame, no wait for the broker's)."""
        self.conn.transport.close_tail()
        self.conn.transport.close_head()
        try:
            self.wait(lambda: False, timeout=0.1)
        except Exception:
            pass

    def sync(self):
        """Returns once the broker has answered an attach sent now: it has handled all this
        connection sent before (its one session keeps frames in order), and all it sent
        before the answer has arrived."""
        self.create_receiver("queue://" + unique_name("sync")).close()


# -- the event-driven API ----------------------------------------------------------------------


class _Deadline:
    def __init__(self, scenario):
        self.scenario = scenario

    def on_timer_task(self, event):
        self.scenario.timed_out()


class Scenario(MessagingHandler):
    """An event-driven client: run() starts a Container with it, which connects (on_start) and
    calls setup(event); the subclass then acts on Proton's events and calls finish() when it is
    done (which closes the connection, so the container's run ends). An exception raised by a
    handler, an error condition from the broker, or `timeout` seconds without finish() fail
    the test. No flow controller (prefetch=0) and no automatic accept: a scenario grants
    credit and settles as it says."""

    def __init__(self, case, timeout=TIMEOUT, container_id=None, **connect_kw):
        super().__init__(prefetch=0, auto_accept=False)
        self.case = case
        self.timeout = timeout
        self.container_id = container_id
        self.connect_kw = connect_kw
        self.finished = False
        self.failure = None
        self.step = "connecting"

    def run(self):
        container = Container(self)
        if self.container_id:
            container.container_id = self.container_id
        container.run()
        if self.failure:
            raise AssertionError("%s: %s" % (type(self).__name__, self.failure))
        if not self.finished:
            raise AssertionError("%s: ended before finish() at step %r"
                                 % (type(self).__name__, self.step))
        return self

    def on_start(self, event):
        self.container = event.container
        self.deadline = event.container.schedule(self.timeout, _Deadline(self))
        self.conn = event.container.connect(self.case.url, reconnect=False, **self.connect_kw)
        self.setup(event)

    def setup(self, event):
        raise NotImplementedError

    def finish(self):
        self.finished = True
        self.deadline.cancel()
        self.conn.close()

    def fail(self, why):
        if not self.failure:
            self.failure = why
        self.deadline.cancel()
        self.conn.close()
        self.container.stop()

    def timed_out(self):
        self.fail("no finish() within %.0f s, at step %r" % (self.timeout, self.step))

    def barrier(self, then):
        """Calls then() once the broker has answered an attach sent now: on this connection's
        one session, everything the broker was going to send before it has arrived."""
        self.container.create_receiver(self.conn, "queue://" + unique_name("barrier"),
                                       name=unique_name("barrier"), handler=_BarrierHandler(then))

    def on_link_error(self, event):
        self.fail("link %s detached with %s" % (event.link.name, event.link.remote_condition))

    def on_connection_error(self, event):
        self.fail("connection closed with %s" % event.connection.remote_condition)

    def on_transport_error(self, event):
        if not self.finished:
            self.fail("transport error %s" % event.transport.condition)

    def on_disconnected(self, event):
        if not self.finished and not self.failure:
            self.fail("disconnected at step %r" % self.step)


class _BarrierHandler(MessagingHandler):
    def __init__(self, then):
        super().__init__(prefetch=0, auto_accept=False)
        self.then = then

    def on_link_opened(self, event):
        event.link.close()
        self.then()


# -- the test case -----------------------------------------------------------------------------


@unittest.skipIf(bool(STOMP_EXTERNAL), "the AMQP tests start their own ternd")
class AmqpTestCase(StompTestCase):
    """Each test gets a ternd with MQTT, STOMP and AMQP listeners (see StompTestCase). AMQP
    connections made through amqp() are closed before the broker stops (and before
    restart_broker())."""

    AMQP = True

    def setUp(self):
        super().setUp()
        self._amqp_conns = []
        self.addCleanup(self.close_amqp)

    @property
    def url(self):
        return "amqp://127.0.0.1:%d" % self.broker.amqp_port

    def amqp(self, container_id=None, **kw):
        """A BlockingConnection (SASL ANONYMOUS unless kw say otherwise), closed after the
        test; with container_id, the container-id its open carries."""
        container = Container()
        if container_id:
            container.container_id = container_id
        kw.setdefault("timeout", TIMEOUT)
        c = Connection(self.url, container=container, **kw)
        self._amqp_conns.append(c)
        return c

    def close_amqp(self):
        conns, self._amqp_conns = self._amqp_conns, []
        for c in conns:
            try:
                c.close()
            except Exception:  # the broker may have closed it, or be gone
                pass

    def restart_broker(self, crash=False):
        self.close_amqp()
        super().restart_broker(crash)

    # -- helpers ------------------------------------------------------------------------------

    def send(self, address, *msgs, conn=None, options=None):
        """Send msgs (Message, or anything a Message body can be) to address, each confirmed
        (BlockingSender.send returns once the broker settled it; it fails unless accepted)."""
        conn = conn or self.amqp()
        s = conn.create_sender(address, options=options)
        for m in msgs:
            d = s.send(m if isinstance(m, Message) else Message(body=m))
            if s.link.snd_settle_mode != Link.SND_SETTLED:
                self.assertEqual(d.remote_state, Delivery.ACCEPTED, "not accepted: %r" % m)
        s.close()

    def receive(self, receiver, n=1, accept=True, timeout=TIMEOUT):
        """The next n messages of a BlockingReceiver (each accepted unless accept=False)."""
        out = []
        for _ in range(n):
            out.append(receiver.receive(timeout=timeout))
            if accept:
                receiver.accept()
        return out

    def receive_large(self, conn, receiver, timeout=60, idle=5):
        """The next message of a BlockingReceiver, accepted, for a large one: fails after
        `idle` seconds in which no byte of it arrived (a stall shows sooner than timeout)."""
        deadline = time.monotonic() + timeout
        have, since = -1, time.monotonic()
        while not receiver.fetcher.has_message:
            d = receiver.link.current
            now = d.pending if d else 0
            if now != have:
                have, since = now, time.monotonic()
            if time.monotonic() - since > idle or time.monotonic() > deadline:
                conn.abort()  # a wedged connection would take a minute to close
                raise AssertionError("stalled: %d bytes of the message after %.0f s"
                                     % (have, time.monotonic() - since))
            try:
                conn.wait(lambda: receiver.fetcher.has_message, timeout=0.5)
            except Timeout:
                pass
        m = receiver.fetcher.pop()
        receiver.accept()
        return m

    def until_marker(self, receiver, send_marker, timeout=TIMEOUT):
        """Messages a receiver gets (and accepts) before a marker that send_marker(body) sends
        now to the node it is attached to."""
        marker = "marker-" + uuid.uuid4().hex[:10]
        send_marker(marker)
        return self.until_body(receiver, marker, timeout)

    def until_body(self, receiver, marker, timeout=TIMEOUT):
        """Messages a receiver gets (and accepts) before the one whose body is marker."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                m = receiver.receive(timeout=max(left, 0.01))
            except Timeout:
                raise AssertionError("marker not received within %.0f s; before it: %r"
                                     % (timeout, seen))
            receiver.accept()
            if m.body == marker:
                return seen
            seen.append(m)

    def queue_backlog(self, address):
        """What a new receiver of queue `address` gets before a marker sent now (all of it
        accepted, so the queue is then empty)."""
        conn = self.amqp()
        r = conn.create_receiver(address)
        return self.until_marker(r, lambda body: self.send(address, body, conn=conn))

    def expect_refused(self, make_link, condition="amqp:not-found"):
        """make_link() attaches a link the broker must refuse: it attaches with no terminus and
        detaches with `condition` [AMQP 2.6.3]."""
        try:
            link = make_link()
        except LinkDetached as e:
            self.assertEqual(e.condition, condition, str(e))
            return e
        raise AssertionError("link %s to %r was not refused" % (link.name, link.remote_target
                                                                if link.is_sender
                                                                else link.remote_source))

    def assert_amqp_up(self):
        """The broker still runs and serves a new AMQP connection."""
        self.assertTrue(self.broker.is_running(), "broker process exited")
        q = "queue://" + unique_name("up")
        c = self.amqp()
        self.send(q, "still up", conn=c)
        r = c.create_receiver(q)
        self.assertEqual(self.receive(r)[0].body, "still up")
        c.close()

    def raw_amqp(self, header=AMQP_HEADER):
        """A raw socket on the AMQP port; with a header, sent at once and ternd's read back."""
        r = self.raw(port=self.broker.amqp_port)
        if header is not None:
            r.send(header)
            self.assertEqual(r.recv_exact(8), header)
        return r


# -- connections --------------------------------------------------------------------------------


class ConnectTest(AmqpTestCase):
    def round_trip(self, conn):
        q = "queue://" + unique_name("conn")
        self.send(q, "hello", conn=conn)
        self.assertEqual(self.receive(conn.create_receiver(q))[0].body, "hello")

    def test_sasl_anonymous(self):
        c = self.amqp(allowed_mechs="ANONYMOUS")
        sasl = c.conn.transport.sasl()
        self.assertEqual((sasl.outcome, sasl.mech), (SASL.OK, "ANONYMOUS"))
        self.round_trip(c)

    def test_sasl_plain_any_user_accepted(self):
        for user, password in [("alice", "secret"), ("bob", "other")]:
            with self.subTest(user=user):
                c = self.amqp(user=user, password=password, allowed_mechs="PLAIN",
                              allow_insecure_mechs=True)
                sasl = c.conn.transport.sasl()
                self.assertEqual((sasl.outcome, sasl.mech), (SASL.OK, "PLAIN"))
                self.round_trip(c)

    def test_no_sasl_layer(self):
        c = self.amqp(sasl_enabled=False)
        self.assertEqual(c.conn.remote_container, "tern")
        self.round_trip(c)

    def test_raw_sasl_mechanisms_and_anonymous_outcome(self):
        # [AMQP 5.3.2]: the server offers its mechanisms; ANONYMOUS is accepted with code 0,
        # then the AMQP layer starts with its own header.
        r = self.raw_amqp(header=SASL_HEADER)
        f = read_frame(r)
        self.assertEqual((f.type, f.code), (1, SASL_MECHANISMS), f)
        mechs = f.field(0)  # one symbol or an array of them
        self.assertEqual(sorted(str(m) for m in getattr(mechs, "elements", [mechs])),
                         ["ANONYMOUS", "PLAIN"])
        r.send(frame(performative(SASL_INIT, symbol("ANONYMOUS")), type_=1))
        f = read_frame(r)
        self.assertEqual((f.type, f.code, int(f.field(0))), (1, SASL_OUTCOME, 0), f)
        r.send(AMQP_HEADER + open_frame())
        self.assertEqual(r.recv_exact(8), AMQP_HEADER)
        f = read_frame(r)
        self.assertEqual((f.code, f.field(0)), (OPEN, "tern"), f)

    def test_raw_no_sasl_open(self):
        # [AMQP 2.2]: a client may start with the AMQP header directly (no security layer).
        r = self.raw_amqp()
        r.send(open_frame())
        f = read_frame(r)
        self.assertEqual((f.type, f.code), (0, OPEN), f)
        self.assertEqual(f.field(0), "tern")
        self.assertEqual(int(f.field(2)), 131072, "max-frame-size")  # limits.amqp_max_frame_size
        self.assertGreater(int(f.field(4) or 0), 0, "no idle-time-out in ternd's open")

    def test_open_properties(self):
        c = self.amqp()
        self.assertEqual(c.conn.remote_container, "tern")
        self.assertEqual(c.conn.remote_properties.get(symbol("product")), "Tern")
        self.assertGreater(c.conn.transport.remote_idle_timeout, 0)

    def test_max_message_size_advertised_on_attach(self):
        c = self.amqp()
        s = c.create_sender("queue://" + unique_name("mms"))
        # [AMQP 2.7.3 attach, max-message-size]: ternd takes messages up to max_message_size
        # (100 MiB by default) on a link the client sends on.
        self.assertGreaterEqual(s.link.remote_max_message_size, 10 * MIB)


# -- queues -------------------------------------------------------------------------------------


class QueueTest(AmqpTestCase):
    def test_queue_send_and_receive(self):
        q = "queue://" + unique_name("q")
        self.send(q, "one", "two", "three")
        c = self.amqp()
        r = c.create_receiver(q)
        self.assertEqual(bodies(self.receive(r, 3)), ["one", "two", "three"])
        self.assertEqual(r.link.remote_source.address, q)

    def test_bare_name_is_queue(self):
        name = unique_name("bare")
        self.send("queue://" + name, "via queue://")
        self.send(name, "via bare name")
        self.send("/queue/" + name, "via /queue/")
        c = self.amqp()
        r = c.create_receiver(name)
        self.assertEqual(bodies(self.receive(r, 3)), ["via queue://", "via bare name",
                                                      "via /queue/"])
        self.assertEqual(bodies(self.queue_backlog("queue://" + name)), [])

    def test_competing_receivers_share_messages(self):
        # Each with credit for all 10: the broker shares them (round-robin, as for STOMP).
        q = "queue://" + unique_name("compete")
        c = self.amqp()
        a = c.create_receiver(q, credit=10)
        b = c.create_receiver(q, credit=10)
        sent = ["m%d" % i for i in range(10)]
        self.send(q, *sent)
        c.wait(lambda: a.fetcher.has_message + b.fetcher.has_message >= 10,
               msg="10 messages between two receivers")
        got_a = [a.receive(timeout=0) for _ in range(a.fetcher.has_message)]
        got_b = [b.receive(timeout=0) for _ in range(b.fetcher.has_message)]
        for _ in got_a:
            a.accept()
        for _ in got_b:
            b.accept()
        self.assertEqual(sorted(bodies(got_a) + bodies(got_b)), sorted(sent))
        self.assertEqual(sorted([bodies(got_a), bodies(got_b)]), [sent[0::2], sent[1::2]],
                         "not round-robin")
        # Each once: nothing more comes to either, and the queue is empty.
        a.close()
        seen = self.until_marker(b, lambda body: self.send(q, body))
        self.assertEqual(bodies(seen), [])

    def test_stomp_consumer_gets_amqp_message_and_back(self):
        name = unique_name("x")
        st = self.stomp()
        st.subscribe("/queue/" + name)
        self.send("queue://" + name, data_message(b"from amqp"))
        self.assertEqual(st.get().body, b"from amqp")
        st.send("/queue/" + name + "-back", b"from stomp", receipt=True)
        c = self.amqp()
        m = self.receive(c.create_receiver("queue://" + name + "-back"))[0]
        self.assertEqual(m.body, b"from stomp")

    def test_message_waits_in_queue_for_receiver(self):
        q = "queue://" + unique_name("wait")
        self.send(q, "early")
        c = self.amqp()
        self.assertEqual(self.receive(c.create_receiver(q))[0].body, "early")


# -- topics -------------------------------------------------------------------------------------


class TopicTest(AmqpTestCase):
    def test_wildcards(self):
        p = unique_name("w")
        c = self.amqp()
        star = c.create_receiver("topic://%s.*" % p, credit=10)
        rest = c.create_receiver("topic://%s.>" % p, credit=10)
        exact = c.create_receiver("topic://%s.b" % p, credit=10)
        self.send("topic://%s.b" % p, "a.b")
        self.send("topic://%s.b.c" % p, "a.b.c")
        self.send("topic://%s" % p, "a")
        self.send("topic://%s.m" % p, "marker")
        self.send("topic://%s.b" % p, "marker b")
        self.assertEqual(bodies(self.until_body(star, "marker")), ["a.b"])
        # ActiveMQ's P.> also matches P itself (as MQTT's a/# matches a): not checked.
        self.assertEqual([b for b in bodies(self.until_body(rest, "marker")) if b != "a"],
                         ["a.b", "a.b.c"])
        self.assertEqual(bodies(self.until_body(exact, "marker b")), ["a.b"])

    def test_every_topic_receiver_gets_a_copy(self):
        t = "topic://" + unique_name("copy")
        c = self.amqp()
        rs = [c.create_receiver(t, credit=10) for _ in range(3)]
        self.send(t, "to all")
        for r in rs:
            self.assertEqual(self.receive(r)[0].body, "to all")

    def test_topic_without_receivers_keeps_nothing(self):
        t = "topic://" + unique_name("none")
        self.send(t, "lost")
        c = self.amqp()
        r = c.create_receiver(t, credit=10)
        self.assertEqual(bodies(self.until_marker(r, lambda body: self.send(t, body))), [])

    def test_bare_name_with_topic_capability_is_topic(self):
        name = unique_name("cap")
        c = self.amqp()
        r1 = c.create_receiver(name, credit=10, options=Capabilities("topic"))
        r2 = c.create_receiver(name, credit=10, options=Capabilities("topic"))
        mq = self.client("cap")
        mq.subscribe([(name, 1)])
        self.send(name, "to the topic", options=Capabilities("topic"))
        self.assertEqual(self.receive(r1)[0].body, "to the topic")
        self.assertEqual(self.receive(r2)[0].body, "to the topic")
        self.assertEqual(mq.get().payload, b"to the topic")
        # ... and not to the queue of that name.
        self.assertEqual(bodies(self.queue_backlog(name)), [])

    def test_mqtt_stomp_amqp_topics_every_direction(self):
        """MQTT a/b == STOMP /topic/a.b == AMQP topic://a.b: a message from each protocol
        reaches a subscriber on each of the three."""
        p = unique_name("x")
        mq = self.client("x")
        self.assertEqual(mq.subscribe([("%s/b" % p, 1)]), [1])
        st = self.stomp()
        st.subscribe("/topic/%s.b" % p)
        c = self.amqp()
        r = c.create_receiver("topic://%s.b" % p, credit=10)
        mq_pub = self.client("xp")
        mq_pub.publish("%s/b" % p, b"from mqtt", qos=1)
        st.send("/topic/%s.b" % p, b"from stomp", receipt=True)
        self.send("topic://%s.b" % p, data_message(b"from amqp"))
        want = [b"from mqtt", b"from stomp", b"from amqp"]
        self.assertEqual([m.payload for m in mq.get_n(3)], want)
        self.assertEqual(bodies(st.get_n(3)), want)
        got = self.receive(r, 3)
        self.assertEqual(bodies(got), want)

    def test_amqp_wildcard_receives_mqtt_and_stomp(self):
        p = unique_name("wx")
        c = self.amqp()
        r = c.create_receiver("topic://%s.>" % p, credit=10)
        self.client("wxp").publish("%s/a/b" % p, b"mqtt a/b", qos=1)
        self.stomp().send("/topic/%s.c" % p, b"stomp c", receipt=True)
        got = self.receive(r, 2)
        self.assertEqual(bodies(got), [b"mqtt a/b", b"stomp c"])


# -- credit and settlement ----------------------------------------------------------------------


class CreditOne(Scenario):
    """A receiver granted 1 credit gets one message of two, nothing while its credit is 0, and
    the second once it grants 1 more [AMQP 2.6.7]."""

    def setup(self, event):
        self.q = "queue://" + unique_name("credit")
        self.got = []
        self.accepted = 0
        self.receiver = event.container.create_receiver(self.conn, self.q, name="r")
        self.sender = event.container.create_sender(self.conn, self.q, name="s")
        self.step = "attach"

    def on_link_opened(self, event):
        if event.link == self.receiver:
            self.receiver.flow(1)
            self.step = "send"

    def on_sendable(self, event):
        if event.sender == self.sender and self.step == "send":
            self.sender.send(Message(body="first"))
            self.sender.send(Message(body="second"))
            self.step = "sent"

    def on_accepted(self, event):
        self.accepted += 1
        if self.accepted == 2:
            # Both are in the queue. Once the broker answers a later attach, it has made up
            # its mind about the second message.
            self.barrier(self.check_nothing_more)

    def check_nothing_more(self):
        self.case.assertEqual(bodies(self.got), ["first"])
        self.case.assertEqual((self.receiver.credit, self.receiver.queued), (0, 0))
        self.step = "more credit"
        self.receiver.flow(1)

    def on_message(self, event):
        self.got.append(event.message)
        event.delivery.update(Delivery.ACCEPTED)
        event.delivery.settle()
        if len(self.got) == 1:
            self.case.assertEqual(self.receiver.credit, 0)
        elif self.step == "more credit":
            self.case.assertEqual(bodies(self.got), ["first", "second"])
            self.finish()
        else:
            self.fail("a message delivered with no credit: %r" % event.message)


class Collect(Scenario):
    """Receives n messages from an address with credit n and settle mode options, recording
    each delivery's state; sends `send` messages first on another link."""

    def __init__(self, case, address, n, options=None, send=(), **kw):
        super().__init__(case, **kw)
        self.address = address
        self.n = n
        self.options = options
        self.to_send = list(send)
        self.got = []
        self.settled_on_arrival = []

    def setup(self, event):
        self.receiver = event.container.create_receiver(self.conn, self.address, name="r",
                                                        options=self.options)
        self.receiver.flow(self.n)
        if self.to_send:
            self.sender = event.container.create_sender(self.conn, self.address, name="s")
        self.step = "receive"

    def on_sendable(self, event):
        while self.to_send and event.sender.credit:
            event.sender.send(Message(body=self.to_send.pop(0)))

    def on_message(self, event):
        self.got.append(event.message)
        self.settled_on_arrival.append(event.delivery.settled)
        if not event.delivery.settled:
            event.delivery.update(Delivery.ACCEPTED)
            event.delivery.settle()
        if len(self.got) == self.n:
            self.finish()


class SettlementTest(AmqpTestCase):
    def test_credit_one_gets_one_until_more_is_granted(self):
        CreditOne(self).run()

    def test_blocking_receiver_credit_zero_gets_nothing(self):
        q = "queue://" + unique_name("c0")
        c = self.amqp()
        r = c.create_receiver(q, credit=0)  # no credit until receive() grants 1
        self.send(q, "a", "b", conn=c)
        c.sync()  # the broker is past both messages
        self.assertEqual((r.link.credit, r.link.queued, r.fetcher.has_message), (0, 0, 0))
        self.assertEqual(bodies(self.receive(r, 2)), ["a", "b"])

    def test_drain_uses_up_credit(self):
        # [AMQP 2.6.7]: with drain, the broker sends what it has, then uses up the rest of
        # the credit (a flow back with the delivery-count advanced), as Qpid JMS's
        # receiveNoWait() expects.
        q = "queue://" + unique_name("drain")
        c = self.amqp()
        r = c.create_receiver(q, credit=0)
        self.send(q, "only one", conn=c)
        r.link.drain(5)
        c.wait(lambda: not r.link.draining(), msg="drain")
        self.assertEqual((r.link.credit, r.fetcher.has_message), (0, 1))
        self.assertEqual(r.fetcher.pop().body, "only one")

    def test_sender_credit_replenished(self):
        # ternd grants credit in batches (1000 by default): 2,500 presettled messages, then
        # one confirmed, all arrive in order.
        q = "queue://" + unique_name("many")
        c = self.amqp()
        s = c.create_sender(q, options=AtMostOnce())
        n = 2500
        for i in range(n):
            s.send(Message(body=i))
        self.send(q, "last", conn=c)
        r = c.create_receiver(q, credit=200)
        self.assertEqual(bodies(self.receive(r, n + 1)), list(range(n)) + ["last"])

    def test_presettled_sender_at_most_once(self):
        q = "queue://" + unique_name("amo")
        c = self.amqp()
        s = c.create_sender(q, options=AtMostOnce())
        self.assertEqual(s.link.remote_snd_settle_mode, Link.SND_SETTLED)
        for i in range(3):
            d = s.send(Message(body="pre %d" % i))
            self.assertIsNone(d.remote_state or None, "the broker answered a settled transfer")
        r = c.create_receiver(q)
        self.assertEqual(bodies(self.receive(r, 3)), ["pre 0", "pre 1", "pre 2"])

    def test_presettled_receiver_at_most_once(self):
        q = "queue://" + unique_name("amo-r")
        s = Collect(self, q, 2, options=AtMostOnce(), send=["x", "y"]).run()
        self.assertEqual(s.receiver.remote_snd_settle_mode, Link.SND_SETTLED)
        self.assertEqual(bodies(s.got), ["x", "y"])
        self.assertEqual(s.settled_on_arrival, [True, True], "transfers not settled")
        # Settled when sent: gone from the queue although the client never said anything.
        self.assertEqual(bodies(self.queue_backlog(q)), [])

    def test_unsettled_at_least_once(self):
        q = "queue://" + unique_name("alo")
        c = self.amqp()
        s = c.create_sender(q, options=AtLeastOnce())
        self.assertEqual(s.link.remote_snd_settle_mode, Link.SND_UNSETTLED)
        d = s.send(Message(body="alo"))
        self.assertEqual(d.remote_state, Delivery.ACCEPTED)
        got = Collect(self, q, 1, options=AtLeastOnce()).run()
        self.assertEqual(got.settled_on_arrival, [False])
        self.assertEqual(bodies(got.got), ["alo"])
        self.assertEqual(bodies(self.queue_backlog(q)), [])

    def test_unsettled_delivery_comes_back_after_connection_loss(self):
        q = "queue://" + unique_name("lost")
        self.send(q, "again")
        c = self.amqp()
        r = c.create_receiver(q, options=AtLeastOnce())
        m = r.receive(timeout=TIMEOUT)
        self.assertEqual((m.body, m.delivery_count), ("again", 0))
        c.close()  # no outcome
        c2 = self.amqp()
        m2 = self.receive(c2.create_receiver(q))[0]
        # [AMQP 3.2.1 header]: it may have been processed, so it comes with delivery-count 1
        # (a possible duplicate) and first-acquirer false.
        self.assertEqual((m2.body, m2.delivery_count, m2.first_acquirer), ("again", 1, False))


# -- dispositions -------------------------------------------------------------------------------


class Disposer(Scenario):
    """Sends messages to a queue, receives them on receivers (credits: each one's credit) and
    settles each with what decide(receiver index, message) returns: an outcome
    (Delivery.ACCEPTED, ...) or a dict for MODIFIED (failed, undeliverable, annotations). Then
    after(i, message) runs: what it sends goes out after that disposition (one session keeps
    the order), and it calls finish() at the end."""

    def __init__(self, case, queue, messages, credits=(100,), **kw):
        super().__init__(case, **kw)
        self.queue = queue
        self.to_send = list(messages)
        self.credits = list(credits)
        self.log = []  # (receiver index, body, delivery_count, annotations)
        self.props = []  # the application properties of each

    def setup(self, event):
        self.receivers = [event.container.create_receiver(self.conn, self.queue, name="r%d" % i)
                          for i in range(len(self.credits))]
        self.opened = 0
        self.step = "attach"

    def on_link_opened(self, event):
        if event.link in self.receivers:
            self.opened += 1
            if self.opened == len(self.receivers):
                for r, credit in zip(self.receivers, self.credits):
                    if credit:
                        r.flow(credit)
                self.sender = event.container.create_sender(self.conn, self.queue, name="s")
                self.step = "send"

    def on_sendable(self, event):
        while self.to_send and event.sender.credit:
            self.send_more(self.to_send.pop(0))

    def send_more(self, *msgs):
        for m in msgs:
            self.sender.send(m if isinstance(m, Message) else Message(body=m))

    def on_message(self, event):
        i = self.receivers.index(event.receiver)
        m = event.message
        self.log.append((i, m.body, m.delivery_count, dict(m.annotations or {})))
        self.props.append(m.properties)
        self.step = "message %d" % len(self.log)
        what = self.decide(i, m)
        d = event.delivery
        if isinstance(what, dict):
            d.local.failed = what.get("failed", False)
            d.local.undeliverable = what.get("undeliverable", False)
            if what.get("annotations"):
                d.local.annotations = what["annotations"]
            d.update(Delivery.MODIFIED)
        else:
            d.update(what)
        d.settle()
        self.after(i, m)

    def decide(self, i, m):
        raise NotImplementedError

    def after(self, i, m):
        pass


class DispositionTest(AmqpTestCase):
    def test_accepted_is_gone(self):
        q = "queue://" + unique_name("acc")
        self.send(q, "done")
        c = self.amqp()
        r = c.create_receiver(q)
        self.assertEqual(self.receive(r)[0].body, "done")
        r.close()
        self.assertEqual(bodies(self.queue_backlog(q)), [])

    def test_released_redelivered_without_counting(self):
        q = "queue://" + unique_name("rel")
        self.send(q, "back")
        c = self.amqp()
        r = c.create_receiver(q)
        counts = []
        for _ in range(3):
            m = r.receive(timeout=TIMEOUT)
            counts.append((m.body, m.delivery_count))
            r.release(delivered=False)  # RELEASED [AMQP 3.4.4]
        m = self.receive(r)[0]
        counts.append((m.body, m.delivery_count))
        # [AMQP 3.4.4]: released is no delivery attempt; delivery-count is not incremented.
        self.assertEqual(counts, [("back", 0)] * 4)
        r.close()
        self.assertEqual(bodies(self.queue_backlog(q)), [])

    def test_rejected_goes_to_dlq(self):
        name = unique_name("rej")
        q = "queue://" + name
        self.send(q, data_message(b"poison", properties={"k": "v"}))
        c = self.amqp()
        r = c.create_receiver(q)
        self.assertEqual(r.receive(timeout=TIMEOUT).body, b"poison")
        r.reject()
        r.close()
        self.assertEqual(bodies(self.queue_backlog(q)), [])
        dead = self.receive(c.create_receiver("queue://DLQ." + name))[0]
        self.assertEqual((dead.body, dead.properties), (b"poison", {"k": "v"}))

    def test_modified_failed_counts_then_dlq(self):
        """Each modified with delivery-failed counts [AMQP 3.4.5]: delivery-count 0..6, and
        after the 7th failed delivery (max_deliveries) the message goes to DLQ.<queue>."""
        name = unique_name("fail")

        class FailAll(Disposer):
            def decide(self, i, m):
                return Delivery.ACCEPTED if m.body == "marker" else {"failed": True}

            def after(self, i, m):
                if m.body == "marker":
                    self.finish()
                elif len(self.log) == MAX_DELIVERIES:
                    # Sent after the last failure: whatever comes back first shows up first.
                    self.send_more("marker")

        s = FailAll(self, "queue://" + name, ["flaky"]).run()
        self.assertEqual([(b, n) for _, b, n, _ in s.log],
                         [("flaky", i) for i in range(MAX_DELIVERIES)] + [("marker", 0)])
        c = self.amqp()
        dead = self.receive(c.create_receiver("queue://DLQ." + name))[0]
        self.assertEqual(dead.body, "flaky")
        self.assertEqual(bodies(self.queue_backlog("queue://" + name)), [])

    def test_modified_not_failed_redelivered_without_counting(self):
        class Twice(Disposer):
            def decide(self, i, m):
                return {"failed": False} if len(self.log) < 3 else Delivery.ACCEPTED

            def after(self, i, m):
                if len(self.log) == 3:
                    self.finish()

        s = Twice(self, "queue://" + unique_name("mod0"), ["again"]).run()
        self.assertEqual([(b, n) for _, b, n, _ in s.log], [("again", 0)] * 3)

    def test_modified_undeliverable_here_goes_to_another_receiver(self):
        """Receiver 0 (credit 10) says undeliverable-here: the message is not offered to it
        again, but to receiver 1 (given credit afterwards); receiver 0 still gets later
        messages [AMQP 3.4.5]."""

        class Elsewhere(Disposer):
            def decide(self, i, m):
                return {"undeliverable": True} if m.body == "picky" and i == 0 \
                    else Delivery.ACCEPTED

            def after(self, i, m):
                if (i, m.body) == (0, "picky"):
                    self.send_more("later")
                elif (i, m.body) == (0, "later"):
                    self.receivers[1].flow(1)
                elif (i, m.body) == (1, "picky"):
                    self.send_more("marker")
                elif (i, m.body) == (0, "marker"):
                    self.finish()
                else:
                    self.fail("unexpected delivery %r to receiver %d" % (m.body, i))

        s = Elsewhere(self, "queue://" + unique_name("undeliv"), ["picky"],
                      credits=[10, 0]).run()
        self.assertEqual([(i, b) for i, b, _, _ in s.log],
                         [(0, "picky"), (0, "later"), (1, "picky"), (0, "marker")])

    def test_modified_annotations_on_redelivery(self):
        ann = {symbol("x-opt-tern-reason"): "try later", symbol("x-opt-tern-n"): 3}

        class Annotate(Disposer):
            def decide(self, i, m):
                if len(self.log) == 1:
                    return {"failed": True, "annotations": ann}
                return Delivery.ACCEPTED

            def after(self, i, m):
                if len(self.log) == 2:
                    self.finish()

        sent = Message(body="annotated", annotations={symbol("x-opt-sender"): "s"})
        s = Annotate(self, "queue://" + unique_name("ann"), [sent]).run()
        self.assertEqual(len(s.log), 2)
        _, body, count, got = s.log[1]
        self.assertEqual((body, count), ("annotated", 1))
        # [AMQP 3.4.5 modified]: the annotations are merged into the message's.
        want = dict(ann)
        want[symbol("x-opt-sender")] = "s"
        self.assertEqual(got, want)

    def test_modified_annotations_on_message_from_stomp(self):
        """A message that came from STOMP (no AMQP sections of its own) keeps what AMQP
        receivers see of it (string body, application properties) when annotated."""
        name = unique_name("sann")
        st = self.stomp()
        st.send("/queue/" + name, b"text", headers={"content-type": "text/plain",
                                                     "color": "red"}, receipt=True)
        ann = {symbol("x-opt-tern-reason"): "again"}

        class Annotate(Disposer):
            def decide(self, i, m):
                return {"annotations": ann} if len(self.log) == 1 else Delivery.ACCEPTED

            def after(self, i, m):
                if len(self.log) == 2:
                    self.finish()

        s = Annotate(self, "queue://" + name, []).run()
        (_, first, _, _), (_, again, count, got) = s.log
        self.assertEqual((first, s.props[0]), ("text", {"color": "red"}))
        self.assertEqual((again, s.props[1], count, got), ("text", {"color": "red"}, 0, ann))


# -- durable subscriptions ---------------------------------------------------------------------


class DurableTest(AmqpTestCase):
    def subscribe(self, cid, topic, name, options=(), credit=10):
        c = self.amqp(container_id=cid)
        r = c.create_receiver(topic, name=name, credit=credit,
                              options=[DurableSubscription()] + list(options))
        self.assertEqual(r.link.remote_source.address, topic)
        return c, r

    def test_durable_subscription_keeps_messages_while_away(self):
        cid, t, name = unique_name("cid"), "topic://" + unique_name("dur"), unique_name("sub")
        c, r = self.subscribe(cid, t, name)
        self.send(t, "while here")
        self.assertEqual(self.receive(r)[0].body, "while here")
        # Away 1: the link detached (not closed); away 2: the connection gone.
        r.link.detach()
        c.sync()
        self.send(t, "while detached")
        c.close()
        self.send(t, "while disconnected")
        c, r = self.subscribe(cid, t, name)
        self.assertEqual(bodies(self.receive(r, 2)), ["while detached", "while disconnected"])

    def test_durable_subscription_survives_restart(self):
        cid, t, name = unique_name("cid"), "topic://" + unique_name("dur"), unique_name("sub")
        c, r = self.subscribe(cid, t, name)
        c.close()
        self.send(t, Message(body="kept 1", durable=True), Message(body="kept 2", durable=True))
        self.restart_broker(crash=True)
        c, r = self.subscribe(cid, t, name)
        got = self.receive(r, 2)
        self.assertEqual(bodies(got), ["kept 1", "kept 2"])
        self.assertTrue(all(m.durable for m in got))
        self.assertEqual(bodies(self.until_marker(r, lambda body: self.send(t, body))), [])

    def test_unsettled_redelivered_on_reattach(self):
        cid, t, name = unique_name("cid"), "topic://" + unique_name("dur"), unique_name("sub")
        c, r = self.subscribe(cid, t, name)
        self.send(t, "not yet")
        m = r.receive(timeout=TIMEOUT)  # not settled
        self.assertEqual((m.body, m.delivery_count), ("not yet", 0))
        c.close()
        c, r = self.subscribe(cid, t, name)
        m = self.receive(r)[0]
        self.assertEqual((m.body, m.delivery_count, m.first_acquirer), ("not yet", 1, False))

    def test_other_container_id_is_another_subscription(self):
        t, name = "topic://" + unique_name("dur"), unique_name("sub")
        c, r = self.subscribe(unique_name("cid"), t, name)
        c.close()
        self.send(t, "for the first")
        c2, r2 = self.subscribe(unique_name("cid2"), t, name)
        self.assertEqual(bodies(self.until_marker(r2, lambda body: self.send(t, body))), [])

    def test_detach_closed_deletes_subscription(self):
        cid, t, name = unique_name("cid"), "topic://" + unique_name("dur"), unique_name("sub")
        c, r = self.subscribe(cid, t, name)
        r.close()  # detach with closed=true [AMQP 2.6.6]
        self.send(t, "after delete")
        c2, r2 = self.subscribe(cid, t, name)
        self.assertEqual(bodies(self.until_marker(r2, lambda body: self.send(t, body))), [])

    def test_jms_unsubscribe_by_null_source_lookup(self):
        """Qpid JMS unsubscribes by attaching a receiver with the subscription's link name and
        no source: the broker answers with the subscription's source (topic://FILTER), and
        closing that link deletes the subscription."""
        cid, t, name = unique_name("cid"), "topic://" + unique_name("dur"), unique_name("sub")
        c, r = self.subscribe(cid, t, name)
        c.close()
        c = self.amqp(container_id=cid)
        look = c.create_receiver(None, name=name, credit=0, options=NoSource())
        self.assertEqual(look.link.remote_source.address, t)
        self.assertEqual(look.link.remote_source.durability, Terminus.DELIVERIES)
        look.close()
        # Gone: what is sent now is kept for no one, so a new subscription of that name (made
        # after) starts empty.
        self.send(t, "after unsubscribe")
        c.close()
        c2, r2 = self.subscribe(cid, t, name)
        self.assertEqual(bodies(self.until_marker(r2, lambda body: self.send(t, body))), [])

    def test_jms_unsubscribe_shared_subscription(self):
        t, sub = "topic://" + unique_name("shared"), unique_name("ssub")
        caps = [Capabilities("topic", "shared", "global")]
        c, r = self.subscribe(unique_name("cid"), t, sub + "|global", caps)
        c.close()
        c = self.amqp(container_id=unique_name("cid2"))
        look = c.create_receiver(None, name=sub + "|global", credit=0, options=NoSource())
        self.assertEqual(look.link.remote_source.address, t)
        self.assertIn("shared", capabilities_of(look.link.remote_source))
        look.close()
        self.send(t, "after unsubscribe")
        c2, r2 = self.subscribe(unique_name("cid3"), t, sub + "|global", caps)
        self.assertEqual(bodies(self.until_marker(r2, lambda body: self.send(t, body))), [])

    def test_jms_lookup_of_unknown_subscription_not_found(self):
        c = self.amqp(container_id=unique_name("cid"))
        self.expect_refused(lambda: c.create_receiver(None, name=unique_name("nosub"),
                                                      credit=0, options=NoSource()))
        self.assert_amqp_up()

    def test_shared_durable_subscription_competing_receivers(self):
        """Source capabilities shared + global, link names sub|global, sub|global2 (Qpid JMS
        naming) from two containers: one subscription, the receivers compete; it keeps
        messages while both are away."""
        t, sub = "topic://" + unique_name("shared"), unique_name("ssub")
        caps = [Capabilities("topic", "shared", "global")]
        c1, r1 = self.subscribe(unique_name("cid1"), t, sub + "|global", caps, credit=None)
        c2, r2 = self.subscribe(unique_name("cid2"), t, sub + "|global2", caps, credit=None)
        sent = ["s%d" % i for i in range(4)]
        self.send(t, *sent)
        got = []
        for _ in range(2):  # receive() grants one credit at a time
            got += self.receive(r1) + self.receive(r2)
        self.assertEqual(sorted(bodies(got)), sent)
        c1.close()
        c2.close()
        self.send(t, Message(body="while away", durable=True))
        self.restart_broker()  # a clean one (the other test kills it)
        c3, r3 = self.subscribe(unique_name("cid3"), t, sub + "|global", caps)
        self.assertEqual(bodies(self.until_marker(r3, lambda body: self.send(t, body))),
                         ["while away"])

    def test_shared_subscription_per_container(self):
        """Without `global`, a shared subscription belongs to its container: links sub and sub|2
        of one container compete; the same name in another container is another
        subscription, which gets its own copy."""
        t, sub, cid = "topic://" + unique_name("shared"), unique_name("ssub"), unique_name("cid")
        caps = [Capabilities("topic", "shared")]
        c = self.amqp(container_id=cid)
        opts = [DurableSubscription()] + caps
        r1 = c.create_receiver(t, name=sub, options=opts)
        r2 = c.create_receiver(t, name=sub + "|2", options=opts)
        other_c, other = self.subscribe(unique_name("cid2"), t, sub, caps, credit=None)
        self.send(t, "s0", "s1")
        got = self.receive(r1) + self.receive(r2)
        self.assertEqual(sorted(bodies(got)), ["s0", "s1"])
        self.assertEqual(bodies(self.receive(other, 2)), ["s0", "s1"])


# -- dynamic nodes ------------------------------------------------------------------------------


class DynamicTest(AmqpTestCase):
    def test_request_reply_through_dynamic_node(self):
        svc = "queue://" + unique_name("svc")
        server = self.amqp()
        requests = server.create_receiver(svc)
        client = self.amqp()
        replies = client.create_receiver(None, dynamic=True)
        reply_to = replies.link.remote_source.address
        self.assertTrue(reply_to.startswith("tmp."), reply_to)  # amqp.h: tmp.N.M
        self.assertTrue(replies.link.remote_source.dynamic)
        self.send(svc, Message(body="ping", reply_to=reply_to, correlation_id="c-1"),
                  conn=client)
        req = self.receive(requests)[0]
        self.assertEqual((req.body, req.reply_to, req.correlation_id), ("ping", reply_to, "c-1"))
        self.send(req.reply_to, Message(body="pong", correlation_id=req.correlation_id),
                  conn=server)
        rep = self.receive(replies)[0]
        self.assertEqual((rep.body, rep.correlation_id), ("pong", "c-1"))
        # Deleted with its link: a sender to it now is refused.
        replies.close()
        self.expect_refused(lambda: server.create_sender(reply_to))
        self.assert_amqp_up()

    def test_dynamic_node_deleted_with_connection(self):
        client = self.amqp()
        addr = client.create_receiver(None, dynamic=True).link.remote_source.address
        client.close()
        other = self.amqp()
        self.expect_refused(lambda: other.create_sender(addr))
        self.expect_refused(lambda: other.create_receiver(addr))


# -- large messages -----------------------------------------------------------------------------


class LargeTest(AmqpTestCase):
    def test_10_mib_amqp_to_amqp(self):
        q = "queue://" + unique_name("big")
        body = payload(10 * MIB, b"a2a")
        c = self.amqp()
        self.send(q, data_message(body), conn=c)
        m = self.receive_large(c, c.create_receiver(q, credit=1))
        self.assertTrue(m.inferred and isinstance(m.body, bytes), "not a data section")
        self.assertEqual(len(m.body), len(body))
        self.assertTrue(m.body == body, "the 10 MiB body differs")

    def test_10_mib_amqp_to_mqtt_and_stomp(self):
        p = unique_name("big")
        mq = self.client("big")
        self.assertEqual(mq.subscribe([("%s/x" % p, 1)]), [1])
        st = self.stomp()
        st.subscribe("/topic/%s.x" % p)
        body = payload(10 * MIB, b"a2ms")
        self.send("topic://%s.x" % p, data_message(body))
        self.assertTrue(mq.get(timeout=60).payload == body, "MQTT payload differs")
        self.assertTrue(st.get(timeout=60).body == body, "STOMP body differs")

    def send_big_persistent(self, name):
        """Three durable messages to the queue name, the middle one 10 MiB, each accepted,
        then kill -9 and restart; returns the big body."""
        body = payload(10 * MIB, b"persist")
        self.send("queue://" + name, data_message(b"small before", durable=True),
                  data_message(body, durable=True), data_message(b"small after", durable=True))
        self.restart_broker(crash=True)
        return body

    def test_10_mib_persistent_survives_kill(self):
        name = unique_name("bigp")
        body = self.send_big_persistent(name)
        c = self.amqp()
        r = c.create_receiver("queue://" + name, credit=3)
        got = self.receive(r) + [self.receive_large(c, r)] + self.receive(r)
        self.assertEqual([got[0].body, got[2].body], [b"small before", b"small after"])
        self.assertTrue(got[1].body == body, "the 10 MiB message differs after kill -9")
        self.assertTrue(got[1].durable)

    def test_10_mib_persistent_survives_kill_read_by_stomp(self):
        name = unique_name("bigp")
        body = self.send_big_persistent(name)
        st = self.stomp()
        st.subscribe("/queue/" + name)
        got = st.get_n(3, timeout=60)
        self.assertEqual([got[0].body, got[2].body], [b"small before", b"small after"])
        self.assertTrue(got[1].body == body, "the 10 MiB message differs after kill -9")


# -- message mapping ----------------------------------------------------------------------------


class MappingTest(AmqpTestCase):
    def test_body_kinds_round_trip(self):
        q = "queue://" + unique_name("kinds")
        cases = [
            ("string", Message(body="héllo wörld"), str, False),
            ("data", data_message(b"\x00\x01\xffdata"), bytes, True),
            ("amqp-value binary", Message(body=b"\x00bin"), bytes, False),
            ("map", Message(body={"a": 1, "b": [1, "two"], "c": {"d": None}}), dict, False),
            ("list", Message(body=[1, "two", 3.5, True]), list, False),
            ("amqp-sequence", Message(body=[1, 2, 3], inferred=True), list, True),
            ("int", Message(body=42), int, False),
            ("float", Message(body=2.5), float, False),
            ("uuid", Message(body=uuid.UUID(int=7)), uuid.UUID, False),
            ("empty data", data_message(b""), bytes, True),
        ]
        self.send(q, *[m for _, m, _, _ in cases])
        c = self.amqp()
        got = self.receive(c.create_receiver(q), len(cases))
        for (kind, sent, typ, inferred), m in zip(cases, got):
            with self.subTest(kind=kind):
                self.assertEqual(m.body, sent.body)
                self.assertIsInstance(m.body, typ)
                self.assertEqual(bool(m.inferred), inferred, "section kind changed")

    def test_properties_and_application_properties_round_trip(self):
        q = "queue://" + unique_name("props")
        app = {"i": 42, "s": "text", "b": True, "f": 1.25, "neg": -7, "big": 1 << 40,
               "bin": b"\x00\x01", "u": ulong(9)}
        sent = Message(body="p", id="msg-1", correlation_id=uuid.UUID(int=99),
                       reply_to="queue://replies", subject="subj",
                       content_type="text/plain", content_encoding="utf-8",
                       user_id=b"alice", group_id="g", group_sequence=3,
                       reply_to_group_id="rg", creation_time=1700000000.0,
                       properties=app)
        c = self.amqp(user="alice", password="pw", allowed_mechs="PLAIN",
                      allow_insecure_mechs=True)
        self.send(q, sent, Message(body="n", id=12345), conn=c)
        m, m2 = self.receive(c.create_receiver(q), 2)
        for attr in ("id", "correlation_id", "reply_to", "subject", "content_type",
                     "content_encoding", "user_id", "group_id", "group_sequence",
                     "reply_to_group_id", "creation_time"):
            with self.subTest(attr=attr):
                self.assertEqual(getattr(m, attr), getattr(sent, attr))
        self.assertEqual(m.properties, app)
        self.assertEqual({k: type(v) for k, v in m.properties.items()},
                         {k: type(v) for k, v in app.items()}, "types changed")
        self.assertEqual((m2.id, type(m2.id)), (12345, type(Message(id=12345).id)))

    def test_header_durable_priority_ttl(self):
        q = "queue://" + unique_name("hdr")
        self.send(q, Message(body="h", durable=True, priority=7, ttl=60),
                  Message(body="plain"))
        c = self.amqp()
        m, plain = self.receive(c.create_receiver(q), 2)
        self.assertEqual((m.durable, m.priority), (True, 7))
        self.assertTrue(0 < m.ttl <= 60, "ttl %r" % m.ttl)
        self.assertEqual((plain.durable, plain.priority, plain.ttl), (False, 4, 0))

    def test_amqp_bodies_to_mqtt_and_stomp(self):
        """A string body arrives as its UTF-8 bytes, a data body as its bytes."""
        p = unique_name("b2x")
        mq = self.client("b2x")
        mq.subscribe([("%s/t" % p, 1)])
        st = self.stomp()
        st.subscribe("/topic/%s.t" % p)
        self.send("topic://%s.t" % p, Message(body="grüße"), data_message(b"\x00raw\xff"))
        self.assertEqual([m.payload for m in mq.get_n(2)], ["grüße".encode(), b"\x00raw\xff"])
        self.assertEqual(bodies(st.get_n(2)), ["grüße".encode(), b"\x00raw\xff"])

    def test_mqtt_payload_to_amqp_is_data(self):
        p = unique_name("m2a")
        c = self.amqp()
        r = c.create_receiver("topic://%s.t" % p, credit=10)
        self.client("m2a").publish("%s/t" % p, b"\x00mqtt\xff", qos=1)
        m = self.receive(r)[0]
        self.assertEqual(m.body, b"\x00mqtt\xff")
        self.assertTrue(m.inferred, "not a data section")

    def test_stomp_text_plain_to_amqp_string(self):
        q = unique_name("s2a")
        self.stomp().send("/queue/" + q, "naïve text".encode(),
                          headers={"content-type": "text/plain"}, receipt=True)
        self.stomp().send("/queue/" + q, b"\x00bytes", receipt=True)
        c = self.amqp()
        text, raw = self.receive(c.create_receiver("queue://" + q), 2)
        self.assertEqual(text.body, "naïve text")
        self.assertEqual(text.content_type, "text/plain")
        self.assertEqual(raw.body, b"\x00bytes")

    def test_stomp_headers_to_application_properties(self):
        q = unique_name("h2a")
        self.stomp().send("/queue/" + q, b"x", headers={"color": "red", "x-count": "3",
                                                        "correlation-id": "corr-9",
                                                        "reply-to": "/queue/back"},
                          receipt=True)
        c = self.amqp()
        m = self.receive(c.create_receiver("queue://" + q))[0]
        self.assertEqual({k: m.properties.get(k) for k in ("color", "x-count")},
                         {"color": "red", "x-count": "3"})
        self.assertEqual((m.correlation_id, m.reply_to), ("corr-9", "queue://back"))

    def test_application_properties_to_stomp_headers(self):
        q = unique_name("a2h")
        st = self.stomp()
        st.subscribe("/queue/" + q)
        self.send("queue://" + q, Message(body="x", properties={"color": "blue", "n": 5},
                                          correlation_id="corr-1", reply_to="queue://r",
                                          content_type="text/plain", priority=7,
                                          durable=True))
        f = st.get()
        self.assertEqual(f.body, b"x")
        want = {"color": "blue", "n": "5", "correlation-id": "corr-1", "reply-to": "/queue/r",
                "content-type": "text/plain", "priority": "7", "persistent": "true"}
        self.assertEqual({k: f.get(k) for k in want}, want)


# -- persistence --------------------------------------------------------------------------------


class PersistenceTest(AmqpTestCase):
    def test_persistent_queue_message_survives_kill(self):
        q = "queue://" + unique_name("pers")
        # BlockingSender.send returns once the broker accepted: then it is on disk.
        self.send(q, Message(body="durable 1", durable=True),
                  Message(body="durable 2", durable=True, properties={"n": 2}))
        self.restart_broker(crash=True)
        c = self.amqp()
        got = self.receive(c.create_receiver(q), 2)
        self.assertEqual(bodies(got), ["durable 1", "durable 2"])
        self.assertEqual(got[1].properties, {"n": 2})
        self.assertTrue(all(m.durable for m in got))
        self.assertEqual(bodies(self.queue_backlog(q)), [])


# -- bad input ----------------------------------------------------------------------------------


class BadInputTest(AmqpTestCase):
    def test_wrong_protocol_header_gets_ours_then_close(self):
        # [AMQP 2.2]: an unsupported protocol header is answered with a supported one, then
        # the socket is closed.
        # AMQP\x02...: TLS, not offered on a plain amqp:// listener.
        for bad in [b"AMQP\x05\x01\x00\x00", b"AMQP\x00\x02\x00\x00", b"AMQP\x00\x01\x01\x00",
                    b"AMQP\x02\x01\x00\x00", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c", b"garbage!"]:
            with self.subTest(header=bad):
                r = self.raw_amqp(header=None)
                r.send(bad)
                # One of the headers ternd speaks: AMQP 1.0.0 with or without SASL.
                self.assertIn(r.recv_exact(8), (AMQP_HEADER, SASL_HEADER))
                r.expect_closed()  # proton writes an open and a close (framing-error) first
                r.close()
        self.assert_amqp_up()

    def test_frame_over_max_frame_size_framing_error(self):
        # [AMQP 2.7.1 open, max-frame-size]: ternd announces 128 KiB; a bigger frame is a
        # framing error: close with amqp:connection:framing-error.
        for size in [131073, 0x7FFFFFFF, 0xFFFFFFFF]:
            with self.subTest(size=size):
                r = self.raw_amqp()
                r.send(open_frame() + struct.pack(">IBBH", size, 2, 0, 0))
                frames = read_frames_until_closed(r)
                self.assertEqual([f.code for f in frames], [OPEN, CLOSE], frames)
                self.assertEqual(frames[-1].error_condition(), "amqp:connection:framing-error")
                r.close()
        self.assert_amqp_up()

    def test_attach_to_impossible_address_not_found(self):
        c = self.amqp()
        for addr in ["foo://x", "queue://", "topic://", "tmp.999999.1"]:
            with self.subTest(receiver=addr):
                self.expect_refused(lambda: c.create_receiver(addr))
        for addr in ["foo://x", "queue://", "topic://", "tmp.999999.1", "topic://a.*",
                     "topic://a.>", "/topic/a.*"]:
            with self.subTest(sender=addr):
                self.expect_refused(lambda: c.create_sender(addr))
        # The connection is still good, and so is the broker.
        q = "queue://" + unique_name("ok")
        self.send(q, "fine", conn=c)
        self.assertEqual(self.receive(c.create_receiver(q))[0].body, "fine")
        self.assert_amqp_up()

    def test_raw_attach_refused_with_detach_not_found(self):
        r = self.raw_amqp()
        r.send(open_frame())
        self.assertEqual(read_frame(r).code, OPEN)
        r.send(frame(performative(BEGIN, None, uint(0), uint(100), uint(100))))
        self.assertEqual(read_frame(r).code, BEGIN)
        source = Described(ulong(0x28), ["bad://x"])
        # role true: the client receives, from the source bad://x [AMQP 2.7.3].
        r.send(frame(performative(ATTACH, "l1", uint(0), True, None, None, source, None)))
        att = read_frame(r)
        self.assertEqual(att.code, ATTACH, att)
        det = read_frame(r)
        self.assertEqual((det.code, det.error_condition()), (DETACH, "amqp:not-found"), det)
        self.assertTrue(det.field(1), "detach without closed=true")
        self.assert_amqp_up()


# -- idle timeout -------------------------------------------------------------------------------


class IdleTimeoutTest(AmqpTestCase):
    LIMITS = {"amqp_idle_timeout": 1000}

    def test_idle_timeout_announced(self):
        r = self.raw_amqp()
        r.send(open_frame())
        f = read_frame(r)
        announced = int(f.field(4) or 0)
        # The issue: ternd announces its idle-time-out (amqp_idle_timeout) and closes a
        # connection silent past it; clients send empty frames at half of it [AMQP 2.4.5].
        self.assertEqual(announced, 1000, "idle-time-out %r: not amqp_idle_timeout" % announced)
        c = self.amqp()
        self.assertTrue(0 < c.conn.transport.remote_idle_timeout <= 1.0)

    def test_silent_client_closed(self):
        r = self.raw_amqp()
        t0 = time.monotonic()
        r.send(open_frame())
        opened = read_frame(r)
        announced = int(opened.field(4)) / 1000.0
        frames = read_frames_until_closed(r, timeout=5)
        elapsed = time.monotonic() - t0
        self.assertEqual([f.code for f in frames if f.code], [CLOSE], frames)
        self.assertEqual(frames[-1].error_condition(), "amqp:resource-limit-exceeded")
        self.assertGreaterEqual(elapsed, announced, "closed before its idle-time-out")
        self.assert_amqp_up()

    def test_heartbeating_client_stays_connected(self):
        # The client wants a frame every 500 ms at least (heartbeat 1 s: Proton announces half)
        # and sends empty frames at half of ternd's announced idle-time-out.
        c = self.amqp(heartbeat=1)
        try:
            c.wait(lambda: False, timeout=3.5, msg="three idle periods")
        except Timeout:
            pass
        self.assertTrue(c.conn.state & Endpoint.REMOTE_ACTIVE, "connection closed")
        q = "queue://" + unique_name("hb")
        self.send(q, "alive", conn=c)
        self.assertEqual(self.receive(c.create_receiver(q))[0].body, "alive")


if __name__ == "__main__":
    unittest.main()
