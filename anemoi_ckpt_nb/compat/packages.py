"""The packages a checkpoint was trained with, compared with the ones installed here.

The check follows anemoi-inference's ``validate_environment``
(``anemoi/inference/provenance.py``): it looks at the packages with ``anemoi``
in their name (all packages with ``all_packages``), skips the ones that do not
matter for inference (anemoi.training, hydra, lightning, ...), and reports a
package that is missing, newer here than in training, or older here than in
training. The last is what anemoi-inference flags ``CRITICAL``: code older than
the checkpoint cannot be expected to rebuild it, so it makes the file
incompatible. The rest are warnings: a newer or a missing package can be
installed or usually works.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from anemoi_ckpt_nb.compat.environment import installed_version
from anemoi_ckpt_nb.compat.report import PackageCheck, ValidationReport

#: Packages anemoi-inference does not compare: training-only, or tooling.
EXEMPT_PACKAGES = frozenset({
    "anemoi.training", "anemoi.inference", "hydra", "hydra_plugins", "hydra_plugins.anemoi_searchpath",
    "lightning", "pytorch_lightning", "lightning_fabric", "lightning_utilities",
})
EXEMPT_NAMESPACES = frozenset({"hydra_plugins"})


def _considered(module: str, *, all_packages: bool) -> bool:
    if module.startswith("_") or module in EXEMPT_PACKAGES or module.split(".")[0] in EXEMPT_NAMESPACES:
        return False
    return all_packages or "anemoi" in module


def check_environment(report: ValidationReport, provenance: Any, *, all_packages: bool) -> None:
    from anemoi_ckpt_nb.compat.environment import checkpoint_code, parse_version

    if not isinstance(provenance, Mapping):
        report.add("warning", "no-provenance", "no provenance_training: the packages it was trained with are unknown")
        return
    # The runs helper's reading of provenance: module versions as text (either anemoi-utils form), dirty checkouts.
    code = checkpoint_code(provenance)
    python = code.python
    here = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    if python:
        trained, current = parse_version(str(python)), parse_version(here)
        if trained and current and trained[:2] != current[:2]:
            report.add("warning", "python-version", f"trained with Python {python}, this is Python {here}")
        elif trained != current:
            report.add("info", "python-version", f"trained with Python {python}, this is Python {here}")
    for module in sorted(code.modules):
        if not _considered(module, all_packages=all_packages):
            continue
        trained_text = code.modules[module]
        installed = installed_version(module)
        check = PackageCheck(module, trained_text, installed, _status(trained_text, installed))
        report.packages.append(check)
        if check.status == "missing":
            report.add("warning", "package-missing", f"{module} {trained_text} was used in training and is not installed here",
                       f"pip install {module.replace('.', '-')}=={trained_text}")
        elif check.status == "newer-installed":
            report.add("warning", "package-newer", f"{module}: trained with {trained_text}, {installed} installed here")
        elif check.status == "older-installed":
            report.add("error", "package-older", f"{module}: trained with {trained_text}, only {installed} installed here",
                       f"pip install '{module.replace('.', '-')}>={trained_text}'")
        elif check.status == "unparsable":
            report.add("warning", "package-version", f"{module}: cannot compare versions {trained_text!r} and {installed!r}")
    if code.git_dirty:
        report.add("warning", "uncommitted-training-code",
                   f"the training code had uncommitted changes ({', '.join(code.git_dirty)}): it cannot be reproduced exactly")


def _status(trained: str | None, installed: str | None) -> str:
    from anemoi_ckpt_nb.compat.environment import parse_version

    if installed is None:
        return "missing"
    if trained == installed:
        return "same"
    a, b = parse_version(trained), parse_version(installed)
    if a is None or b is None:
        return "unparsable"
    if a < b:
        return "newer-installed"
    if a > b:
        return "older-installed"
    return "same"
