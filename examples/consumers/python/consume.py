"""Reads a Sluice event topic from Python: the CloudEvents attributes are `ce_*` headers, the
value is the JSON payload, checked against the catalog's published JSON Schemas.

    pip install -r requirements.txt
    KAFKA_BROKERS=127.0.0.1:19092 python consume.py outbox.event.invoice ./schemas

Prints one JSON line per event. Stops after --max events, or when the topic has been quiet for
--idle-ms. Offsets are committed only after an event is handled, so a restart reads again what was
not: handle events idempotently (keep the highest `ce_aggregateversion` applied per aggregate and
skip what is not above it).
"""

import argparse
import json
import os
import sys
from pathlib import Path

from jsonschema import Draft202012Validator, FormatChecker
from kafka import KafkaConsumer


def load_validators(directory: Path) -> dict:
    """One validator per event type, from the files `<type>.json`."""
    return {
        path.name.removesuffix(".json"): Draft202012Validator(
            json.loads(path.read_text()), format_checker=FormatChecker()
        )
        for path in directory.glob("*.json")
    }


def describe(record, validators: dict) -> dict:
    headers = {name: value.decode() for name, value in record.headers if value is not None}
    event = {
        "id": headers.get("ce_id"),
        "type": headers.get("ce_type"),
        "aggregateType": headers.get("ce_aggregatetype"),
        "aggregateId": headers.get("ce_subject"),
        "version": int(headers.get("ce_aggregateversion", "0")),
        "time": headers.get("ce_time"),
        "partition": record.partition,
        "offset": record.offset,
    }
    if record.value is None:
        # A payload too large for Kafka stays in PostgreSQL; the header says where.
        event["claimCheck"] = headers.get("ce_dataref")
        return event
    payload = json.loads(record.value)
    validator = validators.get(event["type"])
    event["payload"] = payload
    event["errors"] = (
        [f"unknown event type {event['type']}"]
        if validator is None
        else sorted(error.message for error in validator.iter_errors(payload))
    )
    return event


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topic")
    parser.add_argument("schemas", type=Path)
    parser.add_argument("--group", default="billing-python")
    parser.add_argument("--max", type=int, default=0, help="stop after this many events (0: no limit)")
    parser.add_argument("--idle-ms", type=int, default=10_000)
    args = parser.parse_args()

    validators = load_validators(args.schemas)
    consumer = KafkaConsumer(
        args.topic,
        bootstrap_servers=os.environ.get("KAFKA_BROKERS", "127.0.0.1:19092").split(","),
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=args.idle_ms,
    )
    seen = 0
    try:
        for record in consumer:
            print(json.dumps(describe(record, validators)), flush=True)
            consumer.commit()
            seen += 1
            if args.max and seen >= args.max:
                break
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
