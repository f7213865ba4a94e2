#!/bin/sh
# ternctl passwd against Mosquitto 2.0's mosquitto_passwd, checked with core/auth:
#   passwd_test.sh TERNCTL AUTH_PWCHECK
# - lines mosquitto_passwd writes ($7$ and $6$) verify with tn_users_check (auth_pwcheck);
# - lines ternctl writes verify with it too, and mosquitto_passwd accepts and edits the file;
# - ternctl keeps the other lines as they were, creates files with mode 0600, replaces a user
#   in place, deletes, and refuses bad input without touching the file;
# - Mosquitto's broker accepts a password file ternctl wrote (if mosquitto and mosquitto_pub
#   are installed).
# Without mosquitto_passwd (Debian package mosquitto) the test is skipped.
set -u
ternctl=$1
check=$2
if ! command -v mosquitto_passwd >/dev/null 2>&1; then
    echo "SKIPPED: mosquitto_passwd not found (install Debian's mosquitto package)"
    exit 0
fi
dir=$(mktemp -d /tmp/tern-passwd-test-XXXXXX) || exit 1
broker=""
cleanup() {
    [ -n "$broker" ] && kill "$broker" 2>/dev/null && wait "$broker" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP # ctest's timeout: still stop the broker and clean up
failed=0
fail() {
    echo "FAIL: $*" >&2
    failed=1
}
ok() { echo "ok: $*"; }

# right PASSWORD FILE NAME / wrong PASSWORD FILE NAME: what tn_users_check says.
right() {
    if printf '%s\n' "$1" | "$check" "$2" "$3"; then ok "$3 verifies in $(basename "$2")"
    else fail "$3's password does not verify in $2"; fi
}
wrong() {
    printf '%s\n' "$1" | "$check" "$2" "$3"
    rc=$?
    if [ $rc -eq 1 ]; then ok "$3 refuses a wrong password in $(basename "$2")"
    else fail "$3 with a wrong password: auth_pwcheck exited $rc"; fi
}
mode() { stat -c %a "$1"; }

# 1. mosquitto_passwd's lines.
p=$dir/mosq
mosquitto_passwd -b -c "$p" alice 'al ice:pw$1#' || fail "mosquitto_passwd -c"
mosquitto_passwd -H sha512 -b "$p" carol hunter2 || fail "mosquitto_passwd -H sha512"
grep -q '^alice:\$7\$101\$' "$p" || fail "mosquitto_passwd did not write \$7\$101\$"
grep -q '^carol:\$6\$' "$p" || fail "mosquitto_passwd -H sha512 did not write \$6\$"
right 'al ice:pw$1#' "$p" alice
wrong 'al ice:pw$1' "$p" alice
right hunter2 "$p" carol
wrong hunter3 "$p" carol
wrong hunter2 "$p" nobody

# 2. ternctl adds a user to mosquitto_passwd's file; the other lines stay as they were.
{ echo "# users"; cat "$p"; echo; } >"$dir/mosq2" && mv "$dir/mosq2" "$p"
chmod 0640 "$p"
cp "$p" "$dir/before"
printf 'b0b pw\n' | "$ternctl" passwd "$p" bob || fail "ternctl passwd (add)"
head -n "$(wc -l <"$dir/before")" "$p" | cmp -s - "$dir/before" || fail "other lines changed"
[ "$(wc -l <"$p")" -eq "$(($(wc -l <"$dir/before") + 1))" ] || fail "not one line more"
grep -q '^bob:\$7\$10000\$[A-Za-z0-9+/]\{16\}\$[A-Za-z0-9+/]\{86\}==$' "$p" ||
    fail "bob's line is not \$7\$10000\$SALT\$HASH: $(grep '^bob:' "$p")"
[ "$(mode "$p")" = 640 ] || fail "the file's mode changed to $(mode "$p")"
right 'b0b pw' "$p" bob
wrong 'b0b' "$p" bob
right 'al ice:pw$1#' "$p" alice
right hunter2 "$p" carol
[ -z "$(find "$dir" -name 'mosq.*')" ] || fail "a temporary file was left behind"

# 3. mosquitto_passwd reads and edits a file ternctl wrote. (mosquitto_passwd 2.0.11 calls a
# file with a comment or a blank line corrupt, and empties it: those lines go first.)
m=$dir/formosq
grep -v -e '^#' -e '^$' "$p" >"$m"
mosquitto_passwd -b "$m" dave d4ve || fail "mosquitto_passwd on ternctl's file"
right d4ve "$m" dave
right 'b0b pw' "$m" bob

# 4. A new file: mode 0600; --iterations; "\r\n" from stdin; only the first line is read.
n=$dir/new
printf 'first\r\nsecond\n' | "$ternctl" passwd --iterations 101 "$n" eve || fail "create"
[ "$(mode "$n")" = 600 ] || fail "new file has mode $(mode "$n")"
grep -q '^eve:\$7\$101\$' "$n" || fail "--iterations 101 not written"
right first "$n" eve
wrong second "$n" eve

# 5. Changing a password keeps the line where it was, with its own line end.
printf 'x:$6$AAAA$ptEoH2cSyLtFo30ieCQszxGlJKnIClfqZ651odf7zz6DzLKhmsok3L0N8w2UiE2PrkFREirWOhJ2gdiEqnFNTQ==\r\n' >>"$n"
printf 'y1\n' | "$ternctl" passwd -i 5 "$n" y || fail "add y"
printf 'changed\n' | "$ternctl" passwd -i 7 "$n" x || fail "change x"
cr=$(printf '\r')
sed -n 2p "$n" | grep -q "^x:\\\$7\\\$7\\\$.*==$cr\$" || fail "x's line moved or lost its CR LF"
sed -n 3p "$n" | grep -q '^y:\$7\$5\$' || fail "y's line moved"
right changed "$n" x
right first "$n" eve
printf 'again\n' | "$ternctl" passwd "$n" eve || fail "change eve"
sed -n 1p "$n" | grep -q '^eve:\$7\$10000\$' || fail "eve's line moved"
right again "$n" eve
wrong first "$n" eve

# 6. Delete.
"$ternctl" passwd --delete "$n" x </dev/null || fail "delete x"
grep -q '^x:' "$n" && fail "x still there"
[ "$(wc -l <"$n")" -eq 2 ] || fail "delete removed more than one line"
right y1 "$n" y
cp "$n" "$dir/before"
"$ternctl" passwd -d "$n" nobody </dev/null 2>"$dir/err"
[ $? -eq 1 ] || fail "deleting an unknown user did not fail with 1"
grep -q "no user \"nobody\"" "$dir/err" || fail "delete unknown: $(cat "$dir/err")"
"$ternctl" passwd -d "$dir/missing" x </dev/null 2>/dev/null && fail "delete in a missing file"

# 7. Bad input: usage errors exit 2, failures 1; the file is never touched.
"$ternctl" --help | grep -q 'passwd' || fail "ternctl --help"
"$ternctl" passwd --help | grep -q 'Usage: ternctl passwd' || fail "ternctl passwd --help"
expect() { # STATUS DESCRIPTION COMMAND...
    want=$1 what=$2
    shift 2
    "$@" 2>"$dir/err"
    rc=$?
    if [ $rc -ne "$want" ]; then fail "$what: exit $rc, want $want"
    elif [ ! -s "$dir/err" ]; then fail "$what: nothing on stderr"
    else ok "$what: $(head -n 1 "$dir/err")"; fi
}
expect 2 "no command" "$ternctl"
expect 2 "unknown command" "$ternctl" frobnicate
expect 2 "no arguments" "$ternctl" passwd
expect 2 "password on argv" "$ternctl" passwd "$n" z secret
expect 2 "bad option" "$ternctl" passwd --bogus "$n" z
expect 2 "bad iterations" "$ternctl" passwd --iterations 0 "$n" z
expect 2 "bad iterations" "$ternctl" passwd --iterations 12x "$n" z
expect 2 "name with ':'" "$ternctl" passwd "$n" a:b
expect 2 "name starting with '#'" "$ternctl" passwd "$n" '#a'
expect 1 "empty password" sh -c "printf '\\n' | '$ternctl' passwd '$n' z"
expect 1 "no password" sh -c "'$ternctl' passwd '$n' z </dev/null"
printf 'broken line\n' >>"$n"
cp "$n" "$dir/before"
expect 1 "malformed file" sh -c "printf 'pw\\n' | '$ternctl' passwd '$n' z"
grep -q ":3: expected NAME:HASH" "$dir/err" || fail "no FILE:LINE: $(cat "$dir/err")"
cmp -s "$n" "$dir/before" || fail "a malformed file was changed"

# 8. Through a symbolic link: the file it names is rewritten, the link stays.
ln -s "$dir/mosq" "$dir/link"
printf 'viaLink\n' | "$ternctl" passwd "$dir/link" frank || fail "through a link"
[ -L "$dir/link" ] || fail "the link was replaced"
right viaLink "$p" frank

# 9. On a terminal: asked twice, not echoed; two different answers change nothing.
if command -v python3 >/dev/null 2>&1; then
    t=$dir/tty
    python3 - "$ternctl" "$t" <<'EOF' || fail "terminal prompt"
import os, pty, select, signal, sys
def run(answers):
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.argv[1], [sys.argv[1], "passwd", sys.argv[2], "tina"])
    out, sent = b"", 0
    while True:
        if not select.select([fd], [], [], 30)[0]:
            os.kill(pid, signal.SIGKILL)  # waiting for input it was given: a bug
            os.waitpid(pid, 0)
            return "hung", out
        try:
            data = os.read(fd, 1024)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        out += data
        while sent < len(answers) and out.count(b"assword") > sent:
            os.write(fd, answers[sent] + b"\n")
            sent += 1
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), out
rc, out = run([b"tty secret", b"tty secret"])
assert rc == 0 and out.count(b"assword") == 2 and b"secret" not in out, (rc, out)
rc, out = run([b"one", b"two"])
assert rc == 1 and b"do not match" in out and b"one" not in out, (rc, out)
EOF
    right 'tty secret' "$t" tina
