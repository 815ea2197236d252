"""The vocabulary round: one shared vocabulary from the anchor and DP releases of the sites.

1. Each site releases patient counts of the public candidate codes, bounded
   per patient, Gaussian-noised and thresholded (charged to its ledger).
2. The server merges them with the anchor's exact counts (no privacy cost).
3. For kept numeric codes the anchor has too few values of, sites release
   noisy value histograms on a public grid; quantile edges come from those.

The candidate list is public: the anchor's codes plus a reference list of
standard codes. In a real consortium that list is the published code systems
(ICD-10-CM, LOINC, RxNorm ...); fedehr ships the codes of its synthetic
hospitals' catalogue as that reference, read off a small synthetic hospital
generated here (synthetic data is public by construction). A file with one
code per line can replace it (federation.yaml: vocabulary.candidates).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedehr.server.node_names import NodeNames
from fedehr.shared import messages as M
from fedehr.shared.anchor import Anchor
from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.tokenizer.dp_counts import CountRelease, HistogramRelease, log_grid
from fedehr.shared.tokenizer.mapping import CodeMapping
from fedehr.shared.tokenizer.merge import (
    anchor_only_tokens,
    codes_needing_sketches,
    merge_vocabulary,
)
from fedehr.shared.tokenizer.vocabulary import Vocabulary

log = logging.getLogger("fedehr.server")


@dataclass
class VocabRoundResult:
    vocab: Vocabulary
    sites: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    released_codes: dict[str, int] = field(default_factory=dict)  # site -> codes released
    sketched_codes: int = 0
    anchor_only: list[int] = field(default_factory=list)  # token ids (merge.anchor_only_tokens)


def reference_codes(seed: int = 12345) -> set[str]:
    """Standard codes of fedehr's reference catalogue, as the sites' tokens spell them."""
    from fedehr.shared.data.synth import synthesize

    codes: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        for summary in synthesize(Path(tmp) / "reference", sites=3, patients=600, seed=seed):
            dataset = MEDSDataset.open(summary.path)
            config = None
            if summary.harmonisation is not None:
                import yaml

                config = {"code_map": yaml.safe_load(Path(summary.harmonisation).read_text())
                          ["code_map"]}
            mapping = CodeMapping.from_config(config, dataset.codes())
            events = mapping.apply(dataset.scan().collect())
            codes |= set(events[S.CODE].unique().to_list())
    return codes


def public_candidates(anchor: Anchor, candidates_file: Path | None) -> list[str]:
    if candidates_file is not None:
        listed = {line.strip() for line in candidates_file.read_text().splitlines()}
        extra = {c for c in listed if c and not c.startswith("#")}
    else:
        extra = reference_codes()
    return sorted((set(anchor.counts) | extra) - {S.BIRTH_CODE})


def _query(grid: Grid, nodes: list[int], config: dict, timeout: float, names: NodeNames
           ) -> tuple[dict[str, dict], list[str]]:
    messages = [Message(RecordDict({M.CONFIG: ConfigRecord(config)}), dst_node_id=n,
                        message_type=MessageType.QUERY) for n in nodes]
    payloads, failures = {}, []
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if reply.has_error():
            failures.append(names.failure(reply))
            continue
        names.learn(reply)
        name = str(reply.content[M.SITE][M.SITE_NAME])
        payloads[name] = json.loads(str(reply.content[M.CONFIG][M.RELEASE_JSON]))
    return payloads, failures


def run_vocab_round(grid: Grid, nodes: list[int], anchor: Anchor, *, federation: str,
                    min_count: float, timeout: float, candidates_file: Path | None = None,
                    names: NodeNames | None = None) -> VocabRoundResult:
    started = time.monotonic()
    names = names or NodeNames()
    candidates = public_candidates(anchor, candidates_file)
    counts, failures = _query(grid, nodes, {
        M.QUERY: M.QUERY_COUNTS, M.ROUND_ID: f"{federation}/vocab-counts",
        M.CANDIDATES: json.dumps(candidates)}, timeout, names)
    releases = {site: CountRelease.from_dict(p) for site, p in counts.items()}
    draft = merge_vocabulary(anchor_counts=anchor.counts, site_releases=list(releases.values()),
                             min_count=min_count, anchor_values=anchor.values)
    sketch = codes_needing_sketches(draft, anchor.values)
    histograms: dict[str, HistogramRelease] = {}
    if sketch:
        payloads, more = _query(grid, nodes, {
            M.QUERY: M.QUERY_VALUES, M.ROUND_ID: f"{federation}/vocab-values",
            M.SKETCH_CODES: json.dumps(sketch), M.VALUE_GRID: json.dumps(log_grid().tolist())},
            timeout, names)
        failures += more
        histograms = {site: HistogramRelease.from_dict(p) for site, p in payloads.items()}
    vocab = merge_vocabulary(anchor_counts=anchor.counts, site_releases=list(releases.values()),
                             min_count=min_count, anchor_values=anchor.values,
                             site_histograms=list(histograms.values()))
    log.info("vocabulary round: %d tokens from the anchor and %d sites (%d codes sketched) "
             "in %.1f s", len(vocab.tokens), len(releases), len(sketch),
             time.monotonic() - started)
    return VocabRoundResult(vocab=vocab, sites=sorted(releases), failures=failures,
                            released_codes={s: len(r.counts) for s, r in releases.items()},
                            sketched_codes=len(sketch),
                            anchor_only=anchor_only_tokens(vocab, anchor.counts,
                                                           releases.values(), min_count))
