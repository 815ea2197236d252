"""The registry's gRPC service over the consortium's checkpoint store.

Serves ``WORKDIR/checkpoints/round-NNNN`` (written by the federation every
round, see fedehr.server.checkpoints) to researchers, over TLS that requires
a client certificate issued by the consortium CA. Who may do what is the
certificate's OU:

    researcher   ListCheckpoints, GetModelCard, PullCheckpoint
    operator     the same, plus Publish and Revoke (withdraw a round)

Before every call the caller's certificate is checked against the PKI's
revoked.json, re-read each time, so `fedehr pki revoke NAME` takes effect at
the next call without a restart. Revocation fails closed: the registry keeps
the revocations it has seen (WORKDIR/state/revocations-seen.json), and a list
that is missing or lacks any of them admits no one. A revoked certificate gets UNAUTHENTICATED,
a missing role PERMISSION_DENIED, each with a message naming the certificate.
(A certificate from another CA, or none, never gets this far: the TLS
handshake fails.)

"latest" is the highest round that is not withdrawn; the `latest` marker
file is the federation's resume aid and is not consulted. Publish uploads a
signed checkpoint, verifies it against the consortium key
(pki/signing/consortium.pub) and renames it into place as a new round; it
never replaces an existing round. Every pull, complete or not, is reported to
the optional ``on_pull(who, round, bytes, complete)`` hook (the audit log) and logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from fedehr.server.checkpoints import CheckpointStore
from fedehr.server.registry.withdrawals import Withdrawals
from fedehr.shared.checkpoint import CheckpointError, ModelCard, verify
from fedehr.shared.checkpoint import format as ckpt
from fedehr.shared.errors import FedEHRError
from fedehr.shared.pki import PKIPaths, is_revoked
from fedehr.shared.pki.certificates import role_of
from fedehr.shared.pki.revocation import load_revocations_seen
from fedehr.shared.registry import registry_pb2, registry_pb2_grpc
from fedehr.shared.registry.channel import RegistryError
from fedehr.shared.registry.pull import CHECKPOINT_FILES
from fedehr.shared.registry.stream import CHUNK, StreamError, TarStream, extract

log = logging.getLogger("fedehr.registry")

READ = ("researcher", "operator")
WRITE = ("operator",)
REVOCATIONS_SEEN = "revocations-seen.json"  # in the store's state folder
ROUND_DIR = re.compile(r"^round-(\d{4,})$")

PullHook = Callable[[str, int, int, bool], None]  # (who, round, bytes sent, complete)


@dataclass(frozen=True)
class Caller:
    name: str
    role: str | None
    serial: str

    def __str__(self) -> str:
        return f"{self.name} ({self.role or 'no role'}, serial {self.serial})"


class RegistryService(registry_pb2_grpc.RegistryServicer):
    def __init__(self, workdir: str | os.PathLike, pki: str | os.PathLike, *,
                 on_pull: PullHook | None = None, chunk_size: int = CHUNK):
        self.store = CheckpointStore(Path(workdir), signing_key=None)
        self.pki = PKIPaths.of(pki)
        self.withdrawals = Withdrawals(self.store.checkpoints / "withdrawn.json")
        self.on_pull = on_pull
        self.chunk_size = chunk_size
        self._digests: dict[tuple, str] = {}
        self._lock = threading.Lock()

    # -- researchers -------------------------------------------------------------

    def ListCheckpoints(self, request, context):
        caller = self._caller(context, READ, "ListCheckpoints")
        withdrawn = self._withdrawn(context)
        summaries = []
        for rnd, path in sorted(self._rounds().items()):
            if rnd in withdrawn and caller.role != "operator":
                continue
            try:
                card = ModelCard.from_json((path / ckpt.CARD).read_bytes(), where=str(path))
            except (OSError, CheckpointError) as exc:
                log.warning("registry: skipping %s: %s", path, exc)
                continue
            summaries.append(registry_pb2.CheckpointSummary(
                round=rnd, created_at=card.created_at, size=TarStream(path).size,
                sites=sorted(card.privacy), withdrawn=rnd in withdrawn))
        return registry_pb2.ListCheckpointsResponse(checkpoints=summaries)

    def GetModelCard(self, request, context):
        self._caller(context, READ, "GetModelCard")
        rnd, path = self._resolve(request.round, context)
        try:
            raw = (path / ckpt.CARD).read_bytes()
        except OSError:
            context.abort(grpc.StatusCode.NOT_FOUND, f"round {rnd} has no model card")
        return registry_pb2.GetModelCardResponse(round=rnd, model_card_json=raw)

    def PullCheckpoint(self, request, context) -> Iterator[registry_pb2.CheckpointChunk]:
        caller = self._caller(context, READ, "PullCheckpoint")
        rnd, path = self._resolve(request.round, context)
        stream = TarStream(path)
        sha = self._digest(stream, context)
        if request.offset > stream.size:
            context.abort(grpc.StatusCode.OUT_OF_RANGE,
                          f"resume offset {request.offset} is past the end of round {rnd} "
                          f"({stream.size} bytes); delete the .partial file and pull again")
        position, sent = request.offset, 0
        log.info("registry: %s pulls round %d from byte %d", caller, rnd, position)
        try:
            for data in stream.iter_bytes(request.offset, self.chunk_size):
                sent += len(data)  # handed to gRPC: a cut stream may end before it resumes us
                yield registry_pb2.CheckpointChunk(
                    round=rnd, offset=position, data=data, total_size=stream.size,
                    sha256=sha if position == request.offset else "")
                position += len(data)
            yield registry_pb2.CheckpointChunk(round=rnd, offset=position,
                                               total_size=stream.size, sha256=sha, last=True)
        except (OSError, StreamError) as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE,
                          f"round {rnd} changed while it was being sent ({exc}); pull again")
        finally:
            self._report_pull(caller, rnd, sent, complete=position == stream.size)

    # -- operators ---------------------------------------------------------------

    def Publish(self, request_iterator, context):
        caller = self._caller(context, WRITE, "Publish")
        if not self.pki.signing_pub.is_file():
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"the registry has no consortium public key at {self.pki.signing_pub}")
        self.store.checkpoints.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".publish-", dir=self.store.checkpoints))
        try:
            wanted, sha = self._receive_upload(request_iterator, work / "stream.tar", context)
            stage = work / "checkpoint"
            stage.mkdir(mode=0o755)
            try:
                extract(work / "stream.tar", stage, allowed=CHECKPOINT_FILES)
                card = verify(stage, trusted_public_key=self.pki.signing_pub)
            except (StreamError, CheckpointError) as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"not a valid consortium checkpoint: {exc.message}")
            rnd = wanted or card.rounds
            if rnd <= 0:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              "no round number: give one, or publish a card with rounds > 0")
            with self._lock:
                dest = self.store.round_dir(rnd)
                if dest.exists():
                    context.abort(grpc.StatusCode.ALREADY_EXISTS,
                                  f"round {rnd} exists; publish under another round number")
                os.replace(stage, dest)
            log.info("registry: %s published round %d (stream sha256 %s)", caller, rnd, sha)
            return registry_pb2.PublishResponse(round=rnd, sha256=sha)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def Revoke(self, request, context):
        caller = self._caller(context, WRITE, "Revoke")
        if request.round not in self._rounds():
            context.abort(grpc.StatusCode.NOT_FOUND, f"there is no round {request.round}")
        try:
            already = self.withdrawals.withdraw(request.round, caller.name, request.reason)
        except FedEHRError as exc:
            context.abort(grpc.StatusCode.INTERNAL, exc.one_line())
        log.info("registry: %s withdrew round %d (%s)", caller, request.round,
                 request.reason or "no reason given")
        return registry_pb2.RevokeResponse(round=request.round, already_withdrawn=already)

    # -- helpers -----------------------------------------------------------------

    def _caller(self, context, roles: tuple[str, ...], method: str) -> Caller:
        pems = context.auth_context().get("x509_pem_cert")
        if not pems:
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "no client certificate: connect with a certificate from the "
                          "consortium CA")
        cert = x509.load_pem_x509_certificate(pems[0])
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        caller = Caller(str(names[0].value) if names else "?", role_of(cert),
                        format(cert.serial_number, "x"))
        try:
            in_force = load_revocations_seen(self.pki.root, self.store.state / REVOCATIONS_SEEN)
            revoked = is_revoked(self.pki.root, cert, in_force)
        except FedEHRError as exc:  # fail closed: an unreadable list admits no one
            log.error("registry: %s", exc)
            context.abort(grpc.StatusCode.UNAVAILABLE,
                          "the registry cannot read its revocation list; tell the operator")
        if revoked:
            log.warning("registry: refused revoked certificate %s (%s)", caller, method)
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          f"the certificate of {caller.name} (serial {caller.serial}) "
                          "has been revoked")
        if caller.role not in roles:
            log.warning("registry: refused %s for %s", method, caller)
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{method} needs the role {' or '.join(roles)}; the certificate of "
                          f"{caller.name} has role {caller.role or 'none'}")
        return caller

    def _rounds(self) -> dict[int, Path]:
        if not self.store.checkpoints.is_dir():
            return {}
        found = {}
        for path in self.store.checkpoints.iterdir():
            match = ROUND_DIR.match(path.name)
            if match and path.is_dir():
                found[int(match.group(1))] = path
        return found

    def _withdrawn(self, context) -> dict[int, dict]:
        try:
            return self.withdrawals.entries()
        except FedEHRError as exc:
            log.error("registry: %s", exc)
            context.abort(grpc.StatusCode.UNAVAILABLE,
                          "the registry cannot read its list of withdrawn rounds")

    def _resolve(self, wanted: str, context) -> tuple[int, Path]:
        rounds, withdrawn = self._rounds(), self._withdrawn(context)
        wanted = (wanted or "latest").strip()
        if wanted == "latest":
            visible = [r for r in rounds if r not in withdrawn]
            if not visible:
                context.abort(grpc.StatusCode.NOT_FOUND, "the registry has no checkpoint yet")
            return max(visible), rounds[max(visible)]
        if not wanted.isdigit():
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"round {wanted!r} is neither 'latest' nor a number")
        rnd = int(wanted)
        if rnd in withdrawn:
            entry = withdrawn[rnd]
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"round {rnd} was withdrawn on {entry.get('at')} "
                          f"({entry.get('reason') or 'no reason given'})")
        if rnd not in rounds:
            context.abort(grpc.StatusCode.NOT_FOUND, f"there is no round {rnd}")
        return rnd, rounds[rnd]

    def _digest(self, stream: TarStream, context) -> str:
        try:
            key = (str(stream.folder), stream.fingerprint())
        except OSError:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the checkpoint changed; try again")
        with self._lock:
            cached = self._digests.get(key)
        if cached is None:
            cached = stream.sha256()
            with self._lock:
                self._digests[key] = cached
        return cached

    def _receive_upload(self, chunks, archive: Path, context) -> tuple[int, str]:
        digest, position, wanted = hashlib.sha256(), 0, 0
        with open(archive, "wb") as fh:
            for index, chunk in enumerate(chunks):
                if index == 0:
                    wanted = chunk.round
                if chunk.data:
                    if chunk.offset != position:
                        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                      f"chunk at {chunk.offset}, expected {position}")
                    fh.write(chunk.data)
                    digest.update(chunk.data)
                    position += len(chunk.data)
                if chunk.last:
                    if chunk.sha256 != digest.hexdigest():
                        context.abort(grpc.StatusCode.DATA_LOSS,
                                      "the upload's SHA-256 does not match; publish again")
                    return wanted, chunk.sha256
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the upload ended before its last chunk")

    def _report_pull(self, caller: Caller, rnd: int, sent: int, *, complete: bool) -> None:
        log.info("registry: %s %s round %d, %d bytes", caller,
                 "pulled" if complete else "stopped pulling", rnd, sent)
        if self.on_pull is not None:
            try:
                self.on_pull(caller.name, rnd, sent, complete)
            except Exception:  # the audit hook must not break a pull
                log.exception("registry: the on_pull hook failed")


def build_server(service: RegistryService, *, host: str = "127.0.0.1", port: int = 9095,
                 cert: str | os.PathLike | None = None, key: str | os.PathLike | None = None,
                 max_workers: int = 16) -> tuple[grpc.Server, int]:
    """A gRPC server (not started) for `service` with mutual TLS; returns it and its port.

    The server certificate defaults to the PKI's superlink.pem/.key (serverAuth,
    SANs for the consortium's hosts plus localhost).
    """
    pki = service.pki
    cert = Path(cert) if cert else pki.server_cert
    key = Path(key) if key else pki.server_key
    for path, what in ((pki.ca_cert, "consortium CA"), (cert, "server certificate"),
                       (key, "server key")):
        if not path.is_file():
            raise RegistryError(f"no {what}", where=str(path),
                                fix=f"create it with `fedehr pki init/server --dir {pki.root}`"
                                " or pass --cert/--key")
    credentials = grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=pki.ca_cert.read_bytes(),
        require_client_auth=True,
    )
    server = grpc.server(ThreadPoolExecutor(max_workers=max_workers), options=[
        ("grpc.max_receive_message_length", 8 << 20),
        ("grpc.max_send_message_length", 8 << 20),
    ])
    registry_pb2_grpc.add_RegistryServicer_to_server(service, server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise RegistryError(f"cannot listen on {address} ({exc})", where="--host/--port",
                            fix="pick a free port") from None
    if not bound:
        raise RegistryError(f"cannot listen on {address}", where="--host/--port",
                            fix="pick a free port")
    return server, bound


def audit_pulls(audit_path: str | os.PathLike) -> PullHook:
    """An `on_pull` hook that writes every pull (who, what, how much) to the audit log."""
    from fedehr.shared.audit import AuditLog

    log_ = AuditLog(audit_path)

    def hook(who: str, rnd: int, sent: int, complete: bool) -> None:
        log_.append("pull", who=who, round=rnd, bytes=sent, complete=complete)

    return hook


def start_registry(workdir: str | os.PathLike, pki: str | os.PathLike, *, host: str,
                   port: int, audit_path: str | os.PathLike | None = None
                   ) -> tuple[grpc.Server, int]:
    """Build and start the registry for a federation workdir; returns (server, port)."""
    hook = audit_pulls(audit_path) if audit_path is not None else None
    server, bound = build_server(RegistryService(workdir, pki, on_pull=hook), host=host,
                                 port=port)
    server.start()
    return server, bound
