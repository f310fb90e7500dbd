"""Reads a `bips record` file with the `mcap` Python package and decodes its
messages with `protobuf` from the file's own schema, as Foxglove does.

    python recorder/tests/read_mcap.py FILE.mcap [EXPECTED_COUNT]

Checks: a summary is present (the file was closed); exactly one channel, topic
= the recorded channel name, message encoding `protobuf`; its schema is
`bips.Sample`, encoding `protobuf`, a FileDescriptorSet that protobuf accepts;
every message decodes with it; log times never decrease; the MCAP sequence is
the bips seq modulo 2^32; the `bips.record` metadata counts the messages.
Prints one line `MCAP key=value ...` for the caller (cli/tests/record.rs and
bindings/python/tests/test_mcap_record.py) to check further; exits non-zero on
any failed check.
"""

from __future__ import annotations

import sys

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from mcap.reader import make_reader


def main() -> int:
    path = sys.argv[1]
    want = int(sys.argv[2]) if len(sys.argv) > 2 else None
    with open(path, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        assert summary is not None, "no summary: the file was not closed"
        assert len(summary.channels) == 1, f"channels: {summary.channels}"
        (channel,) = summary.channels.values()
        schema = summary.schemas[channel.schema_id]
        assert (schema.name, schema.encoding) == ("bips.Sample", "protobuf"), schema
        assert channel.message_encoding == "protobuf", channel.message_encoding
        fds = descriptor_pb2.FileDescriptorSet.FromString(schema.data)
        pool = descriptor_pool.DescriptorPool()
        for fd in fds.file:
            pool.Add(fd)
        cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("bips.Sample"))
        meta = {m.name: dict(m.metadata) for m in reader.iter_metadata()}
        n, last_log, seqs, with_desc = 0, -1, [], 0
        for _schema, _channel, message in reader.iter_messages():
            s = cls.FromString(message.data)
            assert message.log_time >= last_log, f"log time went back at message {n}"
            last_log = message.log_time
            assert message.sequence == s.seq % 2**32, (message.sequence, s.seq)
            seqs.append(s.seq)
            with_desc += bool(s.descriptor)
            if s.descriptor:
                assert len(s.descriptor) == 320 and s.descriptor_text, s.descriptor_text
            n += 1
        stats = summary.statistics
        assert stats.message_count == n, (stats.message_count, n)
        rec = meta.get("bips.record")
        assert rec is not None, f"no bips.record metadata: {list(meta)}"
        assert int(rec["samples"]) == n, (rec["samples"], n)
        assert "monotonic_to_unix_offset_ns" in meta["bips.recording"]
        if want is not None:
            assert n == want, f"{n} messages, want {want}"
        ordered = all(b > a for a, b in zip(seqs, seqs[1:]))
        print(
            f"MCAP messages={n} topic={channel.topic} schema={schema.name} "
            f"encoding={schema.encoding} ordered={int(ordered)} with_descriptor={with_desc} "
            f"lagged={rec['lagged']} first_log={summary.statistics.message_start_time} "
            f"policy={channel.metadata.get('bips.policy')} stopped={rec['stopped']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
