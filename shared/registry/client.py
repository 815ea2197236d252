"""The registry's other calls: list rounds, read a card; publish and withdraw (operators).

Each opens its own channel (see channel.py) and turns a refusal into a
`RegistryError`. `pull` lives in pull.py.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from fedehr.shared.checkpoint import ModelCard, verify
from fedehr.shared.registry import registry_pb2
from fedehr.shared.registry.channel import RegistryError, open_channel, stub
from fedehr.shared.registry.stream import TarStream


@dataclass(frozen=True)
class Credentials:
    target: str  # host:port
    ca: str | os.PathLike
    cert: str | os.PathLike
    key: str | os.PathLike


def _call(creds: Credentials, method: str, request):
    channel = open_channel(creds.target, creds.ca, creds.cert, creds.key)
    try:
        return getattr(stub(channel), method)(request)
    except grpc.RpcError as exc:
        raise RegistryError.of(exc, creds.target) from None
    finally:
        channel.close()


def list_checkpoints(creds: Credentials) -> list[registry_pb2.CheckpointSummary]:
    return list(_call(creds, "ListCheckpoints",
                      registry_pb2.ListCheckpointsRequest()).checkpoints)


def fetch_card(creds: Credentials, round: str = "latest") -> tuple[int, ModelCard]:
    reply = _call(creds, "GetModelCard", registry_pb2.GetModelCardRequest(round=round))
    return reply.round, ModelCard.from_json(reply.model_card_json, where=f"round {reply.round}")


def publish(creds: Credentials, folder: str | os.PathLike, round: int = 0) -> int:
    """Upload the checkpoint in `folder` as `round` (0: the card's `rounds`); returns it.

    The checkpoint is verified here first; the registry verifies it again
    against the consortium key before it becomes visible.
    """
    verify(folder)
    stream = TarStream(folder)
    return _call(creds, "Publish", _publish_chunks(stream, round)).round


def _publish_chunks(stream: TarStream, round: int) -> Iterator[registry_pb2.PublishChunk]:
    digest = hashlib.sha256()
    offset = 0
    yield registry_pb2.PublishChunk(round=round)
    for data in stream.iter_bytes():
        digest.update(data)
        yield registry_pb2.PublishChunk(offset=offset, data=data)
        offset += len(data)
    yield registry_pb2.PublishChunk(offset=offset, sha256=digest.hexdigest(), last=True)


def withdraw(creds: Credentials, round: int, reason: str = "") -> bool:
    """Hide `round` from researchers; returns whether it already was."""
    reply = _call(creds, "Revoke", registry_pb2.RevokeRequest(round=round, reason=reason))
    return reply.already_withdrawn
