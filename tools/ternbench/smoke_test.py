#!/usr/bin/python3
"""ternbench smoke test: a short QoS 1 (or STOMP) run against a real ternd.

Usage: smoke_test.py TERND TERNBENCH [mqtt|stomp|amqp|mqtts|ws|wss] [discard]

Starts ternd on a free port (parsed from its TERN-READY line), runs 2,000 messages through one
publisher and one subscriber, checks the RESULT line (received=2000, lost=0), then stops ternd
with SIGTERM and checks that it exits with 0. mqtt (the default): QoS 1. stomp: a queue, SENDs
with receipts, persistent:true, the consumer ACKing each MESSAGE (client-individual). amqp: a
queue, unsettled durable transfers, the receiver accepting each one. mqtts, ws, wss: QoS 1
over TLS, WebSocket and WebSocket over TLS (certificates from tests/tls/mkcerts.sh, verified by
ternbench with --tls-ca).
discard: 256 KiB messages read with ternbench --discard, which must have dropped the tails of
some of them unread (discarded > 0) and still count all.
"""
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def wait_ready(proc, timeout, scheme):
    """Reads ternd's stderr until TERN-READY; returns the port."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        if not sel.select(max(0.0, deadline - time.monotonic())):
            continue
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
        m = re.search(rb"TERN-READY listening on " + scheme.encode() + rb"://127\.0\.0\.1:(\d+)",
                      buf)
        if m:
            return int(m.group(1))
    fail("ternd did not print TERN-READY; stderr:\n" + buf.decode(errors="replace"))


def main():
    args = sys.argv[3:]
    discard = args[-1:] == ["discard"]
    if discard:
        args = args[:-1]
    if len(sys.argv) < 3 or args not in ([], ["mqtt"], ["stomp"], ["amqp"], ["mqtts"], ["ws"],
                                         ["wss"]):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    ternd, ternbench = sys.argv[1], sys.argv[2]
    scheme = args[0] if args else "mqtt"
    mode = (["--qos", "1"] if scheme in ("mqtt", "mqtts", "ws", "wss") else
            ["--persistent"] if scheme == "amqp" else ["--ack", "client-individual", "--persistent"])
    if discard:
        mode += ["--discard", "--size", "262144"]
    with tempfile.TemporaryDirectory(prefix="ternbench-smoke-") as data:
        tls = []
        if scheme in ("mqtts", "wss"):
            certs = os.path.join(data, "certs")
            top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            subprocess.run([os.path.join(top, "tests", "tls", "mkcerts.sh"), certs], check=True)
            tls = ["--tls-cert", os.path.join(certs, "server.pem"),
                   "--tls-key", os.path.join(certs, "server.key")]
            mode += ["--tls-ca", os.path.join(certs, "ca.pem")]
        broker = subprocess.Popen(
            [ternd, "--listen", scheme + "://127.0.0.1:0", "--data", os.path.join(data, "d")]
            + tls,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            port = wait_ready(broker, 30, scheme)
            # Keep draining ternd's stderr so it never blocks on a full pipe.
            threading.Thread(target=broker.stderr.read, daemon=True).start()
            run = subprocess.run(
                [ternbench, "--url", "%s://127.0.0.1:%d" % (scheme, port), "--count", "2000",
                 "--quiet", "--duration", "60", "--broker-pid", str(broker.pid)] + mode,
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90)
            sys.stdout.write(run.stdout)
            sys.stderr.write(run.stderr)
            if run.returncode != 0:
                fail("ternbench exited with %d" % run.returncode)
            lines = [l for l in run.stdout.splitlines() if l.startswith("RESULT ")]
            if len(lines) != 1:
                fail("expected one RESULT line")
            result = dict(kv.split("=", 1) for kv in lines[0].split()[1:])
            for key, want in (("sent", "2000"), ("expected", "2000"), ("received", "2000"),
                              ("lost", "0"), ("dup", "0"), ("stop", "complete")):
                if result.get(key) != want:
                    fail("%s=%s, want %s" % (key, result.get(key), want))
            if discard and int(result.get("discarded", "0")) == 0:
                fail("discarded=%s: --discard dropped nothing" % result.get("discarded"))
        finally:
            if broker.poll() is None:
                broker.send_signal(signal.SIGTERM)
            try:
                code = broker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                broker.kill()
                broker.wait()
                fail("ternd did not stop within 30 s of SIGTERM")
        if code != 0:
            fail("ternd exited with %d after SIGTERM" % code)
    print("ternbench %s%s smoke test passed" % (scheme, " discard" if discard else ""))


if __name__ == "__main__":
    main()
