"""Runs one integration test file; if the test process itself dies by a signal (not a failed
check: those exit with 1), runs it once more and says so.

Why: CPython's ssl module is not safe for one socket read by a client library's receive thread
while another thread writes (stomp.py and paho-mqtt both do that over TLS): once in many runs the
test process aborted with glibc's "double free or corruption" in test_tls.py. That is the client
side; ternd's failures still fail the test (the harness checks its exit code and sanitizer
reports, and a failed check exits 1, which is never retried).

Usage: retry_client_crash.py TEST_FILE.py [ARGS...]
"""
import subprocess
import sys

cmd = [sys.executable] + sys.argv[1:]
rc = subprocess.call(cmd)
if rc < 0:
    sys.stderr.write("\n*** the test process died by signal %d (a client library crash, not a "
                     "failed check): running it once more\n" % -rc)
    rc = subprocess.call(cmd)
sys.exit(0 if rc == 0 else 1)
