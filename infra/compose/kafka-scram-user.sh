#!/bin/sh
# Creates the secure profile's SCRAM user sluice (or sets its password again) through the
# broker's plaintext listener, which only the broker's own container reaches (run by kafka-tls.sh).
# The password is the kafka-scram-password secret: hex or base64, as SCRAM's configuration syntax
# takes no ',', '[' or ']'.
set -eu

password=$(cat /run/secrets/kafka-scram-password)
case "$password" in
  '' | *[],[]*)
    echo 'kafka-scram-password is empty or holds , [ or ]' >&2
    exit 1
    ;;
esac
# Kafka alters one credential of a user per request.
for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
  /opt/kafka/bin/kafka-configs.sh --bootstrap-server 127.0.0.1:9092 --alter \
    --entity-type users --entity-name sluice --add-config "$mechanism=[password=$password]"
done
