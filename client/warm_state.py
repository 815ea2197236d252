"""What the long-lived site worker keeps in memory between messages.

Only the site's tokenized data (token cache, note and image vectors, patient
windows) and the public anchor's training windows: rebuilding them per message
costs seconds, and each is a pure function of what its key holds (the data files
or the anchor's fingerprint, the vocabulary, the data settings), so a stale copy
cannot be served. The privacy ledger and stored replies are never cached: they
are read from disk for every message so that accounting stays exact across
crashes and restarts.

Off by default (Flower's per-message `flwr-clientapp` gains nothing from it);
the worker turns it on.
"""

from __future__ import annotations

import json

from fedehr.client.config import SiteConfig
from fedehr.client.site_data import SiteData, cached_fingerprint, prepare_site_data
from fedehr.client.site_data import anchor_windows as build_anchor_windows
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.tokenizer.vocabulary import Vocabulary
from fedehr.shared.tokenizer.windows import PatientWindows

_enabled = False
_latest: tuple[str, SiteData] | None = None  # one entry: the current run's data
_anchor: tuple[str, PatientWindows] | None = None  # and its anchor windows


def keep_in_memory(on: bool = True) -> None:
    global _enabled, _latest, _anchor
    _enabled, _latest, _anchor = on, None, None


def site_data(site: SiteConfig, vocab: Vocabulary, *, max_len: int, note_dim: int,
              image_dim: int) -> SiteData:
    """prepare_site_data, served from memory when nothing it depends on changed."""
    global _latest
    if not _enabled:
        return prepare_site_data(site, vocab, max_len=max_len, note_dim=note_dim,
                                 image_dim=image_dim)
    fingerprint = cached_fingerprint(MEDSDataset.open(site.data), site.cache_dir)
    harmonisation = site.harmonisation
    key = json.dumps([str(site.data), str(site.cache_dir), fingerprint, vocab.hash, max_len,
                      note_dim, image_dim, str(harmonisation),
                      harmonisation.stat().st_mtime_ns if harmonisation else None,
                      repr(site.modalities)])
    if _latest is not None and _latest[0] == key:
        data = _latest[1]
        for windows in (data.train, data.held_out):
            windows.set_epoch(0)  # as freshly built: the same windows as a cold process
        return data
    data = prepare_site_data(site, vocab, max_len=max_len, note_dim=note_dim,
                             image_dim=image_dim)
    _latest = (key, data)
    return data


def anchor_windows(site: SiteConfig, vocab: Vocabulary, *, fingerprint: str, max_len: int,
                   note_dim: int, image_dim: int) -> PatientWindows:
    """site_data.anchor_windows, served from memory for the same anchor and vocabulary."""
    global _anchor
    key = json.dumps([str(site.anchor), fingerprint, vocab.hash, max_len, note_dim, image_dim])
    if _enabled and _anchor is not None and _anchor[0] == key:
        _anchor[1].set_epoch(0)
        return _anchor[1]
    windows = build_anchor_windows(site, vocab, fingerprint=fingerprint, max_len=max_len,
                                   note_dim=note_dim, image_dim=image_dim)
    if _enabled:
        _anchor = (key, windows)
    return windows
