"""What the benchmarks' tests share: loading a benchmark script, a small hospital, its windows."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.synth import synthesize

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmark(name: str):
    """benchmarks/<name>.py as module `name`. By path: a dependency installs an unrelated
    top-level `benchmarks` package."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def hospital(tmp_path_factory):
    site = synthesize(tmp_path_factory.mktemp("h") / "h", sites=1, patients=200, seed=1)[0]
    return load_benchmark("fed_vs_central").Hospital(site.name, Path(site.path),
                                                     site.harmonisation)


def tiny_windows(hospital, workdir: Path):
    """(config, vocab, windows): the tiny model's config (16 tokens), a vocabulary of the
    hospital's own training codes, and its train windows with the tuning ones as `.tuning`."""
    from fedehr.client.site_data import site_mapping
    from fedehr.shared.model import ModelConfig
    from fedehr.shared.tokenizer.vocabulary import Vocabulary

    fvc = load_benchmark("fed_vs_central")
    dataset = MEDSDataset.open(hospital.path)
    mapping = site_mapping(fvc.site_config(hospital, workdir / "m"), dataset)
    codes = mapping.apply(dataset.scan(S.TRAIN).collect())[S.CODE].value_counts()
    vocab = Vocabulary.build(dict(codes.iter_rows()), min_count=1)
    config = ModelConfig.preset("tiny", len(vocab.tokens), max_len=16, note_dim=0, image_dim=0)
    return config, vocab, fvc.site_windows(hospital, workdir / "state", vocab, config)
