"""MIMIC-IV itemid -> standard code tables: lab items -> LOINC, infusion items -> RxNorm.

MIMIC-IV 2.2's full release carries ``d_labitems.loinc_code``, but the public demo 2.2
export and every 3.x release do not, and without it no ``LAB//<itemid>//<unit>`` code gets
a LOINC parent, so a site's labs all fall outside a LOINC vocabulary (issue 19: 11.6% of
the demo's lab events covered). The public anchor (the MIMIC-IV demo in MEDS form, from
the community MIMIC_IV_MEDS ETL, ODbL) carries exactly this mapping as the parent codes of
its lab codes in ``metadata/codes.parquet``. That mapping is shipped with the package as
``tables/mimic_iv_labitem_loinc.csv`` (itemid, loinc_code, loinc_name); regenerate it with

    .venv/bin/python -m fedehr.shared.data.etl.lab_loinc [ANCHOR_ROOT]

which reads the anchor (fetched with `fetch_anchor` when no root is given). The same run
writes ``tables/mimic_iv_inputitem_rxnorm.csv`` (itemid, rxnorm_code, rxnorm_name): the RxNorm
parents the anchor gives its ``INFUSION_START//<itemid>`` codes (d_items has no RxNorm column;
without it the real demo's infusions stayed outside the vocabulary).
"""

from __future__ import annotations

import csv
import io
import sys
from functools import cache
from pathlib import Path

import polars as pl

from fedehr.shared.data import schema as S

TABLE_PATH = Path(__file__).parent / "tables" / "mimic_iv_labitem_loinc.csv"
COLUMNS = ("itemid", "loinc_code", "loinc_name")
RXNORM_TABLE_PATH = Path(__file__).parent / "tables" / "mimic_iv_inputitem_rxnorm.csv"
RXNORM_COLUMNS = ("itemid", "rxnorm_code", "rxnorm_name")


def table_from_codes(codes: pl.DataFrame, prefix: str = "LAB//", standard: str = "LOINC/",
                     columns: tuple[str, str, str] = COLUMNS) -> pl.DataFrame:
    """itemid, code, name from codes.parquet rows ``<prefix><itemid>//...`` whose
    parent_codes hold a `standard` code (default: labs and LOINC). An itemid with two
    different parents keeps the one most of its codes name (ties: the smaller code), so the
    table is one row per itemid."""
    itemid, code, name = columns
    lab = codes.filter(pl.col(S.CODE).str.starts_with(prefix))
    rows = lab.select(
        pl.col(S.CODE).str.split("//").list.get(prefix.count("//"))
        .cast(pl.Int64, strict=False).alias(itemid),
        pl.col("parent_codes").list.eval(pl.element().filter(
            pl.element().str.starts_with(standard))).list.first()
        .str.strip_prefix(standard).alias(code),
        pl.col("description").alias(name),
    ).drop_nulls([itemid, code])
    return (rows.group_by(itemid, code)
            .agg(pl.len().alias("n"), pl.col(name).drop_nulls().first())
            .sort([itemid, "n", code], descending=[False, True, False])
            .unique(itemid, keep="first", maintain_order=True)
            .select(columns))


@cache
def labitem_loinc() -> dict[int, str]:
    """The shipped table as itemid -> LOINC code (without the ``LOINC/`` prefix)."""
    with TABLE_PATH.open(encoding="utf-8", newline="") as fh:
        return {int(r["itemid"]): r["loinc_code"] for r in csv.DictReader(fh)}


@cache
def inputitem_rxnorm() -> dict[int, str]:
    """The shipped infusion table as itemid -> RxNorm code (without ``RxNorm/``)."""
    with RXNORM_TABLE_PATH.open(encoding="utf-8", newline="") as fh:
        return {int(r["itemid"]): r["rxnorm_code"] for r in csv.DictReader(fh)}


def write_table(table: pl.DataFrame, path: Path = TABLE_PATH,
                columns: tuple[str, ...] = COLUMNS) -> None:
    from fedehr.shared.atomic import write_text

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(table.select(columns).iter_rows())
    write_text(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        root = Path(argv[0])
    else:
        from fedehr.shared.data.anchor import fetch_anchor

        root = fetch_anchor()
    codes = pl.read_parquet(root / S.CODES_FILE)
    table = table_from_codes(codes)
    write_table(table)
    print(f"{TABLE_PATH}: {table.height} itemids with a LOINC code (from {root})")
    rxnorm = table_from_codes(codes, "INFUSION_START//", "RxNorm/", RXNORM_COLUMNS)
    write_table(rxnorm, RXNORM_TABLE_PATH, RXNORM_COLUMNS)
    print(f"{RXNORM_TABLE_PATH}: {rxnorm.height} itemids with an RxNorm code (from {root})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
