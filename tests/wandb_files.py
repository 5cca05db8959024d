"""Read W&B's offline run files (``offline-run-*/run-*.wandb``) without a W&B server.

wandb 0.31 ships no Python reader for them; the format is W&B's header (``:W&B``, magic 0xBEE1, version 0)
followed by LevelDB log records (32 KiB blocks, 7-byte headers: crc32, length, type), each payload one
``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file")
    pos, chunks = 7, []
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:  # zero padding up to the end of a block or of the file
            pos += left
            continue
        payload = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        chunks.append(payload)
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def offline_runs(run_dir: Path) -> list[Path]:
    """The run's offline W&B run files, oldest first (one per process that worked on the run)."""
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"), key=lambda p: p.parent.name)


def run_record(path: Path) -> Any:
    return next(r.run for r in records(path) if r.WhichOneof("record_type") == "run")
