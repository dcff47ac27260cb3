"""Reads the gateway's topics from a Kafka broker the way a department's consumer would: with a
plain Kafka client (kafka-python) and the CloudEvents SDK's Kafka protocol binding
(`cloudevents.core.bindings.kafka`).

The content mode is chosen as the CloudEvents Kafka protocol binding says a receiver chooses it
(section 3): a `content-type` header with the CloudEvents JSON media type means structured mode,
anything else binary mode. The SDK's own detection (`from_kafka`) must agree and give the same
event. A message without the header would be read in binary mode and fail, which is the point.

    python3 tests/cloudevents/consume.py BOOTSTRAP TOPIC=COUNT [TOPIC=COUNT …]

Waits until each topic holds at least COUNT messages (60 s at most), then prints one JSON line
per message: topic, partition, offset, key, headers, the mode, and the event's attributes and
data as the SDK returned them. Exits 1 with the reason on anything unreadable.
"""

import json
import sys
import time

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from kafka import KafkaConsumer, TopicPartition


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(1)


def read_topic(bootstrap: str, topic: str, want: int) -> list:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    deadline = time.time() + 60
    partitions = None
    while partitions is None:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            if time.time() > deadline:
                fail(f"topic {topic} does not exist on {bootstrap}")
            time.sleep(0.5)
    assignment = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(assignment)
    consumer.seek_to_beginning(*assignment)
    records = []
    while len(records) < want:
        if time.time() > deadline:
            fail(f"{topic}: only {len(records)} of {want} messages within 60 s")
        for r in consumer:
            records.append(r)
    consumer.close()
    return records


def as_json(value):
    """Attribute values the SDK parsed (a datetime for `time`) as JSON text."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def decode(record) -> dict:
    headers = {name: value for name, value in record.headers}
    message = ce_kafka.KafkaMessage(headers=headers, key=record.key, value=record.value)
    content_type = headers.get("content-type", b"").decode("utf-8")
    media_type = content_type.split(";")[0].strip().lower()
    fmt = JSONFormat()
    try:
        if media_type == fmt.CONTENT_TYPE:
            mode = "structured"
            event = ce_kafka.from_structured(message, fmt)
        else:
            mode = "binary"
            event = ce_kafka.from_binary(message, fmt)
    except Exception as exc:  # the SDK's own error, reported with the message it came from
        fail(
            f"{record.topic}:{record.partition}:{record.offset}: the CloudEvents SDK cannot read "
            f"the message in {mode} mode (content-type {content_type!r}): {exc!r}"
        )
    detected = ce_kafka.from_kafka(message, fmt)
    if detected.get_attributes() != event.get_attributes() or detected.get_data() != event.get_data():
        fail(f"{record.topic}:{record.offset}: the SDK's from_kafka detection reads another event")
    attributes = {k: as_json(v) for k, v in event.get_attributes().items()}
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": record.key.decode("utf-8") if record.key is not None else None,
        "headers": {k: v.decode("utf-8") for k, v in headers.items()},
        "mode": mode,
        "attributes": attributes,
        "data": event.get_data(),
    }


def main() -> None:
    if len(sys.argv) < 3:
        fail(__doc__)
    bootstrap = sys.argv[1]
    for spec in sys.argv[2:]:
        topic, _, count = spec.partition("=")
        for record in read_topic(bootstrap, topic, int(count or "1")):
            print(json.dumps(decode(record), ensure_ascii=False))


if __name__ == "__main__":
    main()
