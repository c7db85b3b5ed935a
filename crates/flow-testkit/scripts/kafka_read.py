#!/usr/bin/env python3
"""Reads a whole Kafka topic with kafka-python (an independent client: not
librdkafka, not ours) and prints one JSON object per message on stdout:
{"partition", "offset", "key", "headers": {name: value}, "value"}.
Keys, header values and values are UTF-8 text when they decode, else
{"base64": "..."}.

usage: kafka_read.py BROKERS TOPIC [TIMEOUT_SECONDS]
"""
import base64
import json
import sys
import time

from kafka import KafkaConsumer, TopicPartition


def text(raw):
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode("ascii")}


def main():
    brokers, topic = sys.argv[1], sys.argv[2]
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0
    consumer = KafkaConsumer(
        bootstrap_servers=brokers.split(","),
        enable_auto_commit=False,
        group_id=None,
        request_timeout_ms=30000,
    )
    deadline = time.time() + timeout
    partitions = None
    while partitions is None and time.time() < deadline:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            time.sleep(0.2)
    if partitions is None:
        sys.exit(f"topic {topic!r} not found on {brokers}")
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    ends = consumer.end_offsets(tps)
    left = {tp for tp in tps if consumer.position(tp) < ends[tp]}
    while left:
        if time.time() > deadline:
            sys.exit(f"timed out reading {topic!r}: {len(left)} partitions not read to their end")
        for tp, messages in consumer.poll(timeout_ms=500).items():
            for m in messages:
                print(json.dumps({
                    "partition": m.partition,
                    "offset": m.offset,
                    "key": text(m.key),
                    "headers": {k: text(v) for k, v in (m.headers or [])},
                    "value": text(m.value),
                }))
        left = {tp for tp in left if consumer.position(tp) < ends[tp]}
    consumer.close()


if __name__ == "__main__":
    main()
