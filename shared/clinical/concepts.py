"""Concept names in clinical words -> MEDS codes, and codes -> clinical words.

A physician writes "heart failure", "creatinine" or "ICU admission"; the data
holds ``DIAGNOSIS//ICD//10//I509``, ``LAB//2160-0//mg/dL``, ``ICU_ADMISSION//MICU``.
`CodeIndex` bridges the two with what the data itself says about its codes:
the descriptions and parent codes of ``metadata/codes.parquet`` (the public
anchor, MIMIC-IV and the synthetic hospitals all have them), plus the
synthetic hospitals' catalogue (real ICD-10-CM, LOINC and RxNorm wording) for
the standard codes the model's vocabulary is made of.

Matching is deliberately simple and explainable, not NLP:

1. a phrase that looks like a code (``ICD10CM/I50``, ``LAB//2160-0//mg/dL``,
   ``code:MEDS_DEATH``) matches codes equal to it or starting with it, and codes
   with such a parent;
2. otherwise a few clinical synonyms are expanded ("mortality" -> death,
   "readmission" -> hospital admission, "ICU transfer" -> ICU admission), and a
   code matches when the phrase names what its description is about: the
   description starts with the phrase, or its *head* holds the phrase (or all
   its words), or the code itself does. The head is the description up to its
   first qualifier (a comma, "with", "without", "due to", "following", ...),
   parenthesised words left out: "Chronic systolic (congestive) heart failure"
   is heart failure, but "Concussion with loss of consciousness ... with death
   due to brain injury" is a concussion, not a death. Matches are ranked:
   description starts with the phrase, head contains it as a phrase, head
   contains all its words, then the code's own words;
3. matches are grouped into *families* (one ICD-10 category, one LOINC test,
   one drug, one event kind such as ``HOSPITAL_ADMISSION``). Only the families
   of the best rank are kept; when more than one family is kept the phrase is
   ambiguous and `AmbiguousConcept` lists them so the user can be precise, or
   join them with "or".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from fedehr.shared.errors import FedEHRError

# Clinical words -> the words the code descriptions use. Keys are matched as whole phrases.
SYNONYMS: dict[str, str] = {
    "mortality": "death", "died": "death", "dying": "death", "deceased": "death",
    "in-hospital death": "death", "in-hospital mortality": "death",
    "readmission": "hospital admission", "re-admission": "hospital admission",
    "admission": "hospital admission", "hospitalisation": "hospital admission",
    "hospitalization": "hospital admission", "discharge": "hospital discharge",
    "icu transfer": "icu admission", "icu stay": "icu admission",
    "intensive care admission": "icu admission", "aki": "acute kidney failure",
    "acute kidney injury": "acute kidney failure", "ckd": "chronic kidney disease",
    "chf": "heart failure", "congestive heart failure": "heart failure",
    "copd": "chronic obstructive pulmonary disease", "diabetes": "diabetes mellitus",
    "wbc": "leukocytes", "white cell count": "leukocytes", "bun": "urea nitrogen",
    "urea": "urea nitrogen", "bnp": "natriuretic peptide b", "haemoglobin": "hemoglobin",
    "anaemia": "anemia", "high blood pressure": "hypertension",
}
_STOP_WORDS = {"a", "an", "the", "of", "in", "any", "new", "level", "levels", "value"}
# "code:X", anything with a slash and no space, or an upper-case name with underscores
_CODE_LIKE = re.compile(r"^code:\S+$|^[^\s/]+/\S*$|^[A-Z0-9]+(?:_[A-Z0-9]+)+$")
_ICD_CATEGORY = re.compile(r"^(ICD(?:9|10)CM/[A-Z0-9]{3})")
# where a description's head (what the code is about) ends and its qualifiers begin
_QUALIFIER = re.compile(r"[,;:]|\b(?:with|without|due to|following|complicating|secondary to|"
                        r"after|except|excluding|not elsewhere)\b", re.I)
_BRACKETED = re.compile(r"\([^)]*\)|\[[^\]]*\]")


def words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP_WORDS]


def head_words(description: str) -> list[str]:
    """The words of what a description is about: before its first qualifier, without
    parenthesised or bracketed words (see the module docstring, step 2)."""
    text = _BRACKETED.sub(" ", description)
    return words(_QUALIFIER.split(text, maxsplit=1)[0])


def family_of(code: str, parents: Iterable[str] = ()) -> str:
    """The concept family a code belongs to (see module docstring, step 3)."""
    for parent in parents:
        match = _ICD_CATEGORY.match(parent)
        if match:
            return match.group(1)
        if parent.startswith(("LOINC/", "RxNorm/", "SNOMEDCT/", "ATC/")):
            return parent
    match = _ICD_CATEGORY.match(code)
    if match:
        return match.group(1)
    if code.startswith(("LOINC/", "RxNorm/")):
        return code.split("//")[0]
    if code.startswith(("LAB//", "MEDICATION//")):
        return "//".join(code.split("//")[:2])
    return code.split("//")[0]


@dataclass(frozen=True)
class Concept:
    """A resolved concept: the phrase, its codes and their descriptions (same order)."""

    phrase: str
    codes: tuple[str, ...]
    descriptions: tuple[str, ...]

    def summary(self, limit: int = 6) -> str:
        shown = [f"{c} ({d})" if d else c
                 for c, d in zip(self.codes[:limit], self.descriptions[:limit], strict=True)]
        more = f" and {len(self.codes) - limit} more" if len(self.codes) > limit else ""
        return "; ".join(shown) + more


class AmbiguousConcept(FedEHRError):
    """A phrase matches several concept families; `choices` maps each family to its codes
    (best first), so a caller can offer them and resolve again `with_choices`."""

    def __init__(self, message: str, *, phrase: str = "",
                 choices: dict[str, tuple[str, ...]] | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.phrase = phrase
        self.choices = choices or {}


class UnknownConcept(FedEHRError):
    """A phrase matches no code."""


class CodeIndex:
    """Codes with descriptions and parents, for resolving and describing concepts."""

    def __init__(self, codes: Iterable[str], descriptions: Iterable[str | None],
                 parents: Iterable[Iterable[str] | None]):
        self.codes: list[str] = []
        self.description: dict[str, str] = {}
        self.parents: dict[str, tuple[str, ...]] = {}
        self.fallback: dict[str, str] = {}  # descriptions of codes not to resolve to
        self.chosen: dict[str, tuple[str, ...]] = {}  # ambiguous phrase -> the codes chosen
        for code, desc, pars in zip(codes, descriptions, parents, strict=True):
            self.add(code, desc, pars)
        self._by_parent: dict[str, list[str]] = {}
        for code, pars in self.parents.items():
            for parent in pars:
                self._by_parent.setdefault(parent, []).append(code)

    def add(self, code: str, description: str | None, parents: Iterable[str] | None) -> None:
        if code in self.description:
            return
        self.codes.append(code)
        self.description[code] = (description or "").strip()
        self.parents[code] = tuple(p for p in (parents or ()) if p)

    # -- construction ------------------------------------------------------------
    @classmethod
    def from_codes_table(cls, table: pl.DataFrame) -> CodeIndex:
        """From a MEDS ``metadata/codes.parquet`` frame (code, description, parent_codes)."""
        n = table.height
        descs = table["description"].to_list() if "description" in table.columns else [None] * n
        pars = table["parent_codes"].to_list() if "parent_codes" in table.columns else [None] * n
        return cls(table["code"].to_list(), descs, pars)

    @classmethod
    def for_dataset(cls, codes_table: pl.DataFrame | None,
                    extra_codes: Iterable[str] = ()) -> CodeIndex:
        """The dataset's codes, then the synthetic catalogue's standard codes, then any
        `extra_codes` (e.g. vocabulary tokens) without descriptions."""
        index = (cls.from_codes_table(codes_table) if codes_table is not None
                 and not codes_table.is_empty() else cls([], [], []))
        if not index.codes:  # no codes.parquet: resolve against the catalogue's codes
            for code, desc in catalogue_descriptions().items():
                index.add(code, desc, ())
        for code, desc in catalogue_descriptions().items():  # words for vocabulary tokens
            index.fallback.setdefault(code, desc)
        for code in extra_codes:
            index.add(code, None, ())
        index._by_parent = {}
        for code, pars in index.parents.items():
            for parent in pars:
                index._by_parent.setdefault(parent, []).append(code)
        return index

    # -- describing ----------------------------------------------------------------
    def describe(self, code: str) -> str:
        """Clinical words for a code or vocabulary token (the code itself when unknown)."""
        if self.description.get(code):
            return self.description[code]
        base = code.split("//")[0] if code.startswith(("LOINC/", "RxNorm/")) else code
        for key in (code, base):
            if self.description.get(key) or self.fallback.get(key):
                return self.description.get(key) or self.fallback[key]
        for child in self._by_parent.get(base, ()):  # a standard token: a child's words
            if self.description.get(child):
                return self.description[child]
        if _ICD_CATEGORY.match(base):  # a folded ICD token: the words its subcodes share
            shared = self._category_words(base)
            if shared:
                return shared
        if code.startswith("AGE//"):
            return f"age {code.split('//', 1)[1]}"
        if code.startswith("GENDER//"):
            return {"F": "female", "M": "male"}.get(code.split("//", 1)[1], "sex unknown")
        return code

    def _category_words(self, token: str) -> str:
        """Clinical words for an ICD token that codes fold into (``ICD9CM/E849`` from
        ``ICD9CM/E849.7``...): the common start of its subcodes' descriptions, or the first
        one's words and how many more."""
        found = sorted({self.description[c] for parent, children in self._by_parent.items()
                        if parent.startswith(f"{token}.") for c in children
                        if self.description.get(c)})
        if not found:
            return ""
        if len(found) == 1:
            return found[0]
        common = []
        for parts in zip(*(d.split() for d in found), strict=False):
            if len(set(parts)) > 1:
                break
            common.append(parts[0])
        start = " ".join(common).rstrip(" ,;:")
        if len(common) >= 2:
            return f"{start} (any of {len(found)})"
        return f"{found[0]} or {len(found) - 1} related"

    # -- resolving -----------------------------------------------------------------
    def with_choices(self, chosen: dict[str, tuple[str, ...]]) -> CodeIndex:
        """This index with the user's pick for ambiguous phrases (lower-cased phrase ->
        the codes of one family of `AmbiguousConcept.choices`)."""
        import copy

        picked = copy.copy(self)
        picked.chosen = {p.strip().lower(): tuple(c) for p, c in chosen.items()}
        return picked

    def resolve(self, phrase: str) -> Concept:
        """One concept phrase (alternatives joined with ' or ') -> its codes."""
        codes: list[str] = []
        for part in re.split(r"\s+or\s+|\s*\|\s*", phrase.strip()):
            if part:
                codes.extend(c for c in self._resolve_one(part) if c not in codes)
        return Concept(phrase.strip(), tuple(codes), tuple(self.describe(c) for c in codes))

    def _resolve_one(self, phrase: str) -> list[str]:
        text = phrase.strip().strip("\"'")
        if text.lower() in self.chosen:
            return list(self.chosen[text.lower()])
        if _CODE_LIKE.match(text):
            return self._by_code(text.removeprefix("code:"), phrase)
        target = words(SYNONYMS.get(text.lower(), text))
        if not target:
            raise UnknownConcept(f"no concept words in {phrase!r}", where="prompt",
                                 fix="name an outcome, e.g. death, creatinine, ICU admission")
        ranked: dict[int, dict[str, list[str]]] = {}
        phrase_text = " ".join(target)
        for code in self.codes:
            rank = self._rank(code, target, phrase_text)
            if rank is not None:
                fam = family_of(code, self.parents.get(code, ()))
                ranked.setdefault(rank, {}).setdefault(fam, []).append(code)
        if not ranked:
            raise UnknownConcept(f"no code matches {phrase!r}", where="prompt",
                                 fix=self._suggest(target))
        if 0 in ranked:
            # descriptions that start with the phrase name the concept itself ("Pneumonia
            # due to ..." is pneumonia); phrases inside a description ("diabetic chronic
            # kidney disease") count too once the concept is established
            return [c for r in (0, 1) for fam in ranked.get(r, {}).values() for c in fam]
        best = ranked[min(ranked)]
        if len(best) > 1:
            listed = "; ".join(f"{fam}: {self.describe(codes[0])}" + (
                f" (+{len(codes) - 1})" if len(codes) > 1 else "") for fam, codes in best.items())
            raise AmbiguousConcept(f"{phrase!r} matches {len(best)} concepts: {listed}",
                                   where="prompt", phrase=text, choices={
                                       fam: tuple(c for r in sorted(ranked)
                                                  for c in ranked[r].get(fam, []))
                                       for fam in best},
                                   fix="use more specific words, a code (code:X), or join the "
                                       "ones you mean with 'or'")
        family = next(iter(best))
        return [c for r in sorted(ranked) for c in ranked[r].get(family, [])]

    def _rank(self, code: str, target: list[str], phrase_text: str) -> int | None:
        description = self.description.get(code, "")
        desc_words = words(description)
        head = head_words(description)
        code_words = words(code.replace("_", " "))
        if desc_words and f"{' '.join(desc_words)} ".startswith(f"{phrase_text} "):
            return 0
        if head and f" {phrase_text} " in f" {' '.join(head)} ":
            return 1
        if head and all(w in head for w in target):
            return 2
        if " ".join(code_words).startswith(phrase_text):
            return 3
        if all(w in code_words for w in target):
            return 4
        return None

    def _by_code(self, text: str, phrase: str) -> list[str]:
        hits = [c for c in self.codes
                if c == text or c.startswith(text) or any(
                    p == text or p.startswith(text) for p in self.parents.get(c, ()))]
        if not hits:
            raise UnknownConcept(f"no code equals or starts with {text!r}", where="prompt",
                                 fix="check the code against metadata/codes.parquet")
        return hits

    def _suggest(self, target: list[str]) -> str:
        import difflib

        vocabulary = sorted({w for d in self.description.values() for w in words(d)})
        close = [m for w in target for m in difflib.get_close_matches(w, vocabulary, n=2)]
        if close:
            return f"did you mean {', '.join(dict.fromkeys(close))}? Or give a code (code:X)"
        return ("use words from the code descriptions (the dataset's metadata/codes.parquet) or "
                "a code (code:X)")


def catalogue_descriptions() -> dict[str, str]:
    """Standard codes of the synthetic hospitals (ICD10CM/, LOINC/, RxNorm/) -> wording."""
    from fedehr.shared.data.synth import catalog

    out: dict[str, str] = {}
    for cond in catalog.CONDITIONS:
        for dotted, desc in cond.all_codes():
            out[catalog.icd_parent(dotted)] = desc
    for lab in catalog.LABS:
        out[f"LOINC/{lab.loinc}"] = lab.loinc_name
    for drug in catalog.DRUGS:
        out[f"RxNorm/{drug.rxcui}"] = f"{drug.name} ({drug.drug_class})"
    out.update(catalog.PROS)
    return out
