"""The contract of the Flower messages between the server and the sites.

Records are the only currency (as in Flower's strategies), so every message
can be inspected: arrays in an ArrayRecord, numbers in a MetricRecord,
strings in a ConfigRecord. This module names every key once; both sides
import it.

Server -> site
  query           config: query = "vocab-counts" (+ candidates-json: the public code list)
                  or "vocab-values" (+ codes-json and value-grid-json), round-id
  train           arrays (global model) + config: TRAIN_* keys below
  evaluate        arrays + config: federation, round-id, vocab-json, model-config-json

Site -> server
  query reply     site: name + release-json (DP-noised counts and value sketches)
  train reply     arrays (the site's updated model), metrics: METRIC_* keys, site: name
  evaluate reply  metrics: num-examples (+ eval-loss), site: name
  Patient-derived metrics are optional: a site sends train-loss, eval-loss and
  train-seconds only if its site.yaml declares them public, and num-examples
  is 1 (equal FedAvg weights) unless it declares its counts public. Readers
  must cope with their absence.
Secure rounds (`secure_aggregation: true`, Flower's legacy SecAgg+ messages)
  train           FitIns: global weights as a parameter list in ARRAY_NAMES order +
                  the TRAIN_* config keys, ARRAY_NAMES, SECAGG_* keys
  train reply     FitRes: the update (trained minus global weights), masked by
                  SecAgg+ so the server only ever sums it; metrics as above + site name
                  and SECAGG_CLIPPED
Arrays travel packed (shared.packed_arrays): one Flower Array per dtype plus the
layout, so a message is a few objects for the SuperLink to serve, not two per tensor.
Nothing record-level ever leaves a site: only model arrays, aggregate
metrics, and DP-noised, thresholded counts.
"""

from __future__ import annotations

import json

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
SITE = "site"

QUERY_COUNTS = "vocab-counts"  # values of config["query"]
QUERY_VALUES = "vocab-values"

# config keys (server -> site)
FEDERATION = "federation"
ROUND_ID = "round-id"  # globally unique: "<federation>/<round>"
QUERY = "query"
CANDIDATES = "candidates-json"
SKETCH_CODES = "codes-json"
VALUE_GRID = "value-grid-json"
VOCAB_JSON = "vocab-json"
VOCAB_HASH = "vocab-hash"
MODEL_CONFIG = "model-config-json"
LOCAL_STEPS = "local-steps"
BATCH_SIZE = "batch-size"
LEARNING_RATE = "lr"
PROXIMAL_MU = "proximal-mu"
ROUNDS_LEFT = "rounds-left"  # including this one: the site spreads its budget over them
FROZEN_ROWS = "frozen-rows-json"  # token ids whose embedding and output rows stay as sent
ANCHOR_PER_STEP = "anchor-per-step"  # public anchor windows in every DP-SGD batch
ANCHOR_FINGERPRINT = "anchor-fingerprint"  # ... of the server's anchor copy, for the site to match
UPDATE_COMPRESSION = "update-compression"  # "float16": reply with float16 differences
ARRAY_NAMES = "array-names-json"  # secure rounds: state_dict names of the parameter list
SECAGG_CLIPPING_RANGE = "secagg-clipping-range"  # |weighted update| bound SecAgg+ clips to
SECAGG_MAX_WEIGHT = "secagg-max-weight"  # update weights (patients) must not exceed this

# site -> server
SITE_NAME = "name"
RELEASE_JSON = "release-json"
UPDATE_FLOAT16_DELTA = "update-float16-delta"  # 1.0: arrays are float16 (trained - global)
NUM_EXAMPLES = "num-examples"  # FedAvg's weighting key: patients if public, else 1
COUNTS_PUBLIC = "counts-public"  # 1.0 if num-examples is the patient count, 0.0 if it is 1
TRAIN_LOSS = "train-loss"  # optional (site.yaml privacy.release_metrics: public)
EVAL_LOSS = "eval-loss"  # optional, likewise
EPSILON = "epsilon"
EPSILON_BUDGET = "epsilon-budget"
DELTA = "delta"
NOISE_MULTIPLIER = "noise-multiplier"
STEPS = "steps"
TRAIN_SECONDS = "train-seconds"  # optional, likewise
# The site's whole ledger, so that the model card lets a reader recompute epsilon:
LEDGER_HISTORY = "ledger-history"  # [noise, sample_rate, steps] * charges, flattened
ACCOUNTANT = "accountant-index"  # index in ACCOUNTANTS of the site ledger's accountant
ACCOUNTANTS = ("rdp", "prv")  # as fedehr.shared.privacy.accounting.ACCOUNTANTS
EPSILON_PER_RUN = "epsilon-per-run"  # the most one run may add (site.yaml epsilon_per_run)
TRIAL_LEDGER = "trial-ledger"  # 1.0: charged to the site's sandbox ledger (privacy.trial)


def ledger_history(metrics: dict) -> tuple[str | None, list[list[float]]]:
    """(accountant, [[noise, sample_rate, steps], ...]) from a train reply's metrics.

    The secure path carries the flattened history as a JSON string (Flower's
    legacy metrics hold scalars only); a site of an older fedehr sends neither.
    """
    flat = metrics.get(LEDGER_HISTORY)
    if isinstance(flat, str):
        flat = json.loads(flat)
    index = metrics.get(ACCOUNTANT)
    accountant = ACCOUNTANTS[int(index)] if index is not None else None
    values = [float(v) for v in (flat or [])]
    return accountant, [[values[i], values[i + 1], int(values[i + 2])]
                        for i in range(0, len(values) - 2, 3)]
SECAGG_CLIPPED = "secagg-clipped-fraction"  # share of update values SecAgg+ clipped
