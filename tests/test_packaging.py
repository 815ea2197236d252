"""The wheel carries every module under the fedehr namespace, and they all import from it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(REPO)],
        check=True,
    )
    (path,) = out.glob("fedehr-*.whl")
    return path


def _modules(names: list[str]) -> list[str]:
    mods = []
    for name in names:
        if name.startswith("fedehr/") and name.endswith(".py"):
            mod = name[:-3].replace("/", ".")
            mods.append(mod.removesuffix(".__init__"))
    return sorted(mods)


def test_wheel_maps_the_three_folders_into_the_fedehr_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for pkg in ("fedehr/server/__init__.py", "fedehr/client/__init__.py",
                "fedehr/shared/__init__.py"):
        assert pkg in names
    assert not any(n.split("/")[0] in ("server", "client", "shared") for n in names)


def test_every_module_imports_from_the_installed_wheel(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    modules = _modules(zipfile.ZipFile(wheel).namelist())
    assert len(modules) > 10
    # The extracted wheel comes first on the path, ahead of the editable install.
    script = (
        "import importlib, sys\n"
        f"site = {str(site)!r}\n"
        f"for m in {modules!r}:\n"
        "    mod = importlib.import_module(m)\n"
        "    assert mod.__file__.startswith(site), (m, mod.__file__)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path,
                   env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})


def test_wheel_declares_the_console_script_and_command_groups(wheel):
    zf = zipfile.ZipFile(wheel)
    (ep,) = [n for n in zf.namelist() if n.endswith("entry_points.txt")]
    text = zf.read(ep).decode()
    assert "fedehr = fedehr.shared.cli:main" in text
    assert "[fedehr.commands]" in text and "data = fedehr.shared.data.cli:app" in text


def test_wheel_ships_the_clinical_task_and_predicate_configs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for task in ("mortality", "readmission_30d", "long_los", "icu_transfer"):
        assert f"fedehr/shared/clinical/tasks/{task}.yaml" in names
    for dataset in ("synthetic", "mimic_iv", "anchor"):
        assert f"fedehr/shared/clinical/predicates/{dataset}.yaml" in names


def test_wheel_ships_the_web_page_and_its_command(wheel):
    zf = zipfile.ZipFile(wheel)
    names = set(zf.namelist())
    for page in ("base.html", "ask.html", "job.html", "model.html"):
        assert f"fedehr/shared/ui/templates/{page}" in names
    assert {"fedehr/shared/ui/static/style.css", "fedehr/shared/ui/static/app.js"} <= names
    (ep,) = [n for n in names if n.endswith("entry_points.txt")]
    assert "ui = fedehr.shared.ui.cli:ui" in zf.read(ep).decode()
