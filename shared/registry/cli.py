"""`fedehr model pull | verify | card | list`: what a researcher does with the registry.

`pull` fetches a signed checkpoint over mutual TLS (resumable, SHA-256
checked, verified before it appears), `verify` checks a checkpoint folder
(signature, file hashes, vocabulary), `card` prints its model card, `list`
shows the rounds the registry offers.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from fedehr.shared.errors import FedEHRError

app = typer.Typer(help="Pull, verify and inspect the consortium's signed checkpoints.",
                  no_args_is_help=True)
console = Console()
err = Console(stderr=True)

REGISTRY = typer.Option("127.0.0.1:9095", "--registry", help="host:port of the registry.")
CA = typer.Option(..., "--pki-ca", help="The consortium CA certificate (ca.pem).")
CERT = typer.Option(..., "--cert", help="Your researcher certificate (PEM).")
KEY = typer.Option(..., "--key", help="Its private key (PEM).")
TRUSTED = typer.Option(None, "--trusted-key", help="The consortium's public key "
                       "(consortium.pub): the signature must be by this key.")

PULL_EXAMPLE = """Example:

  fedehr model pull --registry registry.example.org:9095 --pki-ca ca.pem \\
      --cert alice.pem --key alice.key --round latest --out ckpt --trusted-key consortium.pub

An interrupted pull keeps OUT.partial; the same command resumes it.
"""


@app.command(help=f"Pull a signed checkpoint from the registry into OUT.\n\n{PULL_EXAMPLE}")
def pull(
    registry: str = REGISTRY, pki_ca: Path = CA, cert: Path = CERT, key: Path = KEY,
    round: str = typer.Option("latest", "--round", help="'latest' or a round number."),
    out: Path = typer.Option(..., "--out", help="Folder to create for the checkpoint."),
    trusted_key: Path = TRUSTED,
) -> None:
    from fedehr.shared.registry.pull import partial_paths
    from fedehr.shared.registry.pull import pull as pull_checkpoint

    columns = (TextColumn("[bold]pull[/] {task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task(f"round {round}", total=None)

        def on_progress(held: int, total: int) -> None:
            progress.update(task, completed=held, total=total)

        try:
            result = pull_checkpoint(registry, ca=pki_ca, cert=cert, key=key, out=out,
                                     round=round, trusted_public_key=trusted_key,
                                     on_progress=on_progress)
        except KeyboardInterrupt:
            progress.stop()
            partial, _ = partial_paths(out)
            held = partial.stat().st_size if partial.exists() else 0
            err.print(f"[yellow]interrupted[/]: {held} bytes kept in {partial}; run the same "
                      "command to resume")
            raise typer.Exit(130) from None
    resumed = f", resumed at byte {result.resumed_from}" if result.resumed_from else ""
    console.print(f"[green]pulled[/] round {result.round} into {escape(str(result.path))} "
                  f"({result.size} bytes{resumed}; sha256 {result.sha256[:16]}...)")
    _print_trust(trusted_key)


@app.command()
def verify(
    folder: Path = typer.Argument(..., help="A checkpoint folder."),
    trusted_key: Path = TRUSTED,
) -> None:
    """Check a checkpoint's signature, file hashes and vocabulary; one-line verdict.

    Exit status 0 when it holds, 1 when it does not.
    Example: fedehr model verify ckpt --trusted-key consortium.pub
    """
    from fedehr.shared.checkpoint import CheckpointError
    from fedehr.shared.checkpoint import format as ckpt
    from fedehr.shared.checkpoint import verify as verify_checkpoint
    from fedehr.shared.checkpoint.signing import fingerprint, load_public_key

    try:
        card = verify_checkpoint(folder, trusted_public_key=trusted_key)
        from fedehr.shared.tokenizer.vocabulary import Vocabulary

        vocab = Vocabulary.from_json(folder / ckpt.VOCAB)
        if str(vocab.hash) != card.vocab_hash:
            raise CheckpointError("the vocabulary's hash differs from the model card's",
                                  where=str(folder), fix="do not use this checkpoint")
        signer = fingerprint(load_public_key(folder / ckpt.SIGNER))
    except FedEHRError as exc:
        console.print(f"[bold red]FAILED[/] {escape(exc.one_line())}", highlight=False,
                      soft_wrap=True)
        raise typer.Exit(1) from None
    trust = "by the trusted key" if trusted_key else "(signer not checked: no --trusted-key)"
    console.print(f"[green]OK[/] {escape(str(folder))}: round {card.rounds}, {len(vocab)} "
                  f"tokens, signed {trust} {signer[:23]}...", highlight=False, soft_wrap=True)


@app.command()
def card(folder: Path = typer.Argument(..., help="A checkpoint folder.")) -> None:
    """Print a checkpoint's model card: rounds, sites, privacy, data, loss history.

    The card is read as it is; run `fedehr model verify` to check it is authentic.
    Example: fedehr model card ckpt
    """
    from fedehr.shared.checkpoint import ModelCard
    from fedehr.shared.checkpoint import format as ckpt
    from fedehr.shared.registry.card_view import render

    path = folder / ckpt.CARD
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FedEHRError(f"cannot read the model card ({exc.strerror})", where=str(path),
                          fix="give a checkpoint folder (pull one with `fedehr model pull`)"
                          ) from None
    render(ModelCard.from_json(raw, where=str(path)), console, title=str(folder))


@app.command("list")
def list_(registry: str = REGISTRY, pki_ca: Path = CA, cert: Path = CERT,
          key: Path = KEY) -> None:
    """List the rounds the registry offers.

    Example: fedehr model list --registry host:9095 --pki-ca ca.pem --cert me.pem --key me.key
    """
    from fedehr.shared.registry.client import Credentials, list_checkpoints

    table = Table("round", "created", "size (bytes)", "sites")
    for entry in list_checkpoints(Credentials(registry, pki_ca, cert, key)):
        mark = " (withdrawn)" if entry.withdrawn else ""
        table.add_row(f"{entry.round}{mark}", entry.created_at, str(entry.size),
                      ", ".join(entry.sites))
    console.print(table)


def _print_trust(trusted_key: Path | None) -> None:
    if trusted_key is None:
        err.print("[yellow]note[/]: integrity checked, but not who signed it; pass "
                  "--trusted-key consortium.pub to require the consortium's signature")
