"""MIMIC-IV lab itemid -> LOINC, for exports whose d_labitems has no loinc_code.

MIMIC-IV 2.2's full release carries ``d_labitems.loinc_code``, but the public demo 2.2
export and every 3.x release do not, and without it no ``LAB//<itemid>//<unit>`` code gets
a LOINC parent, so a site's labs all fall outside a LOINC vocabulary (issue 19: 11.6% of
the demo's lab events covered). The public anchor (the MIMIC-IV demo in MEDS form, from
the community MIMIC_IV_MEDS ETL, ODbL) carries exactly this mapping as the parent codes of
its lab codes in ``metadata/codes.parquet``. That mapping is shipped with the package as
``tables/mimic_iv_labitem_loinc.csv`` (itemid, loinc_code, loinc_name); regenerate it with

    .venv/bin/python -m fedehr.shared.data.etl.lab_loinc [ANCHOR_ROOT]

which reads the anchor (fetched with `fetch_anchor` when no root is given).
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


def table_from_codes(codes: pl.DataFrame) -> pl.DataFrame:
    """itemid, loinc_code, loinc_name from codes.parquet rows ``LAB//<itemid>//...`` whose
    parent_codes hold a ``LOINC/`` code. An itemid with two different LOINC parents keeps
    the one most of its codes name (ties: the smaller code), so the table is one row per
    itemid."""
    lab = codes.filter(pl.col(S.CODE).str.starts_with("LAB//"))
    rows = lab.select(
        pl.col(S.CODE).str.split("//").list.get(1).cast(pl.Int64, strict=False).alias("itemid"),
        pl.col("parent_codes").list.eval(pl.element().filter(
            pl.element().str.starts_with("LOINC/"))).list.first()
        .str.strip_prefix("LOINC/").alias("loinc_code"),
        pl.col("description").alias("loinc_name"),
    ).drop_nulls(["itemid", "loinc_code"])
    return (rows.group_by("itemid", "loinc_code")
            .agg(pl.len().alias("n"), pl.col("loinc_name").drop_nulls().first())
            .sort(["itemid", "n", "loinc_code"], descending=[False, True, False])
            .unique("itemid", keep="first", maintain_order=True)
            .select(COLUMNS))


@cache
def labitem_loinc() -> dict[int, str]:
    """The shipped table as itemid -> LOINC code (without the ``LOINC/`` prefix)."""
    with TABLE_PATH.open(encoding="utf-8", newline="") as fh:
        return {int(r["itemid"]): r["loinc_code"] for r in csv.DictReader(fh)}


def write_table(table: pl.DataFrame, path: Path = TABLE_PATH) -> None:
    from fedehr.shared.atomic import write_text

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(table.select(COLUMNS).iter_rows())
    write_text(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        root = Path(argv[0])
    else:
        from fedehr.shared.data.anchor import fetch_anchor

        root = fetch_anchor()
    table = table_from_codes(pl.read_parquet(root / S.CODES_FILE))
    write_table(table)
    print(f"{TABLE_PATH}: {table.height} itemids with a LOINC code (from {root})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
