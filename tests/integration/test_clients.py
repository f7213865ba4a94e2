"""Round trips with the mosquitto command-line clients (mosquitto_pub, mosquitto_sub), so the
broker is checked against a client implementation we did not write."""

import queue
import subprocess
import threading
import unittest

from harness import HOST, TIMEOUT, BrokerTestCase, unique_id

# Prefix of the lines mosquitto_sub prints for messages (-F; '@' would start a time format).
MSG = "MSG: "


class CliSub:
    """mosquitto_sub in the background: exits by itself after `count` messages (-C), or after
    20 s (-W) at the latest. Its stdout is read on a thread; with -d it reports the SUBACK, so
    the test can wait until the subscription exists."""

    def __init__(self, port, topics, count, qos=0):
        # stdbuf: line-buffered stdout, or the debug lines wait in a pipe buffer.
        cmd = ["stdbuf", "-oL", "mosquitto_sub", "-h", HOST, "-p", str(port), "-i",
               unique_id("cli-sub"), "-d", "-q", str(qos), "-C", str(count), "-W", "20",
               "-F", MSG + "%q %r %t %p"]
        for t in topics:
            cmd += ["-t", t]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines = queue.Queue()
        self.all = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.all.append(line.rstrip("\n"))
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_subscribed(self, timeout=TIMEOUT):
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError("mosquitto_sub: no SUBACK within %.0f s: %r"
                                     % (timeout, self.all))
            if line is None:
                raise AssertionError("mosquitto_sub exited before subscribing: %r" % self.all)
            if line.startswith("Subscribed (mid:"):
                return line

    def messages(self, timeout=TIMEOUT):
        """Wait for it to exit (0) and return its message lines without the prefix."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError("mosquitto_sub did not exit: %r" % self.all)
        self.thread.join(TIMEOUT)
        if rc != 0:
            raise AssertionError("mosquitto_sub exited %d: %r" % (rc, self.all))
        return [line[len(MSG):] for line in self.all if line.startswith(MSG)]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(TIMEOUT)
        self.thread.join(TIMEOUT)
        self.proc.stdout.close()


class CliTest(BrokerTestCase):
    def sub(self, topics, count, qos=0):
        s = CliSub(self.broker.port, topics, count, qos)
        self.addCleanup(s.stop)
        s.wait_subscribed()
        return s

    def pub(self, topic, *args, stdin=None):
        cmd = ["mosquitto_pub", "-h", HOST, "-p", str(self.broker.port), "-i",
               unique_id("cli-pub"), "-t", topic] + list(args)
        r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=TIMEOUT)
        self.assertEqual(r.returncode, 0, "%s: %s%s" % (cmd, r.stdout, r.stderr))

    def test_qos_0_1_2_round_trip(self):
        s = self.sub(["cli/q"], 3, qos=2)
        self.pub("cli/q", "-q", "0", "-m", "zero")
        self.pub("cli/q", "-q", "1", "-m", "one")
        self.pub("cli/q", "-q", "2", "-m", "two words")
        # "%q %r %t %p": QoS, retain, topic, payload.
        self.assertEqual(s.messages(), ["0 0 cli/q zero", "1 0 cli/q one",
                                        "2 0 cli/q two words"])

    def test_qos2_many_lines_in_order(self):
        # mosquitto_pub -l publishes each stdin line as one message over one connection.
        n = 200
        s = self.sub(["cli/lines"], n, qos=2)
        self.pub("cli/lines", "-q", "2", "-l", stdin="".join("line %d\n" % i for i in range(n)))
        self.assertEqual(s.messages(), ["2 0 cli/lines line %d" % i for i in range(n)])

    def test_retained_set_delivered_and_cleared(self):
        self.pub("cli/r", "-q", "1", "-r", "-m", "keep")
        s = self.sub(["cli/r"], 1, qos=1)
        self.assertEqual(s.messages(), ["1 1 cli/r keep"])  # RETAIN=1 from the store
        self.pub("cli/r", "-q", "1", "-r", "-n")  # -n: empty payload clears it
        s = self.sub(["cli/r", "cli/end"], 1, qos=1)
        self.pub("cli/end", "-q", "1", "-m", "end")
        self.assertEqual(s.messages(), ["1 0 cli/end end"])

    def test_wildcard_subscription(self):
        s = self.sub(["a/#"], 3, qos=1)
        for topic in ("a", "other/x", "a/b", "ab", "a/b/c"):
            self.pub(topic, "-q", "1", "-m", "to " + topic)
        self.assertEqual(s.messages(), ["1 0 a to a", "1 0 a/b to a/b", "1 0 a/b/c to a/b/c"])


if __name__ == "__main__":
    unittest.main()
