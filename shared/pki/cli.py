"""`fedehr pki ...`: the operator issues and revokes the consortium's keys and certificates."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(help="Issue and revoke the consortium's certificates and keys "
                       "(CA, SuperLink TLS, hospital keys, researcher certificates).",
                  no_args_is_help=True)
console = Console()

DIR_OPTION = typer.Option(Path("pki"), "--dir", help="The consortium's PKI folder.")
FORCE_OPTION = typer.Option(False, "--force", help="Replace existing keys (old ones stop working).")


@app.command()
def init(
    dir: Path = DIR_OPTION,
    name: str = typer.Option("Consortium CA", "--name", help="Name of the CA (subject CN and O)."),
    force: bool = FORCE_OPTION,
) -> None:
    """Create the consortium CA (ca.pem, ca.key) and the Ed25519 signing key.

    Example: fedehr pki init --dir ./pki --name "North Sea Hospitals CA"
    """
    from fedehr.shared.pki import init_ca

    paths = init_ca(dir, name, force=force)
    console.print(f"[green]created[/] {escape(f'{paths.ca_cert}, {paths.ca_key}')} "
                  "(keep ca.key offline)")
    console.print(f"[green]created[/] {escape(f'{paths.signing_key}, {paths.signing_pub}')}")
    console.print(f"next: fedehr pki server --host <superlink host> --dir {dir}")


@app.command()
def server(
    host: list[str] = typer.Option([], "--host", help="DNS name or IP address the SuperLink is "
                                   "reached at (repeatable); localhost, 127.0.0.1, ::1 are "
                                   "always included."),
    dir: Path = DIR_OPTION,
    force: bool = FORCE_OPTION,
    days: int = typer.Option(None, "--days", min=1, help="How long the certificate is valid, "
                             "in days (default 825; `fedehr server check` warns 30 days "
                             "before it ends)."),
) -> None:
    """Issue the SuperLink's TLS certificate (superlink.pem, superlink.key) signed by the CA.

    Example: fedehr pki server --host superlink.example.org --host 10.0.0.5 --dir ./pki
    """
    from fedehr.shared.pki import issue_server_cert

    validity = {} if days is None else {"days": days}
    cert, key = issue_server_cert(dir, host, force=force, **validity)
    console.print(f"[green]issued[/] {escape(str(cert))}, {escape(str(key))}")
    console.print(f"next: `fedehr pki site NAME --dir {dir}` for each hospital and "
                  f"`fedehr pki bundle-key --dir {dir}`; then, with `pki: {dir}` in "
                  "federation.yaml, `fedehr server start --config federation.yaml` (it "
                  "starts the SuperLink with this certificate)", highlight=False)


@app.command()
def site(
    name: str = typer.Argument(..., help="Hospital name: 1-40 of a-z, 0-9, '_' and '-'."),
    dir: Path = DIR_OPTION,
    force: bool = FORCE_OPTION,
) -> None:
    """Issue a hospital's SuperNode authentication key pair (sites/NAME.key, sites/NAME.pub).

    Example: fedehr pki site st-marys --dir ./pki
    """
    from fedehr.shared.pki import issue_site_key

    private, public = issue_site_key(dir, name, force=force)
    console.print(f"[green]issued[/] {escape(str(private))} (send to the hospital only) "
                  f"and {escape(str(public))}")
    console.print(f"next: list {name} under `sites:` in federation.yaml; `fedehr server "
                  f"start` registers its key (on a running server: `fedehr server register "
                  f"{name} --config federation.yaml`)", highlight=False)


@app.command()
def researcher(
    name: str = typer.Argument(..., help="Holder name: 1-40 of a-z, 0-9, '_' and '-'."),
    role: str = typer.Option("researcher", "--role", help="researcher or operator."),
    dir: Path = DIR_OPTION,
    force: bool = FORCE_OPTION,
) -> None:
    """Issue a client certificate (researchers/NAME.pem, .key) for the checkpoint registry.

    Example: fedehr pki researcher alice --role researcher --dir ./pki
    """
    from fedehr.shared.pki import issue_client_cert

    cert, key = issue_client_cert(dir, name, role, force=force)
    console.print(f"[green]issued[/] {role} certificate {escape(f'{cert}, {key}')}")


@app.command("bundle-key")
def bundle_key(dir: Path = DIR_OPTION, force: bool = FORCE_OPTION) -> None:
    """Create the Ed25519 key whose signature approves app bundles (signing/bundle.key, .pub).

    `fedehr run start` signs every bundle it ships with it; hospitals that list
    bundle.pub under approval.bundle_public_key in site.yaml run signed bundles only.

    Example: fedehr pki bundle-key --dir ./pki
    """
    from fedehr.shared.pki.bundle_signing import create_bundle_key

    private, public = create_bundle_key(dir, force=force)
    console.print(f"[green]created[/] {escape(str(private))} (stays with the operator) "
                  f"and {escape(str(public))}")
    console.print("give bundle.pub to every hospital: site.yaml approval.bundle_public_key")


@app.command()
def revoke(
    name: str = typer.Argument(..., help="Name of the researcher, operator or site."),
    kind: str = typer.Option(None, "--kind", help="Only this kind: researcher or site "
                             "(default: every credential with that name)."),
    dir: Path = DIR_OPTION,
) -> None:
    """Add a researcher's certificate or a site's key to revoked.json.

    Example: fedehr pki revoke alice --dir ./pki
    """
    from fedehr.shared.pki import PKIError
    from fedehr.shared.pki import revoke as revoke_

    if kind not in (None, "researcher", "site"):
        raise PKIError(f"unknown kind '{kind}'", where="--kind", fix="use researcher or site")
    for entry in revoke_(dir, name, kind):
        console.print(f"[yellow]revoked[/] {entry.kind} {entry.name} ({entry.fingerprint})")
        if entry.kind == "site":
            console.print("also remove it from the SuperLink: flwr supernode unregister "
                          "<node-id> CONNECTION (see `flwr supernode ls`)", highlight=False)


@app.command("list")
def list_(dir: Path = DIR_OPTION) -> None:
    """Show every issued credential: kind, name, expiry, fingerprint, revoked.

    Example: fedehr pki list --dir ./pki
    """
    from fedehr.shared.pki import list_credentials
    from fedehr.shared.pki.layout import PKIPaths, require_ca

    require_ca(PKIPaths.of(dir))
    table = Table(title=f"PKI {dir}")
    for column in ("kind", "name", "expires", "fingerprint", "revoked"):
        table.add_column(column)
    for row in list_credentials(dir):
        expires = row.expires.strftime("%Y-%m-%d") if row.expires else "-"
        table.add_row(row.kind, row.name, expires, _short(row.fingerprint),
                      "[red]yes[/]" if row.revoked else "no")
    console.print(table)


def _short(fp: str) -> str:
    return fp if len(fp) <= 31 else fp[:31] + "…"