fi

# 10. Mosquitto's broker accepts ternctl's file (and refuses a wrong password).
if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
    mosq=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    if command -v mosquitto_pub >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1; then
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        b=$dir/broker
        printf '# made by ternctl\n\n' >"$b"
        printf 'secret pw\n' | "$ternctl" passwd "$b" grace || fail "make the broker's file"
        printf 'listener %s 127.0.0.1\nallow_anonymous false\npassword_file %s\nuser %s\n' \
            "$port" "$b" "$(id -un)" >"$dir/mosquitto.conf"
        "$mosq" -c "$dir/mosquitto.conf" -v >"$dir/mosquitto.log" 2>&1 &
        broker=$!
        # Mosquitto says when it listens; give it up to 10 s.
        i=0
        while ! grep -q "running" "$dir/mosquitto.log" && [ $i -lt 100 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        if mosquitto_pub -h 127.0.0.1 -p "$port" -u grace -P 'secret pw' -t t -m m; then
            ok "mosquitto accepts ternctl's file"
        else
            fail "mosquitto refused grace: $(cat "$dir/mosquitto.log")"
        fi
        if mosquitto_pub -h 127.0.0.1 -p "$port" -u grace -P 'wrong' -t t -m m 2>/dev/null; then
            fail "mosquitto accepted a wrong password"
        else
            ok "mosquitto refuses a wrong password"
        fi
    else
        echo "note: mosquitto_pub or python3 missing, the broker check is skipped"
    fi
fi

[ $failed -eq 0 ] && echo "all passed"
exit $failed
