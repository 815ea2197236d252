"""Maps the three top-level code folders onto the `fedehr` namespace.

pyproject.toml holds all metadata; this file only lists packages, because
setuptools cannot discover nested subpackages under a renamed package-dir.
"""

from setuptools import find_packages, setup

ROOTS = {"fedehr.server": "server", "fedehr.client": "client", "fedehr.shared": "shared"}


def _packages() -> list[str]:
    names = []
    for name, folder in ROOTS.items():
        names.append(name)
        names += [f"{name}.{sub}" for sub in find_packages(folder)]
    return names


setup(
    packages=_packages(),
    package_dir=ROOTS,
    package_data={"": ["*.yaml", "*.json", "*.md", "*.proto"],
                  "fedehr.shared.data.etl": ["tables/*.csv"],
                  "fedehr.shared.ui": ["templates/*.html", "static/*"]},
)
