#!/bin/sh
# The secure profile's certificates, made once into the volumes mounted under /tls (docker-compose.yml,
# service certs): a private authority, whose key is thrown away once it has signed; PostgreSQL's
# key and certificate; Kafka's PKCS#12 keystore and its password. openssl from the postgres image.
set -eu

if [ -s /tls/ca/ca.crt ]; then
  echo 'certificates made before: kept (remove the tls-* volumes to make new ones)'
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=sluice-compose-ca \
  -keyout ca.key -out ca.crt 2>/dev/null

# server <name> <subjectAltName>: a key and a certificate for a server, signed by the authority.
server() {
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$2" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
}

server postgres-tls DNS:postgres-tls,DNS:localhost,IP:127.0.0.1
server kafka-tls DNS:kafka-tls,DNS:localhost,IP:127.0.0.1

# PostgreSQL (uid 999 in the postgres image) refuses a key that others may read.
install -m 0644 postgres-tls.crt /tls/postgres/server.crt
install -m 0600 -o 999 -g 999 postgres-tls.key /tls/postgres/server.key

# Kafka (appuser, uid 1000 in the apache/kafka image): the image's entrypoint reads the keystore
# and its password from /etc/kafka/secrets.
openssl rand -hex 24 >keystore-password
openssl pkcs12 -export -name kafka-tls -in kafka-tls.crt -inkey kafka-tls.key -certfile ca.crt \
  -passout file:keystore-password -out kafka.p12
install -m 0600 -o 1000 -g 1000 kafka.p12 keystore-password /tls/kafka/

# Last: its presence says the rest is there.
install -m 0644 ca.crt /tls/ca/ca.crt
echo 'certificates made: /tls/ca/ca.crt signed PostgreSQL'"'"'s and Kafka'"'"'s'
