"""Prints what a `bips record` file holds, with the `mcap` and `protobuf` packages
only: the channel and its metadata, the first message, the `bips.record` statistics.

    python recorder/examples/peek.py camera.mcap
"""
import sys

from mcap.reader import make_reader
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
import datetime
with open(sys.argv[1], "rb") as f:
    reader = make_reader(f)
    summary = reader.get_summary()
    (ch,) = summary.channels.values()
    schema = summary.schemas[ch.schema_id]
    print(ch.topic, schema.name, schema.encoding, summary.statistics.message_count, "messages")
    print({k: v for k, v in ch.metadata.items() if k != "bips.payload_type_block"})
    pool = descriptor_pool.DescriptorPool()
    for fd in descriptor_pb2.FileDescriptorSet.FromString(schema.data).file:
        pool.Add(fd)
    Sample = message_factory.GetMessageClass(pool.FindMessageTypeByName("bips.Sample"))
    for _, _, m in reader.iter_messages():
        s = Sample.FromString(m.data)
        when = datetime.datetime.fromtimestamp(m.log_time / 1e9, datetime.timezone.utc)
        print(s.seq, when.isoformat(timespec="milliseconds"), len(s.payload), "bytes,", s.descriptor_text or "(channel's descriptor)")
        break
    print({m.name: dict(m.metadata) for m in reader.iter_metadata()}["bips.record"])
