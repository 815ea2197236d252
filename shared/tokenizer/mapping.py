"""Code mapping: site codes become the standard codes the shared vocabulary is made of.

Three steps, applied to every event before it is tokenized:

1. **Site harmonisation** (the site's config, ``code_map: {local: standard}``):
   exact codes or shell-style patterns (``LAB//CREAT_S//*``) rewritten to a
   standard code. Exact entries win over patterns; patterns apply in file order.
2. **MIMIC-IV's spellings** of admissions, care units, dispositions and drug
   administrations become the consortium's codes (`mimic_spellings`), so the
   public anchor trains the tokens the sites use.
3. **Parent mapping** through ``metadata/codes.parquet``: a code whose
   ``parent_codes`` include a code of a standard vocabulary (LOINC/, ICD10CM/,
   ICD9CM/, ICD10PCS/, RxNorm/, SNOMEDCT/ ...) maps to the first such parent.
   This is how the public anchor (MIMIC-IV itemids, ``LAB//50912//mg/dL`` with
   parent ``LOINC/2160-0``) and the sites (``LAB//2160-0//mg/dL``) meet in one
   vocabulary, the OMOP-style "map to standard concepts" step that MEDS
   pipelines (MEDS_EIC_AR, ETHOS' MIMIC preprocessing) do with parent codes.
   Codes without codes.parquet parents that still spell an ICD-CM diagnosis
   (``...ICD//10//I509``) are mapped by pattern (ICD10CM/I50.9).

**Units.** A standard lab code alone does not say the unit, and values in
different units must never share one set of bin edges. Decision: the unit stays
in the token (``LOINC/2160-0//mg/dL``) *and* values in a known alternative unit
are converted to the analyte's canonical (US conventional) unit first, from a
small table of exact factors (`UNIT_CONVERSIONS`: creatinine umol/L -> mg/dL
/88.42, glucose mmol/L -> mg/dL x18.016, urea mmol/L -> BUN mg/dL x2.801,
haemoglobin g/L -> g/dL /10, and spelling synonyms such as mEq/L = mmol/L for
monovalent ions, 10*9/L = 10*3/uL, ng/L = pg/mL). So creatinine from a site
reporting umol/L and from MIMIC's mg/dL share one token and one bin set; a unit
the table does not know keeps its own token (``LOINC/XXXX//odd-unit``) and its
own bins, never mixed. The unit of a source code comes from codes.parquet's
``valueuom`` column when present, else from the last ``//`` segment of codes
under a unit-bearing prefix (``LAB//`` by default); ``UNK`` means no unit.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import polars as pl

from fedehr.shared.data import schema as S
from fedehr.shared.errors import ConfigError
from fedehr.shared.tokenizer import mimic_spellings

STANDARD_VOCABULARIES = ("LOINC/", "ICD10CM/", "ICD9CM/", "ICD10PCS/", "ICD9PROC/",
                         "RxNorm/", "SNOMEDCT/", "ATC/", "CPT4/")
UNIT_CODE_PREFIXES = ("LAB//",)
NO_UNIT = {"", "UNK", "NONE", "NULL", "___"}

# Spelling variants of one unit.
UNIT_SYNONYMS = {
    "µmol/l": "umol/L", "μmol/l": "umol/L", "umol/l": "umol/L",
    "mmol/l": "mmol/L", "mg/dl": "mg/dL", "g/dl": "g/dL", "g/l": "g/L",
    "pg/ml": "pg/mL", "ng/l": "ng/L", "k/ul": "10*3/uL", "10^3/ul": "10*3/uL",
    "x10e3/ul": "10*3/uL", "10*3/ul": "10*3/uL", "10*9/l": "10*9/L", "10^9/l": "10*9/L",
    "meq/l": "mEq/L",
}

# (standard code, unit) -> (canonical unit, multiply the value by)
UNIT_CONVERSIONS: dict[tuple[str, str], tuple[str, float]] = {
    ("LOINC/2160-0", "umol/L"): ("mg/dL", 1 / 88.42),  # creatinine
    ("LOINC/38483-4", "umol/L"): ("mg/dL", 1 / 88.42),  # creatinine, blood
    ("LOINC/2345-7", "mmol/L"): ("mg/dL", 18.016),  # glucose, serum/plasma
    ("LOINC/2339-0", "mmol/L"): ("mg/dL", 18.016),  # glucose, blood
    ("LOINC/3094-0", "mmol/L"): ("mg/dL", 1 / 0.357),  # urea -> BUN
    ("LOINC/718-7", "g/L"): ("g/dL", 0.1),  # haemoglobin
    ("LOINC/2951-2", "mEq/L"): ("mmol/L", 1.0),  # sodium
    ("LOINC/2823-3", "mEq/L"): ("mmol/L", 1.0),  # potassium
    ("LOINC/2075-0", "mEq/L"): ("mmol/L", 1.0),  # chloride
    ("LOINC/1963-8", "mEq/L"): ("mmol/L", 1.0),  # bicarbonate
    ("LOINC/6690-2", "10*9/L"): ("10*3/uL", 1.0),  # leukocytes
    ("LOINC/30934-4", "ng/L"): ("pg/mL", 1.0),  # BNP
}

_ICD_EVENT_RE = re.compile(r"(?:^|//)DIAGNOSIS//ICD//(9|10)//([A-Z0-9]+)$")


# Notes and images are found by these prefixes (tokenizer/encode.py); a parent code, such as
# the LOINC document type FHIR gives a letter, must not rename them, or their text is lost.
MARKER_PREFIXES = ("NOTE//", "IMAGE//")


def normalise_unit(unit: str | None) -> str | None:
    if unit is None or unit.strip().upper() in NO_UNIT:
        return None
    unit = unit.strip()
    return UNIT_SYNONYMS.get(unit.lower(), unit)


def icd_from_event_code(code: str) -> str | None:
    """``DIAGNOSIS//ICD//10//I509`` -> ``ICD10CM/I50.9`` (dotted as ICD-CM writes it)."""
    match = _ICD_EVENT_RE.search(code)
    if not match:
        return None
    version, raw = match.groups()
    if version == "10":
        dotted = raw if len(raw) <= 3 else f"{raw[:3]}.{raw[3:]}"
        return f"ICD10CM/{dotted}"
    cut = 4 if raw.startswith("E") else 3
    dotted = raw if len(raw) <= cut else f"{raw[:cut]}.{raw[cut:]}"
    return f"ICD9CM/{dotted}"


