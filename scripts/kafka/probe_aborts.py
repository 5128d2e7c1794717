#!/usr/bin/env python3
"""Probe a Kafka cluster's transaction isolation with librdkafka (Python confluent-kafka).

    probe_aborts.py --bootstrap HOST:PORT[,..] [--config JSON|FILE] [--admin-config JSON|FILE]
                    [--topic NAME] [--timeout 60]

On one partition it writes, in order:
  committed-1   in a committed transaction                       -> must be visible
  aborted-1     in a transaction the producer aborts              -> must NOT be visible
  fenced-1      in a transaction left open, then fenced by a second producer with the same
                transactional.id calling init_transactions (the coordinator aborts it)
                                                                  -> must NOT be visible
  committed-2   committed by that second producer                 -> must be visible
  end           committed last; every transaction before it is decided
then reads the partition from the start with isolation.level=read_committed (what must and must
not be there) and read_uncommitted (the aborted records really were written, so the check means
something). Prints one JSON object; exit 0 when every check holds, 1 when one fails, 2 on error.

--config: librdkafka settings for every client (e.g. one user's entry from
`cluster.py prepare`'s "security.users"); --admin-config: for creating the topic (default:
--config). A JSON object inline or the path of a file holding one.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def load_conf(v: str | None) -> dict:
    if not v:
        return {}
    if v.lstrip().startswith("{"):
        return json.loads(v)
    with open(v) as f:
        return json.load(f)


def create_topic(conf: dict, topic: str, timeout: float) -> None:
    admin = AdminClient(conf)
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.create_topics([NewTopic(topic, 1)], operation_timeout=min(30, timeout))[topic].result()
            return
        except KafkaException as e:
            err = e.args[0]
            if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return
            if not err.retriable() or time.monotonic() > deadline:
                raise


def read_all(conf: dict, topic: str, isolation: str, end: bytes, timeout: float) -> list[str]:
    c = Consumer(dict(conf, **{"group.id": f"probe-aborts-{uuid.uuid4()}", "isolation.level": isolation,
                               "enable.auto.commit": False, "enable.partition.eof": False}))
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                raise KafkaException(m.error())
            seen.append(m.value().decode())
            if m.value() == end:
                return seen
        raise TimeoutError(f"{isolation}: the end record was not read in {timeout}s; read {seen}")
    finally:
        c.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--config", help="librdkafka settings (JSON object or file) for every client")
    ap.add_argument("--admin-config", help="settings for creating the topic (default: --config)")
    ap.add_argument("--topic", help="an existing one-partition topic to use (default: create one)")
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()

    base = dict(load_conf(a.config), **{"bootstrap.servers": a.bootstrap})
    if "log_level" not in base:
        base["log_level"] = 3
    admin_conf = dict(load_conf(a.admin_config) or load_conf(a.config), **{"bootstrap.servers": a.bootstrap})
    run = uuid.uuid4().hex[:8]
    topic = a.topic or f"sluice-probe-aborts-{run}"
    t0 = time.monotonic()
    out: dict = {"topic": topic, "run": run}
    to_ms = int(a.timeout * 1000)

    def val(s: str) -> bytes:
        return f"{s}-{run}".encode()

    def producer(txid: str) -> Producer:
        return Producer(dict(base, **{"transactional.id": txid, "acks": "all", "enable.idempotence": True,
                                      "transaction.timeout.ms": 60000, "message.timeout.ms": to_ms}))

    try:
        if not a.topic:
            create_topic(admin_conf, topic, a.timeout)
        # (c) and (a): one producer commits, then aborts explicitly.
        p1 = producer(f"probe-aborts-a-{run}")
        p1.init_transactions(a.timeout)
        p1.begin_transaction()
        p1.produce(topic, val("committed-1"), partition=0)
        p1.commit_transaction(a.timeout)
        p1.begin_transaction()
        p1.produce(topic, val("aborted-1"), partition=0)
        if p1.flush(a.timeout) != 0:
            raise RuntimeError("aborted-1 was not delivered before the abort")
        p1.abort_transaction(a.timeout)

        # (b): an open transaction with delivered records, fenced by a new instance of its id.
        txid = f"probe-aborts-b-{run}"
        old = producer(txid)
        old.init_transactions(a.timeout)
        old.begin_transaction()
        old.produce(topic, val("fenced-1"), partition=0)
        if old.flush(a.timeout) != 0:
            raise RuntimeError("fenced-1 was not delivered before the fencing")
        new = producer(txid)
        t_fence = time.monotonic()
        new.init_transactions(a.timeout)
        out["fence_init_seconds"] = round(time.monotonic() - t_fence, 2)
        try:
            old.commit_transaction(10)
            out["fenced_commit_error"] = None
        except KafkaException as e:
            out["fenced_commit_error"] = str(e.args[0])
        new.begin_transaction()
        new.produce(topic, val("committed-2"), partition=0)
        new.commit_transaction(a.timeout)
        new.begin_transaction()
        new.produce(topic, val("end"), partition=0)
        new.commit_transaction(a.timeout)

        committed = read_all(base, topic, "read_committed", val("end"), a.timeout)
        uncommitted = read_all(base, topic, "read_uncommitted", val("end"), a.timeout)
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        out.update(ok=False, error=f"{type(e).__name__}: {e}", seconds=round(time.monotonic() - t0, 2))
        print(json.dumps(out))
        return 2

    run_suffix = f"-{run}"
    strip = lambda xs: [x[: -len(run_suffix)] if x.endswith(run_suffix) else x for x in xs]  # noqa: E731
    rc, ru = strip(committed), strip(uncommitted)
    checks = {
        "explicit_abort_hidden": "aborted-1" not in rc,
        "fenced_abort_hidden": "fenced-1" not in rc,
        "committed_visible": rc == ["committed-1", "committed-2", "end"],
        "aborted_records_were_written": "aborted-1" in ru and "fenced-1" in ru,
        "old_producer_fenced": out.get("fenced_commit_error") is not None,
    }
    out.update(ok=all(checks.values()), checks=checks, read_committed=rc, read_uncommitted=ru,
               seconds=round(time.monotonic() - t0, 2))
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
