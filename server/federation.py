"""The federated run, end to end, as the ServerApp executes it.

vocabulary round -> warm start on the public anchor -> N rounds of
(site DP training -> screening -> aggregation -> evaluation -> signed
checkpoint). The round loop is ours rather than `Strategy.start` so that
every update is screened before aggregation, a round needs only `min_sites`
replies, and a restarted server resumes after the last checkpointed round
(`--resume`): the sites are asked again only for rounds not on disk, and a
site asked again for the same round resends its stored update instead of
spending budget twice.

With `secure_aggregation: true` the training exchange runs through SecAgg+
(`fedehr.server.secure_rounds`): the server receives only the weighted mean
of the sites' updates, so nothing can be screened; the audit log says so at
run start and records each round's SecAgg+ settings ("secure-round").

Every run leaves a hash-chained audit trail in `<workdir>/audit.jsonl`
(fedehr.shared.audit): run-start, vocabulary, warm-start, one line per round
(participants, rejected updates, failures, epsilon per site, checkpoint
hashes) and run-end. Each checkpoint's model card carries the log's head
hash as ``training.audit_head``, taken just before that checkpoint's own
line is appended: the card of round N anchors the log up to round N-1's line
(and the run-start and vocabulary lines), and round N's line is anchored by
the card of round N+1.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import MessageType
from flwr.serverapp import Grid

from fedehr.server.checkpoints import CheckpointStore, ResumeState
from fedehr.server.config import FederationConfig
from fedehr.server.node_names import NodeNames
from fedehr.server.screening import screen_update
from fedehr.server.secure_rounds import (
    apply_mean_update,
    run_secure_round,
    weights_known_at_start,
)
from fedehr.server.status import StatusFile
from fedehr.server.strategies import (
    BUFFERED,
    SERVER_STEP,
    aggregation_mode,
    build_strategy,
    restore_strategy_state,
    strategy_state,
)
from fedehr.server.streaming import RunningMean, stream_replies
from fedehr.server.vocab_round import run_vocab_round
from fedehr.shared import messages as M
from fedehr.shared.anchor import Anchor
from fedehr.shared.audit import AuditError, AuditLog
from fedehr.shared.audit import head as audit_head
from fedehr.shared.checkpoint import ModelCard, load, load_signing_key
from fedehr.shared.checkpoint.format import CARD, WEIGHTS
from fedehr.shared.checkpoint.signing import sha256_file
from fedehr.shared.data import schema as S
from fedehr.shared.errors import FedEHRError
from fedehr.shared.model import EHRModel, ModelConfig
from fedehr.shared.packed_arrays import MalformedArrays, payload_bytes, unpack
from fedehr.shared.pki import PKIPaths
from fedehr.shared.tokenizer.vocabulary import Vocabulary
from fedehr.shared.training import evaluate, train, train_early_stopped
from fedehr.shared.update_compression import FLOAT16, for_download
from fedehr.shared.update_compression import decode as decode_update

log = logging.getLogger("fedehr.server")

NOTE_DIM, IMAGE_DIM = 384, 32  # MiniLM-L6 note vectors; the image sidecar's width


class FederationStopped(FedEHRError):
    """Too few sites remain to continue."""


@dataclass
class TrainedRound:
    """What a training round left the server with, plain or secure."""

    site_metrics: dict[str, dict]  # participating site -> its aggregate metrics
    rejected: dict[str, str]  # site -> reason (plain rounds only: screening)
    failed: list[str]
    update_norms: dict[str, float]  # plain rounds only
    bytes_in: int
    bytes_out: int
    aggregation_seconds: float
    late: list[str] = field(default_factory=list)  # sites with no reply by the round timeout
    extra: dict = field(default_factory=dict)  # history fields of the round's mode


@dataclass
class RoundOutcome:
    """A plain round's replies so far, screened one by one as they arrive."""

    mode: str  # fedehr.server.strategies.aggregation_mode
    site_metrics: dict[str, dict] = field(default_factory=dict)  # accepted site -> metrics
    rejected: dict[str, str] = field(default_factory=dict)  # site -> reason
    failed: list[str] = field(default_factory=list)  # reasons
    update_norms: dict[str, float] = field(default_factory=dict)  # site -> L2 norm of its update
    bytes_in: int = 0  # array bytes received
    mean: RunningMean = field(default_factory=RunningMean)  # MEAN and SERVER_STEP modes
    held: list[Message] = field(default_factory=list)  # BUFFERED mode: accepted replies
    fold_seconds: float = 0.0  # spent folding updates into the mean
    fold_cpu_seconds: float = 0.0
    addressed: dict[str, int] = field(default_factory=dict)  # message id -> its site's node
    answered: set[str] = field(default_factory=set)  # message ids with a reply, error or not


