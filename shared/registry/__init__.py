"""The checkpoint registry protocol and the researcher's side of it.

registry.proto is the contract (package fedehr.registry.v1); registry_pb2.py
and registry_pb2_grpc.py are generated from it and checked in. They are made
by shared/registry/generate.sh, which runs::

    python -m grpc_tools.protoc -I "$TMP" --python_out="$TMP" --grpc_python_out="$TMP" \\
        "$TMP/fedehr/shared/registry/registry.proto"

with grpcio-tools 1.81.1 on a temporary fedehr/shared/registry/ copy of the
proto, so the generated imports are absolute; tests check they are current.

stream.py    a checkpoint folder as a deterministic, seekable tar stream
channel.py   the mutual-TLS channel and RegistryError
pull.py      resumable, hash-checked, verified `pull`
client.py    list, card, publish, withdraw
card_view.py the model card for people
cli.py       `fedehr model pull | verify | card | list`

The service is fedehr.server.registry.
"""
