"""Where each file of the consortium PKI lives, and the names it accepts.

One folder (default ``./pki``) holds everything the operator issues; see the
package docstring (`fedehr.shared.pki`) for the full layout. `PKIPaths` is the
single place that spells those paths: every other module asks it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from fedehr.shared.errors import FedEHRError

NAME_PATTERN = re.compile(r"^[a-z0-9_-]{1,40}$")
ROLES = ("researcher", "operator")


class PKIError(FedEHRError):
    """A PKI operation cannot be done: missing CA, existing key, bad name, unknown holder."""


@dataclass(frozen=True)
class PKIPaths:
    """Every path of a consortium PKI folder."""

    root: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    sites_dir: Path
    researchers_dir: Path
    signing_dir: Path
    signing_key: Path
    signing_pub: Path
    signing_ssh_pub: Path
    revoked: Path

    @classmethod
    def of(cls, root: str | os.PathLike) -> PKIPaths:
        root = Path(root)
        signing = root / "signing"
        return cls(
            root=root,
            ca_cert=root / "ca.pem",
            ca_key=root / "ca.key",
            server_cert=root / "superlink.pem",
            server_key=root / "superlink.key",
            sites_dir=root / "sites",
            researchers_dir=root / "researchers",
            signing_dir=signing,
            signing_key=signing / "consortium.key",
            signing_pub=signing / "consortium.pub",
            signing_ssh_pub=signing / "consortium.ssh.pub",
            revoked=root / "revoked.json",
        )

    def site_key(self, name: str) -> Path:
        return self.sites_dir / f"{name}.key"

    def site_pub(self, name: str) -> Path:
        return self.sites_dir / f"{name}.pub"

    def researcher_cert(self, name: str) -> Path:
        return self.researchers_dir / f"{name}.pem"

    def researcher_key(self, name: str) -> Path:
        return self.researchers_dir / f"{name}.key"


def validate_name(name: str, what: str = "site name") -> str:
    """Return `name` if it is 1-40 characters of [a-z0-9_-], else raise PKIError."""
    if not NAME_PATTERN.fullmatch(name or ""):
        raise PKIError(
            f"invalid {what} '{name}'",
            where=what,
            fix="use 1-40 characters among lowercase letters, digits, '_' and '-' "
                "(e.g. 'st-marys_2')",
        )
    return name


def validate_role(role: str) -> str:
    if role not in ROLES:
        raise PKIError(f"unknown role '{role}'", where="--role",
                       fix=f"use one of: {', '.join(ROLES)}")
    return role


def refuse_overwrite(*paths: Path, force: bool) -> None:
    """Raise PKIError naming the first existing file unless `force`."""
    if force:
        return
    for path in paths:
        if path.exists():
            raise PKIError("refusing to overwrite an existing key or certificate",
                           where=str(path), fix="pass --force to replace it, or pick a new name")


def require_ca(paths: PKIPaths) -> None:
    """Raise the one-line 'run `fedehr pki init` first' error if the folder has no CA."""
    if not paths.ca_cert.is_file() or not paths.ca_key.is_file():
        raise PKIError("no consortium CA found (ca.pem/ca.key)", where=str(paths.root),
                       fix=f"run `fedehr pki init --dir {paths.root}` first")
