#!/bin/bash
# The secure profile's broker (docker-compose.yml, service kafka-tls): the image's own start, then,
# once the broker answers on its plaintext listener, its SCRAM user (kafka-scram-user.sh). The
# service's healthcheck passes once the user exists.
set -u

/etc/kafka/docker/run &
broker=$!
trap 'kill -TERM "$broker"' TERM INT

until /opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server 127.0.0.1:9092 >/dev/null 2>&1; do
  if ! kill -0 "$broker" 2>/dev/null; then
    wait "$broker"
    exit
  fi
  sleep 1
done
if ! sh /etc/sluice/kafka-scram-user.sh; then
  kill -TERM "$broker"
  wait "$broker"
  exit 1
fi

# A trapped signal ends the first wait early; the second waits for the broker to stop.
wait "$broker"
status=$?
if kill -0 "$broker" 2>/dev/null; then
  wait "$broker"
  status=$?
fi
exit "$status"