@dataclass(frozen=True)
class MappedCode:
    code: str
    factor: float = 1.0


@dataclass
class CodeMapping:
    """Site harmonisation + parent mapping + unit conversion, as one code -> code map."""

    site_map: dict[str, str] = field(default_factory=dict)
    parents: dict[str, list[str]] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    standard_prefixes: tuple[str, ...] = STANDARD_VOCABULARIES
    unit_code_prefixes: tuple[str, ...] = UNIT_CODE_PREFIXES
    conversions: dict[tuple[str, str], tuple[str, float]] = field(
        default_factory=lambda: dict(UNIT_CONVERSIONS))

    def __post_init__(self) -> None:
        self._exact = {k: v for k, v in self.site_map.items() if not _is_pattern(k)}
        self._patterns = [(re.compile(fnmatch.translate(k)), v)
                          for k, v in self.site_map.items() if _is_pattern(k)]
        self._memo: dict[str, MappedCode] = {}

    # -- construction ------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Mapping | None, codes: pl.DataFrame | None = None,
                    where: str = "site config") -> CodeMapping:
        """From a site config section (``{code_map: {local: standard}}``) and codes.parquet."""
        config = dict(config or {})
        code_map = config.get("code_map", {}) or {}
        if not isinstance(code_map, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) and v for k, v in code_map.items()):
            raise ConfigError("code_map must map code strings to standard code strings",
                              where=f"{where}: code_map",
                              fix='write entries like "LAB//CREAT_S//*": "LOINC/2160-0"')
        unknown = set(config) - {"code_map"}
        if unknown:
            raise ConfigError(f"unknown keys {sorted(unknown)}", where=where,
                              fix="the harmonisation section takes only code_map")
        parents, units = parents_and_units(codes) if codes is not None else ({}, {})
        return cls(site_map=dict(code_map), parents=parents, units=units)

    # -- mapping -------------------------------------------------------------------
    def is_standard(self, code: str) -> bool:
        return code.startswith(self.standard_prefixes)

    def unit_of(self, code: str) -> str | None:
        if code in self.units:
            return normalise_unit(self.units[code])
        if code.startswith(self.unit_code_prefixes):
            parts = code.split("//")
            if len(parts) >= 3:
                return normalise_unit(parts[-1])
        elif code.startswith(self.standard_prefixes) and "//" in code:
            # a standard code with its unit, as the Synthea and FHIR ETLs write numeric labs
            return normalise_unit(code.rsplit("//", 1)[1])
        return None

    def map_code(self, code: str) -> MappedCode:
        """The standard token a raw site code becomes, and the factor for its values."""
        hit = self._memo.get(code)
        if hit is None:
            hit = self._memo[code] = self._map(code)
        return hit

    def _map(self, code: str) -> MappedCode:
        unit = self.unit_of(code)
        target = self._exact.get(code)
        if target is None:
            for pattern, std in self._patterns:
                if pattern.match(code):
                    target = std
                    break
        if target is None:
            target = mimic_spellings.standard_code(code)
        if target is None and not code.startswith(MARKER_PREFIXES):
            target = next((p for p in self.parents.get(code, ()) if self.is_standard(p)), None)
        if target is None:
            target = icd_from_event_code(code)
        if target is None:
            return MappedCode(code)
        if "//" in target:  # an explicit unit in the target wins ("LOINC/2160-0//umol/L")
            target, explicit = target.split("//", 1)
            unit = normalise_unit(explicit)
        if unit is None:
            return MappedCode(target)
        canonical, factor = self.conversions.get((target, unit), (unit, 1.0))
        return MappedCode(f"{target}//{canonical}", factor)

    def table(self, codes: Iterable[str]) -> pl.DataFrame:
        """code -> mapped_code, factor, for the distinct codes given."""
        codes = list(dict.fromkeys(codes))
        mapped = [self.map_code(c) for c in codes]
        return pl.DataFrame({S.CODE: codes, "mapped_code": [m.code for m in mapped],
                             "factor": [m.factor for m in mapped]},
                            schema={S.CODE: pl.String, "mapped_code": pl.String,
                                    "factor": pl.Float64})

    def apply(self, events: pl.DataFrame) -> pl.DataFrame:
        """Rewrite `code` to standard codes and convert `numeric_value` to canonical units."""
        table = self.table(events.get_column(S.CODE).unique().to_list())
        out = events.join(table, on=S.CODE, how="left", maintain_order="left")
        return out.with_columns(
            pl.col("mapped_code").alias(S.CODE),
            (pl.col(S.NUMERIC_VALUE).cast(pl.Float64) * pl.col("factor"))
            .cast(pl.Float32).alias(S.NUMERIC_VALUE),
        ).drop("mapped_code", "factor")

    # -- identity ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "site_map": dict(self.site_map),
            "parents": {c: self.parents[c] for c in sorted(self.parents)},
            "units": {c: self.units[c] for c in sorted(self.units)},
            "standard_prefixes": list(self.standard_prefixes),
            "unit_code_prefixes": list(self.unit_code_prefixes),
            "conversions": sorted([k[0], k[1], v[0], v[1]] for k, v in self.conversions.items()),
            "spellings": mimic_spellings.VERSION,
        }

    @property
    def hash(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _is_pattern(code: str) -> bool:
    return any(ch in code for ch in "*?[")


def parents_and_units(codes: pl.DataFrame) -> tuple[dict[str, list[str]], dict[str, str]]:
    """parent_codes and (when codes.parquet has it, as MIMIC's does) valueuom per code."""
    parents: dict[str, list[str]] = {}
    units: dict[str, str] = {}
    if codes.is_empty():
        return parents, units
    if "parent_codes" in codes.columns:
        rows = codes.select("code", "parent_codes").drop_nulls("parent_codes")
        for code, pcs in rows.iter_rows():
            pcs = [p for p in pcs if p]
            if pcs:
                parents[code] = pcs
    if "valueuom" in codes.columns:
        col = pl.col("valueuom")
        if codes.schema["valueuom"] == pl.List(pl.String):
            col = col.list.drop_nulls().list.first()
        rows = codes.select("code", col.alias("unit")).drop_nulls("unit")
        units = {c: u for c, u in rows.iter_rows() if normalise_unit(u) is not None}
    return parents, units


@dataclass(frozen=True)
class CoverageReport:
    """Share of a site's events whose token is in a vocabulary, before and after mapping."""

    events: int
    covered_before: int
    covered_after: int
    top_uncovered: list[tuple[str, int]]

    @property
    def before(self) -> float:
        return self.covered_before / self.events if self.events else 0.0

    @property
    def after(self) -> float:
        return self.covered_after / self.events if self.events else 0.0

    def __str__(self) -> str:
        return (f"{self.events} events: {self.before:.1%} in the vocabulary as coded, "
                f"{self.after:.1%} after mapping")


def coverage(events: pl.DataFrame | pl.LazyFrame, vocab, mapping: CodeMapping,
             top: int = 20) -> CoverageReport:
    """Coverage of a site's events by `vocab` (MEDS_BIRTH, which becomes the age token,
    is left out).

    Before: the raw code string is a vocabulary token. After: the mapped code
    resolves to a token other than ``[UNK]`` (directly or through a fold).
    """
    from fedehr.shared.tokenizer.vocabulary import UNK

    if isinstance(events, pl.LazyFrame):
        events = events.select(S.CODE).collect()
    counts = events.filter(pl.col(S.CODE) != S.BIRTH_CODE).group_by(S.CODE).len()
    total = before = after = 0
    uncovered: list[tuple[str, int]] = []
    for code, n in counts.iter_rows():
        total += n
        if code in vocab:
            before += n
        if vocab.resolve(mapping.map_code(code).code) != UNK:
            after += n
        else:
            uncovered.append((code, n))
    uncovered.sort(key=lambda t: (-t[1], t[0]))
    return CoverageReport(total, before, after, uncovered[:top])
