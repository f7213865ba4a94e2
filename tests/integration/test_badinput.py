"""Bad input, exact bytes: each case is sent on its own connection, the broker must close that
connection (answering only where the spec says so) and keep serving everyone else. MQTT 3.1.1
section 4.8: a protocol violation closes the network connection."""

import unittest

from harness import (BrokerTestCase, connect_packet, mosquitto_differs, mqtt_str, packet,
                     publish_packet, subscribe_packet, tern_only, unique_id, varint)

MAX_VARINT = 268435455  # the largest Remaining Length the encoding allows
# A ternd log line about a peer's bad input: "... WARN  MQTT-PROTOCOL 127.0.0.1:PORT: ...".
BAD_INPUT_LOG = r"\bWARN\b.*\bMQTT-[A-Z0-9-]+ 127\.0\.0\.1:\d+"


def connect_ok():
    return connect_packet(unique_id("bad"))


# (name, bytes after a good CONNECT) for protocol violations on a connected client.
AFTER_CONNECT = [
    ("second CONNECT [MQTT-3.1.0-2]", connect_packet(unique_id("again"))),
    ("PUBLISH topic a/+ [MQTT-3.3.2-2]", publish_packet("a/+", b"x")),
    ("PUBLISH topic a/# [MQTT-3.3.2-2]", publish_packet("a/#", b"x")),
    ("PUBLISH topic # QoS 1 [MQTT-3.3.2-2]", publish_packet("#", b"x", qos=1, pid=1)),
    ("PUBLISH topic + [MQTT-3.3.2-2]", publish_packet("+", b"x")),
    ("PUBLISH topic 0xff [MQTT-1.5.3-1]", publish_packet(b"a/\xff", b"x")),
    ("PUBLISH topic overlong '/' [MQTT-1.5.3-1]", publish_packet(b"a\xc0\xafb", b"x")),
    ("PUBLISH topic surrogate U+D800 [MQTT-1.5.3-1]", publish_packet(b"a/\xed\xa0\x80", b"x")),
    ("PUBLISH topic truncated UTF-8 [MQTT-1.5.3-1]", publish_packet(b"a/\xe2\x82", b"x")),
    ("PUBLISH topic U+0000 [MQTT-1.5.3-2]", publish_packet(b"a\x00b", b"x")),
    ("PUBLISH empty topic [MQTT-4.7.3-1]", publish_packet(b"", b"x")),
    ("PUBLISH QoS 3 [MQTT-3.3.1-4]", packet(0x36, mqtt_str("a") + b"\x00\x01x")),
    ("PUBLISH QoS 1 packet id 0 [MQTT-2.3.1-1]", publish_packet("a", b"x", qos=1, pid=0)),
    ("SUBSCRIBE flags 0000 [MQTT-3.8.1-1]", packet(0x80, b"\x00\x01" + mqtt_str("a") + b"\x00")),
    ("UNSUBSCRIBE flags 0000 [MQTT-3.10.1-1]", packet(0xA0, b"\x00\x01" + mqtt_str("a"))),
    ("PUBREL flags 0000 [MQTT-3.6.1-1]", packet(0x60, b"\x00\x01")),
    ("DISCONNECT flags 0001 [MQTT-2.2.2-2]", b"\xe1\x00"),
    ("SUBSCRIBE without topics [MQTT-3.8.3-3]", packet(0x82, b"\x00\x01")),
    ("SUBSCRIBE requested QoS 3 [MQTT-3.8.3-4]", subscribe_packet(1, [("a", 3)])),
    ("SUBSCRIBE packet id 0 [MQTT-2.3.1-1]", subscribe_packet(0, [("a", 0)])),
    ("reserved packet type 0", b"\x00\x00"),
    ("reserved packet type 15", b"\xf0\x00"),
    ("Remaining Length with 5 bytes", b"\x30\xff\xff\xff\xff\x01"),
]

# (name, first bytes on a new connection): closed without any answer.
BEFORE_CONNECT = [
    ("protocol name MQTX [MQTT-3.1.2-1]", connect_packet("x", proto_name=b"MQTX")),
    ("protocol name mqtt [MQTT-3.1.2-1]", connect_packet("x", proto_name=b"mqtt")),
    ("empty protocol name [MQTT-3.1.2-1]", connect_packet("x", proto_name=b"")),
    ("PINGREQ first [MQTT-3.1.0-1]", b"\xc0\x00"),
    ("PUBLISH first [MQTT-3.1.0-1]", publish_packet("a", b"x")),
    ("SUBSCRIBE first [MQTT-3.1.0-1]", subscribe_packet(1, [("a", 0)])),
    ("CONNECT reserved flag [MQTT-3.1.2-3]", connect_packet("x", flags_extra=0x01)),
    ("CONNECT will QoS 3 [MQTT-3.1.2-14]", connect_packet("x", will=("t", b"m", 3, False))),
    ("CONNECT will QoS without will flag [MQTT-3.1.2-13]", connect_packet("x", flags_extra=0x08)),
    ("CONNECT password without username [MQTT-3.1.2-22]",
     connect_packet("x", flags_extra=0x40)),
    ("CONNECT Remaining Length with 5 bytes", b"\x10\xff\xff\xff\xff\x01"),
]


