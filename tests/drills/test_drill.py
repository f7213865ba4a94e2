"""A short failover drill for CI: tools/terndrill with two rounds each of kill and freeze (and of
linkcut where iptables works, i.e. as root with iptables installed), asserting that it exits 0
and that its JSON report shows nothing confirmed lost, no first delivery out of order, and every
drill done.

Run: TERND=build/dev/tools/ternd/ternd /usr/bin/python3 tests/drills/test_drill.py -v
Environment: TERND (required), TERN_DRILL_ROUNDS (default 2), TERN_DRILL_FAULTS (default
kill,freeze plus linkcut when possible), TERN_DRILL_KEEP=1 (keep the pair's data and logs).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
TERNDRILL = os.path.join(HERE, "..", "..", "tools", "terndrill")
BOUND_S = 240  # the whole drill; ctest's TIMEOUT is 300


def iptables_works():
    if os.geteuid() != 0 or not shutil.which("iptables"):
        return False
    r = subprocess.run(["iptables", "-S", "INPUT"], capture_output=True)
    return r.returncode == 0


class DrillTest(unittest.TestCase):
    def test_short_drill(self):
        ternd = os.environ.get("TERND")
        if not ternd:
            self.fail("set TERND=/path/to/ternd")
        faults = os.environ.get("TERN_DRILL_FAULTS")
        if not faults:
            faults = "kill,freeze" + (",linkcut" if iptables_works() else "")
        rounds = int(os.environ.get("TERN_DRILL_ROUNDS", "2"))
        out = tempfile.mkdtemp(prefix="tern-drill-")
        self.addCleanup(shutil.rmtree, out, True)
        report = os.path.join(out, "report.json")
        cmd = [sys.executable, TERNDRILL, "--ternd", ternd, "--faults", faults,
               "--rounds", str(rounds), "--json", report, "--start-timeout", "60"]
        if os.environ.get("TERN_DRILL_KEEP") == "1":
            cmd.append("--keep")
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=BOUND_S)
        except subprocess.TimeoutExpired as e:
            self.fail("terndrill did not finish within %d s\n%s\n%s"
                      % (BOUND_S, e.stdout or "", e.stderr or ""))
        sys.stdout.write(p.stdout)
        detail = "terndrill exited %d\n--- stdout\n%s\n--- stderr\n%s" % (p.returncode, p.stdout,
                                                                           p.stderr)
        self.assertEqual(p.returncode, 0, detail)
        with open(report) as f:
            r = json.load(f)
        self.assertTrue(r["ok"], detail)
        for proto in ("mqtt", "stomp", "amqp"):
            s = r["protocols"][proto]
            self.assertEqual(s["lost"], 0, "%s lost %s\n%s" % (proto, s["lost_examples"], detail))
            self.assertEqual(s["out_of_order"], 0, detail)
            self.assertGreater(s["confirmed"], 0, detail)
        for kind in faults.split(","):
            self.assertEqual(r["faults"][kind]["drills"], rounds, detail)
        if "linkcut" in r["faults"]:
            self.assertEqual(r["faults"]["linkcut"]["failovers"], 0, detail)


if __name__ == "__main__":
    unittest.main()
