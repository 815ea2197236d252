"""What the long-lived site worker keeps in memory between messages.

Only the site's tokenized data (token cache, note and image vectors, patient
windows): re-reading it per message costs seconds, and it is a pure function
of the data files, the vocabulary and the site's data settings, all part of
the key, so a stale copy cannot be served. The privacy ledger and stored
replies are never cached: they are read from disk for every message so that
accounting stays exact across crashes and restarts.

Off by default (Flower's per-message `flwr-clientapp` gains nothing from it);
the worker turns it on.
"""

from __future__ import annotations

import json

from fedehr.client.config import SiteConfig
from fedehr.client.site_data import SiteData, cached_fingerprint, prepare_site_data
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.tokenizer.vocabulary import Vocabulary

_enabled = False
_latest: tuple[str, SiteData] | None = None  # one entry: the current run's data


def keep_in_memory(on: bool = True) -> None:
    global _enabled, _latest
    _enabled, _latest = on, None


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