class BadInputTest(BrokerTestCase):
    def rejected(self, data, connect=True, answer=b""):
        """Send `data` on a new connection (after a good CONNECT if asked) and check the
        broker closes it after sending exactly `answer`."""
        r = self.raw()
        if connect:
            r.send(connect_ok())
            self.assertEqual(r.recv_packet().raw, b"\x20\x02\x00\x00")
        r.send(data)
        self.assertEqual(r.expect_closed(), answer)
        r.close()

    def test_connect_protocol_level_6_connack_1_then_close(self):
        # [MQTT-3.1.2-2]: CONNACK 0x01 (unacceptable protocol level), then close.
        self.rejected(connect_packet("x", level=6), connect=False, answer=b"\x20\x02\x00\x01")
        self.assert_broker_up()

    def test_bad_first_packet_closed_without_answer(self):
        for name, data in BEFORE_CONNECT:
            with self.subTest(name):
                self.rejected(data, connect=False)
        self.assert_broker_up()

    def test_violations_after_connect_closed_without_answer(self):
        for name, data in AFTER_CONNECT:
            with self.subTest(name):
                self.rejected(data)
        self.assert_broker_up()

    def test_packet_over_max_size_closed(self):
        # A PUBLISH that announces 256 MiB: the broker closes after reading the header,
        # before we could send it all (limits are checked before allocating).
        for first in (b"\x30", b"\x10"):
            with self.subTest(first_byte=first.hex()):
                r = self.raw()
                if first == b"\x30":
                    r.send(connect_ok())
                    self.assertEqual(r.recv_packet().raw, b"\x20\x02\x00\x00")
                r.send(first + varint(MAX_VARINT))
                chunk = b"\x00" * 65536
                for _ in range(32):  # at most 2 MiB; stops when the broker has closed
                    if not r.send(chunk):
                        break
                self.assertEqual(r.expect_closed(), b"")
                r.close()
        self.assert_broker_up()

    def test_truncated_packets_then_close(self):
        # Not a violation the broker can see before the close; it must simply survive.
        cases = [(False, b"\x10\x20" + b"\x00\x04MQ"),  # CONNECT cut short
                 (False, b"\x10\xff"),  # cut inside the Remaining Length
                 (True, b"\x30\x64\x00\x03a/b0123456789"),  # PUBLISH announced 100 bytes
                 (True, b"\x82\x08\x00\x01\x00"),  # SUBSCRIBE cut short
                 (True, b"\x30")]  # only the first byte
        for connect, data in cases:
            with self.subTest(data=data.hex(" ")):
                r = self.raw()
                if connect:
                    r.send(connect_ok())
                    self.assertEqual(r.recv_packet().raw, b"\x20\x02\x00\x00")
                r.send(data)
                r.close()
        self.assert_broker_up()

    @mosquitto_differs("answers a PINGREQ with reserved flags 0001 with PINGRESP")
    def test_pingreq_reserved_flags_closed(self):
        # [MQTT-2.2.2-2]
        self.rejected(b"\xc1\x00")
        self.assert_broker_up()

    @mosquitto_differs("ignores SUBACK, UNSUBACK and PINGRESP sent by a client instead of closing")
    def test_server_only_packet_from_client_closed(self):
        # A client must not send SUBACK, UNSUBACK, CONNACK or PINGRESP (section 4.8).
        for data in (b"\x90\x03\x00\x01\x00", b"\xb0\x02\x00\x01", b"\x20\x02\x00\x00",
                     b"\xd0\x00"):
            with self.subTest(data=data.hex(" ")):
                self.rejected(data)
        self.assert_broker_up()

    @tern_only("log lines")
    def test_each_bad_input_logged_once(self):
        # STYLE.md: bad input is logged once, as a warning with a stable MQTT-* ID (ternd
        # uses MQTT-PROTOCOL and MQTT-TOO-BIG), naming the peer.
        cases = [(False, data) for _, data in BEFORE_CONNECT]
        cases += [(True, data) for _, data in AFTER_CONNECT]
        cases.append((True, b"\x30" + varint(MAX_VARINT)))  # over the size limit
        before = self.broker.count_log(BAD_INPUT_LOG)
        for i, (connect, data) in enumerate(cases):
            r = self.raw()
            if connect:
                r.send(connect_ok())
                r.recv_packet()
            r.send(data)
            r.expect_closed()
            r.close()
            self.broker.wait_log(BAD_INPUT_LOG, count=before + i + 1)
        self.assert_broker_up()  # by now a second log line for any case would be there
        self.assertEqual(self.broker.count_log(BAD_INPUT_LOG), before + len(cases))


if __name__ == "__main__":
    unittest.main()
