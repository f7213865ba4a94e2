#!/bin/sh
# Makes a throwaway test CA and certificates signed by it, with the openssl CLI (README shows the
# same steps). Usage: tests/tls/mkcerts.sh DIR
#   DIR/ca.pem, ca.key             the test CA
#   DIR/server.pem, server.key     CN=localhost, SAN DNS:localhost, IP:127.0.0.1, IP:::1
#   DIR/client.pem, client.key     CN=tern-client, signed by the CA (a client certificate)
#   DIR/rogue.pem, rogue.key       CN=rogue, self-signed: a client certificate the CA never signed
# EC P-256 keys: quick to make, and what most brokers' guides use today.
set -eu
dir=${1:?usage: mkcerts.sh DIR}
mkdir -p "$dir"
cd "$dir"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key ca.key
openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=Tern Test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.pem 2>/dev/null
sign() { # name subject extensions
    key "$1.key"
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
    printf '%s\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 -sha256 \
        -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}
sign server "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
extendedKeyUsage=serverAuth"
sign client "/CN=tern-client/O=Tern Tests" "extendedKeyUsage=clientAuth"
key rogue.key
openssl req -x509 -new -key rogue.key -sha256 -days 3650 -subj "/CN=rogue" -out rogue.pem 2>/dev/null
rm -f ca.srl