def wait_for_sites(grid: Grid, minimum: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = list(grid.get_node_ids())
        if len(nodes) >= minimum:
            return nodes
        if time.monotonic() > deadline:
            raise FederationStopped(f"only {len(nodes)} of the {minimum} required sites are "
                                    f"connected after {timeout:.0f} s", where="federation",
                                    fix="start more sites (`fedehr site start`) or lower "
                                    "min_sites")
        time.sleep(1.0)


def checkpoint_hashes(path: Path) -> dict[str, str]:
    """sha256 of the checkpoint folder's weights and model card, by file name."""
    return {name: sha256_file(Path(path) / name) for name in (WEIGHTS, CARD)}


def audit_round(log: AuditLog, entry: dict, checkpoint: Path) -> dict:
    """Append the "round" line of a finished round: its history entry and checkpoint folder."""
    return log.append("round", round=entry["round"], participants=entry["participants"],
                      rejected=entry["rejected"], failed=entry["failed"],
                      epsilon=entry["epsilon"], checkpoint=str(checkpoint),
                      sha256=checkpoint_hashes(checkpoint))


class Federation:
    def __init__(self, cfg: FederationConfig):
        self.cfg = cfg
        self.status = StatusFile(cfg.status_path)
        self.anchor = Anchor.load(cfg.anchor, cfg.workdir / "anchor-cache")
        self.store = CheckpointStore(cfg.workdir, self._signing_key())
        self.strategy = build_strategy(cfg.strategy, cfg.min_sites)
        self.audit = AuditLog(cfg.audit_path)
        self._reported_patients: list[float] = []  # the sites' sizes, for SecAgg+'s weights
        # True once every site answered round 0's evaluation without a loss (site.yaml
        # privacy.release_metrics: none, the default): later evaluation rounds would
        # bring back nothing, and each costs the sites a message round
        self._no_site_releases_losses = False
        self.nodes = NodeNames()  # Flower node id -> site name, for the operator's messages
        torch.set_num_threads(cfg.threads)

    def _signing_key(self):
        """The consortium's Ed25519 key (researchers verify checkpoints against it).

        Only an insecure test federation (no PKI) signs with a key of its own.
        """
        from fedehr.shared.checkpoint import generate_signing_key

        if self.cfg.pki is not None:
            path = PKIPaths.of(self.cfg.pki).signing_key
            if not path.exists():
                raise FedEHRError("the consortium signing key is missing", where=str(path),
                                  fix=f"run `fedehr pki init --dir {self.cfg.pki}` or copy "
                                  "signing/consortium.key to the server host")
            return load_signing_key(path)
        key_path = self.cfg.workdir / "state" / "signing.key"
        return load_signing_key(key_path) if key_path.exists() else \
            generate_signing_key(key_path)

    # -- the run -----------------------------------------------------------------

    def run(self, grid: Grid, *, resume: bool = False) -> dict:
        try:
            state = self.store.resume_state() if resume else None
            self.audit.append("run-start", federation=self.cfg.name, rounds=self.cfg.rounds,
                              strategy=self.cfg.strategy.name, sites_expected=self.cfg.sites,
                              min_sites=self.cfg.min_sites, resume=resume,
                              resumed_after=state.round if state else None)
            if self.cfg.secure_aggregation:
                self.audit.append("secure-aggregation", protocol="SecAgg+",
                                  screening="off: the server never holds a single site's "
                                  "update, so updates are not screened (no norm bound, no "
                                  "NaN or shape check); only their weighted mean is seen",
                                  strategy=self.cfg.strategy.name)
            if state is None:
                state, model, vocab = self._start(grid)
            else:
                model, vocab = self._resumed(state)
            for rnd in range(state.round + 1, self.cfg.rounds + 1):
                self._round(grid, rnd, model, vocab, state)
            result = {"ok": True, "rounds": state.round, "checkpoint": str(self.store.latest()),
                      "privacy": state.privacy, "history": state.history}
            self.status.update(phase="finished", result=result,
                               message=f"finished {state.round} rounds")
            self.audit.append("run-end", ok=True, message=f"finished {state.round} rounds",
                              rounds=state.round, checkpoint=result["checkpoint"])
            return result
        except Exception as exc:
            message = exc.one_line() if isinstance(exc, FedEHRError) else repr(exc)
            self.status.update(phase="failed", message=message)
            try:
                self.audit.append("run-end", ok=False, message=message)
            except AuditError as audit_exc:  # keep the run's own error the one raised
                log.error("audit log not written: %s", audit_exc.one_line())
            raise

    def _start(self, grid: Grid) -> tuple[ResumeState, EHRModel, Vocabulary]:
        cfg = self.cfg
        self.status.update(phase="vocabulary", message="waiting for sites")
        nodes = wait_for_sites(grid, cfg.min_sites, cfg.round_timeout)
        result = run_vocab_round(grid, nodes, self.anchor, federation=cfg.name,
                                 min_count=cfg.vocabulary.min_count,
                                 timeout=cfg.vocabulary.rounds_timeout,
                                 candidates_file=cfg.vocabulary.candidates,
                                 names=self.nodes)
        if len(result.sites) < cfg.min_sites:
            raise FederationStopped(f"only {len(result.sites)} sites joined the vocabulary "
                                    f"round: {'; '.join(result.failures)}", where="federation")
        vocab = result.vocab
        vocab_file = cfg.workdir / "vocab.json"
        vocab.to_json(vocab_file)
        self.audit.append("vocabulary", tokens=len(vocab.tokens), vocab_hash=vocab.hash,
                          sites=result.sites, failures=result.failures,
                          released_codes=result.released_codes,
                          anchor_only_tokens=len(result.anchor_only))
        spec = cfg.model
        model_config = ModelConfig.preset(
            spec.preset, len(vocab.tokens), max_len=spec.max_len,
            note_dim=NOTE_DIM if spec.notes else 0, image_dim=IMAGE_DIM if spec.images else 0,
            pro_dim=len(vocab.pro_codes) if spec.pro else 0)
        torch.manual_seed(cfg.seed)
        model = EHRModel(model_config, tokens=vocab.tokens)
        self.status.update(phase="warm-start", vocab_tokens=len(vocab.tokens),
                           vocab_sites=result.sites, message="pretraining on the public anchor")
        warm = {}
        if cfg.warm_start.enabled:
            warm = self._warm_start(model, vocab)
        anchor_loss = self._anchor_loss(model, vocab)
        self.status.update(message="evaluating the warm-started model at the sites")
        site_losses = self._evaluate_sites(grid, 0, model, vocab)
        state = ResumeState(round=0, vocab_file=str(vocab_file),
                            model_config=model_config.to_dict(),
                            anchor_only_rows=result.anchor_only,
                            history=[{"round": 0, "anchor_loss": anchor_loss, "warm_start": warm,
                                      "site_eval_loss": site_losses, "sites": result.sites,
                                      "vocab_tokens": len(vocab.tokens),
                                      "released_codes": result.released_codes}])
        path = self._checkpoint(0, model, vocab, state)
        self.audit.append("warm-start", round=0, anchor=self.anchor.fingerprint,
                          checkpoint=str(path), sha256=checkpoint_hashes(path))
        self.status.add_round(state.history[0])
        return state, model, vocab

    def _resumed(self, state: ResumeState) -> tuple[EHRModel, Vocabulary]:
        latest = self.store.latest()
        model, vocab, _ = load(latest)
        model.train()
        restore_strategy_state(self.strategy, self.store.strategy_state(state.round))
        log.info("resuming after round %d from %s", state.round, latest)
        self.status.update(phase="training", round=state.round, rounds=state.history,
                           message=f"resumed after round {state.round}")
        return model, vocab

    # -- one round ----------------------------------------------------------------

    def _round_config(self, rnd: int, model: EHRModel, vocab: Vocabulary) -> dict:
        local = self.cfg.local
        config = {M.FEDERATION: self.cfg.name, M.ROUND_ID: f"{self.cfg.name}/round-{rnd}",
                  M.VOCAB_JSON: vocab.canonical_json(), M.VOCAB_HASH: vocab.hash,
                  M.MODEL_CONFIG: json.dumps(model.config.to_dict()),
                  M.LOCAL_STEPS: local.steps, M.BATCH_SIZE: local.batch_size,
                  M.LEARNING_RATE: local.lr, M.ROUNDS_LEFT: self.cfg.rounds - rnd + 1}
        if local.anchor_per_step:  # the sites mix in their own copy of the same anchor
            config[M.ANCHOR_PER_STEP] = local.anchor_per_step
            config[M.ANCHOR_FINGERPRINT] = self.anchor.fingerprint
        return config

    def _round(self, grid: Grid, rnd: int, model: EHRModel, vocab: Vocabulary,
               state: ResumeState) -> None:
        cfg = self.cfg
        started = time.monotonic()
        self.status.update(phase="training", round=rnd, message=f"round {rnd}: sites training")
        wait_for_sites(grid, cfg.min_sites, cfg.round_timeout)
        reference_arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        config = self._round_config(rnd, model, vocab)
        if cfg.local.train_rows == "site":  # public: computed from the released counts
            config[M.FROZEN_ROWS] = json.dumps(state.anchor_only_rows)
        if cfg.local.update_compression == FLOAT16:
            config[M.UPDATE_COMPRESSION] = FLOAT16
        trained = (self._secure_train if cfg.secure_aggregation else self._plain_train)(
            grid, rnd, model, reference_arrays, config)
        anchor_steps = self._anchor_steps(model, vocab, rnd)
        train_seconds = time.monotonic() - started
        self.status.update(message=f"round {rnd}: evaluating at the sites")
        site_losses = self._evaluate_sites(grid, rnd, model, vocab)
        for site, metrics in trained.site_metrics.items():
            accountant, history = M.ledger_history(metrics)
            state.privacy[site] = {
                "epsilon": float(metrics[M.EPSILON]), "delta": float(metrics[M.DELTA]),
                "epsilon_budget": float(metrics[M.EPSILON_BUDGET]),
                "accountant": accountant or "site ledger",
                "noise_multiplier": float(metrics[M.NOISE_MULTIPLIER]),
                "history": history,  # the site's charges: `fedehr audit privacy` recomputes
                **({"epsilon_per_run": float(metrics[M.EPSILON_PER_RUN])}
                   if M.EPSILON_PER_RUN in metrics else {}),
                **({"trial": True} if metrics.get(M.TRIAL_LEDGER) else {})}
        entry = {
            "round": rnd, "anchor_loss": self._anchor_loss(model, vocab),
            "anchor_steps": anchor_steps,
            "site_eval_loss": site_losses,
            "train_loss": {s: float(m[M.TRAIN_LOSS]) for s, m in trained.site_metrics.items()
                           if M.TRAIN_LOSS in m},  # only sites that declare losses public
            "epsilon": {s: p["epsilon"] for s, p in state.privacy.items()},
            "participants": sorted(trained.site_metrics),
            "rejected": trained.rejected, "failed": trained.failed, "late": trained.late,
            "update_norms": trained.update_norms, "bytes_in": trained.bytes_in,
            "bytes_out": trained.bytes_out,
            "aggregation_seconds": round(trained.aggregation_seconds, 4),
            "seconds": round(time.monotonic() - started, 2),
            "train_seconds": round(train_seconds, 2),
            "site_train_seconds": {s: float(m[M.TRAIN_SECONDS])
                                   for s, m in trained.site_metrics.items()
                                   if M.TRAIN_SECONDS in m},
            **trained.extra,
        }
        state.history.append(entry)
        state.round = rnd
        if cfg.secure_aggregation:
            self.audit.append("secure-round", round=rnd, **entry["secure_aggregation"])
        audit_round(self.audit, entry, self._checkpoint(rnd, model, vocab, state))
        self.status.add_round(entry)
        log.info("round %d: %d sites, anchor loss %.3f, %.1f s", rnd,
                 len(trained.site_metrics), entry["anchor_loss"], entry["seconds"])

    def _plain_train(self, grid: Grid, rnd: int, model: EHRModel, reference_arrays: dict,
                     config: dict) -> TrainedRound:
        """Each site's update is screened as it arrives and folded into the aggregate at once.

        FedAvg and FedProx keep only a running mean, so the server's memory does not grow
        with the number of sites; FedAdam steps from that mean; median and trimmed mean
        keep the accepted updates until all are in (`aggregation_mode`).
        """
        messages = self._as_downloaded(model, self.strategy.configure_train(
            rnd, ArrayRecord(model.state_dict()), ConfigRecord(config), grid))
        sent = len(messages)
        bytes_out = payload_bytes(messages[0].content[M.ARRAYS]) * sent if messages else 0
        outcome = RoundOutcome(mode=aggregation_mode(self.strategy))
        replies = stream_replies(grid, messages, self.cfg.round_timeout,
                                 addressed=outcome.addressed)
        del messages  # the grid holds them now; each carries the global model
        for reply in replies:
            self._screen(reply, reference_arrays, outcome)
            del reply
        late = [self.nodes.name(node) for mid, node in outcome.addressed.items()
                if mid not in outcome.answered]
        if late:
            log.warning("round %d: no reply within the round timeout (%.0f s) from %s", rnd,
                        self.cfg.round_timeout, ", ".join(late))
        self._check_enough(rnd, len(outcome.site_metrics), outcome.failed, outcome.rejected)
        log.info("round %d: %d updates accepted, %d rejected, %d failed", rnd,
                 len(outcome.site_metrics), len(outcome.rejected), len(outcome.failed))
        started, cpu_started = time.monotonic(), time.thread_time()
        model.load_state_dict(self._aggregate(rnd, outcome))
        return TrainedRound(
            site_metrics=outcome.site_metrics,
            rejected=outcome.rejected, failed=outcome.failed,
            update_norms=outcome.update_norms, bytes_in=outcome.bytes_in,
            bytes_out=bytes_out,
            aggregation_seconds=outcome.fold_seconds + time.monotonic() - started, late=late,
            # CPU time of this thread: what aggregation costs on cores shared with others
            extra={"aggregation_cpu_seconds": round(
                outcome.fold_cpu_seconds + time.thread_time() - cpu_started, 4)})

    def _as_downloaded(self, model: EHRModel, messages: Iterable[Message]) -> list[Message]:
        """The strategy's messages carrying the model as the sites download it: packed
        (shared.packed_arrays), in float16 with local.download_compression. The strategy
        itself was handed float32: FedAdam steps from its copy, which must not be the
        rounded one."""
        messages = list(messages)
        download = for_download(model.state_dict(), self.cfg.local.download_compression)
        for message in messages:
            message.content[M.ARRAYS] = download
        return messages

    def _aggregate(self, rnd: int, outcome: RoundOutcome) -> dict[str, torch.Tensor]:
        """The new global weights from the round's accepted updates."""
        if outcome.mode == BUFFERED:
            # In site order, not arrival order: the same updates always sum to the same weights.
            held = sorted(outcome.held, key=_site_name)
            aggregated, _ = self.strategy.aggregate_train(rnd, held)
            return aggregated.to_torch_state_dict()
        total_weight = outcome.mean.total_weight
        mean = outcome.mean.finish()
        if outcome.mode == SERVER_STEP:  # FedOpt: the streamed mean is its one input
            content = RecordDict({M.ARRAYS: ArrayRecord({k: Array(v) for k, v in mean.items()}),
                                  M.METRICS: MetricRecord({self.strategy.weighted_by_key:
                                                           total_weight})})
            del mean
            aggregated, _ = self.strategy.aggregate_train(rnd, [Message(
                content=content, dst_node_id=0, message_type=MessageType.TRAIN)])
            return aggregated.to_torch_state_dict()
        return {k: torch.from_numpy(v) for k, v in mean.items()}

    def _secure_train(self, grid: Grid, rnd: int, model: EHRModel, reference_arrays: dict,
                      config: dict) -> TrainedRound:
        """SecAgg+: only the weighted mean of the sites' updates reaches this process."""
        started = time.monotonic()
        result = run_secure_round(grid, rnd, reference_arrays, config, self.cfg,
                                  reported_patients=self._reported_patients,
                                  nodes_named=self.nodes)
        self._check_enough(rnd, 0 if result.mean_update is None else len(result.site_metrics),
                           result.failed, {})
        self._reported_patients = [m[M.NUM_EXAMPLES] for m in result.site_metrics.values()]
        new = apply_mean_update(reference_arrays, result.mean_update)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in new.items()})
        clipped = {s: m.get(M.SECAGG_CLIPPED, 0.0) for s, m in result.site_metrics.items()}
        return TrainedRound(
            site_metrics=result.site_metrics, rejected={}, failed=result.failed,
            update_norms={}, bytes_in=result.bytes_in,
            bytes_out=sum(a.nbytes for a in reference_arrays.values()) * len(result.site_metrics),
            aggregation_seconds=time.monotonic() - started - sum(result.stage_seconds),
            extra={"secure_aggregation": {
                "protocol": "SecAgg+", **result.params.as_dict(),
                "stage_seconds": result.stage_seconds, "clipped_fraction": clipped,
                "mean_update_norm": float(np.sqrt(sum(
                    float(np.dot(u.ravel(), u.ravel())) for u in result.mean_update)))}})

    def _check_enough(self, rnd: int, usable: int, failed: list[str], rejected: dict) -> None:
        if usable < self.cfg.min_sites:
            raise FederationStopped(
                f"round {rnd}: {usable} usable updates, {self.cfg.min_sites} needed "
                f"(failed: {failed}; rejected: {rejected})", where="federation",
                fix="check the sites' logs; resume with `fedehr run start --resume`")

    def _screen(self, reply: Message, reference: dict[str, np.ndarray],
                outcome: RoundOutcome) -> None:
        """Screen one reply; fold it into the running mean (or hold it) if accepted."""
        outcome.answered.add(reply.metadata.reply_to_message_id)
        if reply.has_error():
            outcome.failed.append(self.nodes.failure(reply, outcome.addressed))
            log.warning("round reply failed: %s", outcome.failed[-1])
            return
        self.nodes.learn(reply)
        site = _site_name(reply)
        metrics = dict(reply.content[M.METRICS])
        outcome.bytes_in += payload_bytes(reply.content[M.ARRAYS])  # as sent
        try:  # views into the reply's bytes, which stay its only full copy
            site_arrays = unpack(reply.content[M.ARRAYS])
        except MalformedArrays as exc:
            outcome.rejected[site] = str(exc)
            log.warning("rejected the update of %s: %s", site, exc)
            return
        if metrics.get(M.UPDATE_FLOAT16_DELTA):
            site_arrays = decode_update(site_arrays, reference)
        verdict = screen_update(reference, site_arrays, self.cfg.bounds.max_update_norm)
        if verdict.update_norm:
            outcome.update_norms[site] = verdict.update_norm
        weight = metrics.get(self.strategy.weighted_by_key)
        reason = verdict.reason if not verdict.accepted else _weight_problem(weight)
        if reason:
            outcome.rejected[site] = reason
            log.warning("rejected the update of %s: %s", site, reason)
            return
        outcome.site_metrics[site] = metrics
        if outcome.mode == BUFFERED:  # Flower's strategy reads the arrays from the reply
            reply.content[M.ARRAYS] = ArrayRecord({k: Array(v) for k, v in site_arrays.items()})
            outcome.held.append(reply)
            return
        started, cpu_started = time.monotonic(), time.thread_time()
        outcome.mean.fold(site_arrays.items(), float(weight))
        outcome.fold_seconds += time.monotonic() - started
        outcome.fold_cpu_seconds += time.thread_time() - cpu_started

    def _evaluate_sites(self, grid: Grid, rnd: int, model: EHRModel, vocab: Vocabulary
                        ) -> dict[str, float]:
        if self._no_site_releases_losses:
            return {}
        config = ConfigRecord(self._round_config(rnd, model, vocab))
        messages = self._as_downloaded(model, self.strategy.configure_evaluate(
            rnd, ArrayRecord(model.state_dict()), config, grid))
        losses, public = {}, {}
        for reply in grid.send_and_receive(messages, timeout=self.cfg.round_timeout):
            if reply.has_error():
                continue
            self.nodes.learn(reply)
            metrics = reply.content[M.METRICS]
            public[_site_name(reply)] = float(metrics.get(M.COUNTS_PUBLIC, 1.0))
            if M.EVAL_LOSS in metrics:
                losses[_site_name(reply)] = float(metrics[M.EVAL_LOSS])
        if rnd == 0:
            self._reported_patients = weights_known_at_start(public, self.cfg.sites)
            self._no_site_releases_losses = not losses and set(public) >= set(self.cfg.sites)
            if self._no_site_releases_losses:
                log.info("no site releases its losses: the rounds skip site evaluation")
        return losses

    # -- anchor and checkpoints ---------------------------------------------------------

    def _anchor_windows(self, vocab: Vocabulary, mc: ModelConfig, split: str):
        return self.anchor.windows(vocab, split, max_len=mc.max_len, note_dim=mc.note_dim,
                                   image_dim=mc.image_dim)

    def _warm_start(self, model: EHRModel, vocab: Vocabulary) -> dict:
        """Non-private pretraining on the anchor's train split, early-stopped on its tuning
        split (its held-out split stays for the anchor loss reported every round)."""
        spec = self.cfg.warm_start
        windows = self._anchor_windows(vocab, model.config, S.TRAIN)
        batch = min(spec.batch_size, len(windows))
        if spec.early_stopping:
            out = train_early_stopped(model, windows,
                                      self._anchor_windows(vocab, model.config, S.TUNING),
                                      max_steps=spec.steps, batch_size=batch, lr=spec.lr,
                                      eval_every=spec.eval_every, seed=self.cfg.seed)
        else:
            out = train(model, windows, steps=spec.steps, batch_size=batch, lr=spec.lr,
                        dp=None, seed=self.cfg.seed)
        return {"steps": out.steps, "loss": out.mean_loss, "seconds": out.seconds,
                "best_step": out.best_step, "tuning_loss": out.tuning_loss}

    def _anchor_steps(self, model: EHRModel, vocab: Vocabulary, rnd: int) -> int:
        """Public-anchor steps after aggregation (non-private, at no privacy cost)."""
        spec = self.cfg.warm_start
        if spec.steps_per_round < 1:
            return 0
        windows = self._anchor_windows(vocab, model.config, S.TRAIN)
        out = train(model, windows, steps=spec.steps_per_round,
                    batch_size=min(spec.batch_size, len(windows)), lr=spec.lr, dp=None,
                    seed=self.cfg.seed + rnd)
        return out.steps

    def _anchor_loss(self, model: EHRModel, vocab: Vocabulary) -> float:
        windows = self._anchor_windows(vocab, model.config, S.HELD_OUT)
        loss, _ = evaluate(model, windows, batch_size=32)
        return float(loss)

    def _checkpoint(self, rnd: int, model: EHRModel, vocab: Vocabulary,
                    state: ResumeState) -> Path:
        card = ModelCard(
            architecture=model.config.to_dict(),
            training={"federation": self.cfg.name, "strategy": self.cfg.strategy.name,
                      "secure_aggregation": self.cfg.secure_aggregation,
                      "local": self.cfg.local.__dict__, "history": state.history,
                      "audit_head": audit_head(self.cfg.audit_path)},
            privacy=dict(state.privacy),
            data_fingerprints={"anchor": self.anchor.fingerprint},
            rounds=rnd,
            notes="fedehr federated checkpoint; site epsilons are each site's cumulative "
                  "spend as its privacy ledger reported it in this round" + "".join(
                      f"; TRIAL: {site} trained on a sandbox ledger, its epsilon is not its "
                      "real guarantee" for site, p in sorted(state.privacy.items())
                      if p.get("trial")))
        return self.store.save_round(rnd, model, vocab, card, strategy_state(self.strategy),
                                     state)


def _weight_problem(weight) -> str:
    """Why an accepted update's aggregation weight is unusable ("" when it is fine)."""
    if isinstance(weight, (int, float)) and not isinstance(weight, bool) and \
            np.isfinite(weight) and weight > 0:
        return ""
    return f"aggregation weight {M.NUM_EXAMPLES!r} is missing or not positive: {weight!r}"


def _site_name(reply: Message) -> str:
    try:
        return str(reply.content[M.SITE][M.SITE_NAME])
    except KeyError:
        return f"node-{reply.metadata.src_node_id}"
