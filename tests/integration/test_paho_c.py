"""The Paho C program (paho_c_test.c, synchronous MQTTClient API) against the broker: QoS 0/1/2
series with exact counts and a retained message. ctest gives the program's path in
PAHO_C_TEST."""

import os
import subprocess
import unittest

from harness import BrokerTestCase

PAHO_C_TEST = os.environ.get("PAHO_C_TEST")


@unittest.skipUnless(PAHO_C_TEST, "set PAHO_C_TEST to the built paho_c_test (ctest does)")
class PahoCTest(BrokerTestCase):
    def test_paho_c_program(self):
        try:
            r = subprocess.run([PAHO_C_TEST, self.broker.uri], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired as e:
            self.fail("paho_c_test did not finish within 120 s:\n%s%s"
                      % (e.stdout or "", e.stderr or ""))
        self.assertEqual(r.returncode, 0, "paho_c_test failed:\n%s%s" % (r.stdout, r.stderr))
        self.assertIn("paho_c_test: OK", r.stdout)


if __name__ == "__main__":
    unittest.main()
