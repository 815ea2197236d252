"""The consortium's revocation list: revoked.json, rewritten atomically.

Format (version 1)::

    {"version": 1,
     "revoked": [{"kind": "researcher", "name": "alice", "serial": "5f1c...",
                  "fingerprint": "SHA256:...", "revoked_at": "2025-01-31T12:00:00+00:00"}]}

Certificates (researchers, operators) are matched by serial number, site keys
(which are bare OpenSSH keys, no serial) by their OpenSSH SHA256 fingerprint.
The registry checks `is_revoked` on every client certificate; a revoked site
must also be unregistered from the SuperLink (`flwr supernode unregister`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509

from fedehr.shared.atomic import write_text
from fedehr.shared.pki.certificates import fingerprint, load_cert, role_of
from fedehr.shared.pki.layout import PKIError, PKIPaths, validate_name
from fedehr.shared.pki.site_keys import ssh_fingerprint

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Revocation:
    kind: str  # "researcher", "operator" or "site"
    name: str
    serial: str | None  # hex serial of a certificate; None for site keys
    fingerprint: str
    revoked_at: str


def load_revocations(dir: str | os.PathLike) -> list[Revocation]:
    """Every revocation in revoked.json (empty if there is none yet)."""
    path = PKIPaths.of(dir).revoked
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported version {data.get('version')!r}")
        return [Revocation(**entry) for entry in data["revoked"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PKIError(f"unreadable revocation list ({exc})", where=str(path),
                       fix="restore revoked.json from a backup") from None


def revoke(dir: str | os.PathLike, name: str, kind: str | None = None) -> list[Revocation]:
    """Revoke every credential issued to `name` (or only its `kind`: 'researcher'/'site').

    Idempotent: revoking twice adds nothing. Returns the entries for `name`.
    """
    validate_name(name, "name")
    paths = PKIPaths.of(dir)
    found: list[Revocation] = []
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if kind in (None, "researcher") and paths.researcher_cert(name).is_file():
        cert = load_cert(paths.researcher_cert(name))
        found.append(Revocation(role_of(cert) or "researcher", name, _serial(cert),
                                fingerprint(cert), now))
    if kind in (None, "site") and paths.site_pub(name).is_file():
        found.append(Revocation("site", name, None, ssh_fingerprint(paths.site_pub(name)), now))
    if not found:
        what = f"{kind} '{name}'" if kind else f"'{name}'"
        raise PKIError(f"nothing issued to {what}", where=str(paths.root),
                       fix="check the name with `fedehr pki list`")
    current = load_revocations(dir)
    known = {(r.serial, r.fingerprint) for r in current}
    new = [r for r in found if (r.serial, r.fingerprint) not in known]
    if new:
        _save(paths.revoked, current + new)
    return [r for r in current + new if r.name == name]


def load_revocations_seen(dir: str | os.PathLike, seen_file: Path) -> list[Revocation]:
    """`load_revocations`, failing closed: a reader that has once seen revocations (kept
    in its own `seen_file`) refuses a list that is now missing or lacks any of them, so
    deleting or rolling back revoked.json never readmits a revoked certificate."""
    seen = _read_seen(seen_file)
    path = PKIPaths.of(dir).revoked
    if seen and not path.is_file():
        raise PKIError(f"the revocation list is missing, but {len(seen)} revocation(s) were "
                       "in force before", where=str(path), fix="restore revoked.json from a "
                       "backup (the registry admits no one until then)")
    current = load_revocations(dir)
    keys = {_key(r) for r in current}
    lost = seen - keys
    if lost:
        raise PKIError(f"{len(lost)} earlier revocation(s) are no longer in the list (edited "
                       "or rolled back)", where=str(path), fix="restore revoked.json from a "
                       "backup (the registry admits no one until then)")
    if keys - seen:
        write_text(seen_file, json.dumps(sorted(keys | seen), indent=1) + "\n")
    return current


def _key(revocation: Revocation) -> str:
    return f"{revocation.serial or ''}/{revocation.fingerprint}"


def _read_seen(seen_file: Path) -> set[str]:
    try:
        keys = json.loads(seen_file.read_text())
    except FileNotFoundError:
        return set()
    except (OSError, ValueError) as exc:
        raise PKIError(f"unreadable record of revocations seen ({exc})", where=str(seen_file),
                       fix="restore it from a backup") from None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise PKIError("the record of revocations seen is not a list of keys",
                       where=str(seen_file), fix="restore it from a backup")
    return set(keys)


def is_revoked(dir: str | os.PathLike, cert: x509.Certificate | str | os.PathLike,
               revocations: list[Revocation] | None = None) -> bool:
    """Whether a certificate (object or PEM path) or a site's .pub file is revoked
    (against `revocations` when given, else revoked.json as it is now)."""
    if revocations is None:
        revocations = load_revocations(dir)
    if isinstance(cert, x509.Certificate):
        return _serial(cert) in {r.serial for r in revocations if r.serial}
    path = Path(cert)
    if path.suffix == ".pub":
        return ssh_fingerprint(path) in {r.fingerprint for r in revocations}
    return is_revoked(dir, load_cert(path), revocations)


def _serial(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def _save(path: Path, revocations: list[Revocation]) -> None:
    doc = {"version": FORMAT_VERSION, "revoked": [asdict(r) for r in revocations]}
    write_text(path, json.dumps(doc, indent=2) + "\n", mode=0o644)
