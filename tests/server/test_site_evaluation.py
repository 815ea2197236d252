"""Site evaluation rounds: skipped once every site said it keeps its losses private."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from fedehr.server.config import FederationConfig, SuperLinkConfig
from fedehr.server.federation import Federation
from fedehr.shared import messages as M
from fedehr.shared.data.anchor import fetch_anchor
from fedehr.shared.model import EHRModel, ModelConfig
from fedehr.shared.tokenizer.merge import merge_vocabulary

SITES = ["hospital_a", "hospital_b"]

pytestmark = pytest.mark.usefixtures("in_a_run")  # tests/server/conftest.py


class Reply:
    """What the server reads of a site's evaluation reply."""

    def __init__(self, content: RecordDict, node: int):
        self.content = content
        self.metadata = SimpleNamespace(src_node_id=node)

    def has_error(self) -> bool:
        return False


class RecordingGrid:
    """Two sites that answer every evaluation; `loss` is what each releases (None: none)."""

    def __init__(self, losses: dict[str, float | None]):
        self.losses, self.rounds_sent = losses, 0

    def get_node_ids(self):
        return [1, 2]

    def send_and_receive(self, messages, *, timeout=None):
        self.rounds_sent += 1
        replies = []
        for node, (_, site) in enumerate(zip(messages, SITES, strict=True), start=1):
            metrics = {M.COUNTS_PUBLIC: 0.0}
            if self.losses[site] is not None:
                metrics[M.EVAL_LOSS] = self.losses[site]
            content = RecordDict({M.METRICS: MetricRecord(metrics),
                                  M.SITE: ConfigRecord({M.SITE_NAME: site})})
            replies.append(Reply(content, node))
        return replies


@pytest.fixture(scope="module")
def model_and_vocab():
    anchor = fetch_anchor()
    fed = Federation(FederationConfig(name="t", workdir=anchor.parent / "unused",
                                      anchor=anchor, superlink=SuperLinkConfig(insecure=True)))
    vocab = merge_vocabulary(anchor_counts=fed.anchor.counts, min_count=20,
                             anchor_values=fed.anchor.values)
    torch.manual_seed(0)
    return EHRModel(ModelConfig.preset("tiny", len(vocab.tokens), max_len=16, note_dim=0,
                                       image_dim=0)), vocab


def _federation(tmp_path) -> Federation:
    return Federation(FederationConfig(name="t", workdir=tmp_path, anchor=fetch_anchor(),
                                       sites=SITES, min_sites=2,
                                       superlink=SuperLinkConfig(insecure=True)))


@pytest.mark.parametrize("losses, rounds_sent", [
    ({"hospital_a": None, "hospital_b": None}, 1),  # nobody releases: round 0 only
    ({"hospital_a": 2.5, "hospital_b": None}, 3),  # one site's public loss keeps them all
])
def test_evaluation_rounds_run_only_while_a_site_releases_its_loss(
        tmp_path, model_and_vocab, losses, rounds_sent):
    fed, grid = _federation(tmp_path), RecordingGrid(losses)
    model, vocab = model_and_vocab
    seen = [fed._evaluate_sites(grid, rnd, model, vocab) for rnd in range(3)]
    assert grid.rounds_sent == rounds_sent
    released = {s: v for s, v in losses.items() if v is not None}
    assert seen[0] == released and seen[-1] == (released if rounds_sent == 3 else {})
