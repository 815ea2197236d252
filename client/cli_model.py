"""`fedehr model train-local`: train the model on one MEDS dataset, on this machine.

For a hospital trying the model on its own data before joining a federation,
and for the public anchor's warm start. With ``--dp`` the run is DP-SGD, is
charged to the patients' privacy ledger (kept per patients fingerprint, the hash
of the subject ids, in the
user state folder unless ``--ledger`` names one) and is refused past the
budget; the vocabulary must then come from outside the private data
(``--vocab``: the vocabulary round's or the public anchor's), because a
vocabulary built from the data would itself be an unaccounted release.
"""

from __future__ import annotations

import math
from pathlib import Path

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from fedehr.shared.errors import ConfigError, DataError

app = typer.Typer(help="Train, verify and use fedehr models.", no_args_is_help=True)
console = Console()

EXAMPLE = """Train the tiny model without DP, then with DP at epsilon 8:

  fedehr model train-local --data meds/ --out ckpt-plain --steps 300

  fedehr model train-local --data meds/ --out ckpt-dp --dp --epsilon 8 --delta 1e-5 \\
      --vocab vocab.json --steps 300
"""


@app.command("train-local", help=f"Train a model on one MEDS dataset.\n\n{EXAMPLE}")
def train_local(
    data: Path = typer.Option(..., "--data", help="MEDS dataset folder."),
    out: Path = typer.Option(..., "--out", help="Checkpoint folder to write."),
    dp: bool = typer.Option(False, "--dp", help="Train with DP-SGD (Opacus)."),
    epsilon: float = typer.Option(8.0, click_type=click.FloatRange(0, min_open=True),
                                  help="With --dp: cumulative epsilon to reach."),
    delta: float = typer.Option(1e-5, click_type=click.FloatRange(0, 1, min_open=True,
                                                                    max_open=True),
                                help="With --dp: delta (fixed per ledger)."),
    max_grad_norm: float = typer.Option(1.0, click_type=click.FloatRange(0, min_open=True),
                                        help="With --dp: per-patient clipping norm."),
    steps: int = typer.Option(200, min=1, help="Optimizer steps."),
    batch_size: int = typer.Option(32, min=1, help="(Expected) patients per step."),
    lr: float = typer.Option(1e-3, click_type=click.FloatRange(0, min_open=True),
                             help="AdamW learning rate."),
    preset: str = typer.Option("tiny", help="Model size: tiny, small or base."),
    max_len: int = typer.Option(0, min=0, help="Context length (0 = the preset's)."),
    vocab_path: Path = typer.Option(None, "--vocab", help="Vocabulary JSON to use."),
    min_count: float = typer.Option(5.0, min=0, help="Without --vocab: min patients per code."),
    ledger_path: Path = typer.Option(None, "--ledger", help="Privacy ledger (JSON)."),
    signing_key: Path = typer.Option(None, "--signing-key", help="Ed25519 PEM key; "
                                     "default: a local key in the user config folder."),
    cache_dir: Path = typer.Option(None, "--cache", help="Token cache folder."),
    threads: int = typer.Option(0, min=0, help="CPU threads (0 = torch default)."),
    device: str = typer.Option("auto", help="auto (a GPU when torch sees one), cpu, cuda, "
                               "cuda:N."),
    seed: int = typer.Option(0, min=0, help="Random seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out."),
) -> None:
    import platformdirs
    import torch

    from fedehr.client.privacy import PrivacyLedger
    from fedehr.client.privacy.dp_sgd import DPConfig, train_dp
    from fedehr.client.privacy.ledger import patients_fingerprint
    from fedehr.client.privacy.noise import fresh_key
    from fedehr.shared import __version__
    from fedehr.shared.atomic import check_output
    from fedehr.shared.checkpoint import ModelCard, generate_signing_key, load_signing_key, save
    from fedehr.shared.checkpoint.format import KIND as CHECKPOINT_KIND
    from fedehr.shared.checkpoint.signing import fingerprint
    from fedehr.shared.data.dataset import MEDSDataset
    from fedehr.shared.model import EHRModel, ModelConfig
    from fedehr.shared.tokenizer.cache import load_or_build
    from fedehr.shared.tokenizer.mapping import CodeMapping, parents_and_units
    from fedehr.shared.tokenizer.merge import vocabulary_from_public
    from fedehr.shared.tokenizer.vocabulary import Vocabulary
    from fedehr.shared.tokenizer.windows import PatientWindows
    from fedehr.shared.training import evaluate, train
    from fedehr.shared.training.device import resolve_device

    inputs = (data, vocab_path, ledger_path, signing_key, cache_dir)
    check_output(out, kind=CHECKPOINT_KIND, overwrite=overwrite, inputs=inputs)  # before work
    dataset = MEDSDataset.open(data)
    fingerprint_data = dataset.fingerprint()
    codes = dataset.codes()
    mapping = CodeMapping.from_config(None, codes)
    splits = dataset.splits_present()
    train_split = "train" if "train" in splits else None
    val_split = next((s for s in ("tuning", "held_out") if s in splits), None)

    if vocab_path is not None:
        vocab = Vocabulary.from_json(vocab_path)
    elif dp:
        raise ConfigError("a DP run needs a vocabulary from outside the private data",
                          where="--vocab", fix="pass --vocab (the vocabulary round's or one "
                          "built from the public anchor)")
    else:
        with console.status("building the vocabulary"):
            events = mapping.apply(dataset.scan(train_split).collect())
            vocab = vocabulary_from_public(events, min_count=min_count,
                                           parents=parents_and_units(codes)[0])

    cache_root = cache_dir or Path(platformdirs.user_cache_dir("fedehr")) / "tokens"
    with console.status("tokenizing"):
        train_cache = load_or_build(dataset, vocab, mapping, cache_root, split=train_split,
                                    fingerprint=fingerprint_data)
        val_cache = (load_or_build(dataset, vocab, mapping, cache_root, split=val_split,
                                   fingerprint=fingerprint_data) if val_split else None)
    overrides = {"note_dim": 0, "image_dim": 0, "pro_dim": len(vocab.pro_codes)}
    if max_len:
        overrides["max_len"] = max_len
    config = ModelConfig.preset(preset, len(vocab), **overrides)
    train_windows = PatientWindows(train_cache, vocab, config.max_len, seed=seed)
    val_windows = (PatientWindows(val_cache, vocab, config.max_len, seed=seed + 1)
                   if val_cache is not None and len(val_cache) else None)
    if len(train_windows) == 0:
        raise DataError("no training patients", where=str(data),
                        fix="check the dataset's subject_splits")

    torch.manual_seed(seed)
    model = EHRModel(config, tokens=vocab.tokens)
    run_on = resolve_device(device, where="--device")
    ledger = dp_config = None
    if dp:
        # The ledger belongs to the patients, not to the export's bytes: a re-import of
        # the same patients (new created_at, new shards) finds the same ledger.
        patients = patients_fingerprint(dataset.subject_splits()["subject_id"].to_list())
        if ledger_path is None:
            ledger_path = (Path(platformdirs.user_state_dir("fedehr")) / "ledgers"
                           / f"{patients}.json")
        ledger = PrivacyLedger.open(ledger_path, epsilon_budget=epsilon, delta=delta,
                                    patients=patients)
        dp_config = DPConfig(max_grad_norm=max_grad_norm, target_epsilon=epsilon)
        console.print(f"privacy ledger {ledger_path}: epsilon {ledger.spent():.3f} of "
                      f"{ledger.epsilon_budget:g} spent so far (delta {delta:g}, "
                      f"{ledger.accountant})")

    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TextColumn("loss {task.fields[loss]}"),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("training", total=steps, loss="-")

        def progress(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, loss=f"{loss:.3f}")

        common = dict(steps=steps, batch_size=min(batch_size, len(train_windows)), lr=lr,
                      progress=progress, num_threads=threads or None, device=run_on)
        if dp_config is None:
            result = train(model, train_windows, seed=seed, **common)
        else:  # the DP noise key is secret and fresh, never the public --seed
            result = train_dp(model, train_windows, dp=dp_config, ledger=ledger,
                              seed=fresh_key(), **common)

    eval_set = val_windows or train_windows
    val_loss, val_ppl = evaluate(model, eval_set, batch_size=64, device=run_on)
    model.cpu()  # checkpoints hold CPU tensors whatever trained them
    base_loss = unigram_loss(train_windows, eval_set, len(vocab))

    key_path = signing_key or Path(platformdirs.user_config_dir("fedehr")) / "local-signing.key"
    key = load_signing_key(key_path) if key_path.exists() else generate_signing_key(key_path)
    card = ModelCard(
        architecture=config.to_dict(),
        training={"kind": "local", "steps": result.steps, "examples": result.examples,
                  "tokens": result.tokens, "seconds": round(result.seconds, 2),
                  "mean_train_loss": result.mean_loss, "batch_size": batch_size, "lr": lr,
                  "eval_split": val_split or "train", "eval_loss": val_loss,
                  "eval_perplexity": val_ppl, "unigram_perplexity": math.exp(base_loss),
                  "dp": None if not dp else {"max_grad_norm": max_grad_norm,
                                             "noise_multiplier": result.noise_multiplier,
                                             "sample_rate": result.sample_rate}},
        privacy={"local": ledger.summary()} if ledger is not None else {},
        data_fingerprints={"local": fingerprint_data}, rounds=0,
        software_version=__version__)
    save(out, model, vocab, card, key, overwrite=overwrite, inputs=inputs)

    table = Table(title=f"fedehr model train-local -> {out}")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("steps / patients seen", f"{result.steps} / {result.examples}")
    table.add_row("tokens seen", f"{result.tokens:,}")
    table.add_row("time", f"{result.seconds:.1f} s")
    table.add_row(f"{val_split or 'train'} loss", f"{val_loss:.4f}")
    table.add_row("model perplexity", f"{val_ppl:.2f}")
    table.add_row("unigram-baseline perplexity", f"{math.exp(base_loss):.2f}")
    if ledger is not None:
        table.add_row("noise multiplier", f"{result.noise_multiplier:.3f}")
        table.add_row("epsilon spent (cumulative)",
                      f"{ledger.spent():.3f} at delta {ledger.delta:g} ({ledger.accountant})")
    table.add_row("signer", fingerprint(key)[:23] + "...")
    console.print(table)


def unigram_loss(train_set, eval_set, vocab_size: int) -> float:
    """The model's loss for a unigram model (add-one smoothed token frequencies of the
    training windows), averaged as the model's: per example over non-pad targets."""
    import torch

    from fedehr.shared.tokenizer.batch import PAD_ID

    counts = torch.ones(vocab_size, dtype=torch.float64)
    for i in range(len(train_set)):
        targets = torch.as_tensor(train_set[i][0])[1:]
        targets = targets[targets != PAD_ID]
        counts += torch.bincount(targets, minlength=vocab_size).double()
    counts[PAD_ID] = 0
    nll = -(counts / counts.sum()).log()
    losses = []
    for i in range(len(eval_set)):
        targets = torch.as_tensor(eval_set[i][0])[1:]
        targets = targets[targets != PAD_ID]
        if len(targets):
            losses.append(float(nll[targets].mean()))
    return sum(losses) / max(len(losses), 1)
