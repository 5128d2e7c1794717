"""A data team's standard consumer: confluent-kafka with SchemaRegistryClient and
AvroDeserializer reading clinical.normalised.v1 through Sluice's schema registry endpoint.

usage: consume_normalised.py BOOTSTRAP REGISTRY_URL MIN_RECORDS
Prints one summary line; exits non-zero when fewer than MIN_RECORDS decode.
"""
import datetime
import sys
import time
import uuid

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

bootstrap, registry_url, minimum = sys.argv[1], sys.argv[2], int(sys.argv[3])
topic = "clinical.normalised.v1"
deserialize = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
consumer = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": f"data-team-{uuid.uuid4()}",
    "isolation.level": "read_committed",
    "enable.auto.commit": False,
    "session.timeout.ms": 6000,
})
partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
count, kinds, with_patient, instants = 0, {}, 0, 0
deadline = time.time() + 60
while count < minimum and time.time() < deadline:
    msg = consumer.poll(0.5)
    if msg is None or msg.error():
        continue
    event = deserialize(msg.value(), SerializationContext(topic, MessageField.VALUE))
    assert len(event["event_id"]) == 36, "event id is a uuid"
    assert event["source"]["raw_topic"] == "hl7v2.raw.v1"
    kinds[event["kind"]] = kinds.get(event["kind"], 0) + 1
    with_patient += event["patient"] is not None
    # the registry serves the schema as registered, logical types included: an instant reads
    # as a timestamp, not as a bare count of microseconds
    at = (event.get("event_time") or {}).get("utc_micros")
    if at is not None:
        assert isinstance(at, datetime.datetime), f"utc_micros read as {type(at).__name__}"
        instants += 1
    count += 1
consumer.close()
print(f"python confluent-kafka read {count} events via the schema registry: kinds {kinds}, with patient {with_patient}, "
      f"timestamps {instants}")
sys.exit(0 if count >= minimum and instants > 0 else 1)
