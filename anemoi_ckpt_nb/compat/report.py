"""The report of ``anemoi-ckpt validate``: its findings, the package checks, the verdict and exit code, and its text.

Verdicts: ``compatible`` (exit 0), ``warnings`` (exit 1), ``incompatible``
(exit 2); ``strict`` turns warnings into incompatible.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["info", "warning", "error"]
Verdict = Literal["compatible", "warnings", "incompatible"]

EXIT_CODES: dict[str, int] = {"compatible": 0, "warnings": 1, "incompatible": 2}


@dataclass
class Finding:
    """One observation about the file."""

    severity: Severity
    code: str
    message: str
    hint: str | None = None


@dataclass
class PackageCheck:
    """One package: the version it was trained with and the one installed here."""

    package: str
    trained: str | None
    installed: str | None
    #: ``same``, ``newer-installed``, ``older-installed``, ``missing`` or ``unparsable``.
    status: str


@dataclass
class ValidationReport:
    """Everything ``validate`` found, and the verdict."""

    path: str
    format: str | None = None
    metadata_source: str | None = None
    metadata_version: str | None = None
    current_version: str = ""
    migrations: list[str] = field(default_factory=list)
    unknown_keys: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)
    unmapped_classes: list[str] = field(default_factory=list)
    packages: list[PackageCheck] = field(default_factory=list)
    can_convert: bool = False
    can_load_for_inference: bool = False
    #: What the file is and what runs it, in words (see :func:`describe_kind`).
    what: str | None = None
    findings: list[Finding] = field(default_factory=list)
    #: For a catalogue's copy of the metadata: the registered checkpoint's uuid and file name, so
    #: that advice names commands that work on it (the file must be downloaded to be upgraded).
    registered: tuple[str, str] | None = None

    def add(self, severity: Severity, code: str, message: str, hint: str | None = None) -> None:
        self.findings.append(Finding(severity, code, message, hint))

    @property
    def verdict(self) -> Verdict:
        """``incompatible`` if any error, ``warnings`` if any warning, else ``compatible``."""
        levels = {f.severity for f in self.findings}
        if "error" in levels:
            return "incompatible"
        return "warnings" if "warning" in levels else "compatible"

    def exit_code(self, *, strict: bool = False) -> int:
        """0, 1 or 2 for compatible, warnings, incompatible; ``strict`` makes warnings 2."""
        code = EXIT_CODES[self.verdict]
        return 2 if strict and code == 1 else code

    def to_dict(self, *, strict: bool = False) -> dict[str, Any]:
        """JSON-able form, as ``validate --json`` prints it."""
        data = asdict(self)
        del data["registered"]  # part of the advice already, and not a finding
        data["verdict"] = "incompatible" if strict and self.verdict == "warnings" else self.verdict
        data["exit_code"] = self.exit_code(strict=strict)
        data["strict"] = strict
        return data



def render_text(report: ValidationReport, *, strict: bool = False) -> str:
    """The report as the lines ``anemoi-ckpt validate`` prints."""

    def listed(items: list[str], limit: int = 8) -> str:
        if not items:
            return "-"
        return ", ".join(items[:limit]) + (f" (+{len(items) - limit} more)" if len(items) > limit else "")

    version = report.metadata_version or "-"
    lines = [report.path]
    if report.what:
        lines.append(f"  what: {report.what}")
    lines.append(f"  format: {report.format or '-'}; metadata: {report.metadata_source or '-'}, "
                 f"version {version} (current {report.current_version})")
    lines.append(f"  migrations that would run: {listed(report.migrations)}")
    lines.append(f"  missing keys: {listed(report.missing_keys)}")
    lines.append(f"  unknown keys: {listed(report.unknown_keys)}")
    lines.append(f"  unmapped classes: {listed(report.unmapped_classes, 5)}")
    if report.packages:
        lines.append("  packages (trained -> installed):")
        for p in report.packages:
            lines.append(f"    {p.package}: {p.trained or '?'} -> {p.installed or 'not installed'} ({p.status})")
    lines.append(f"  can convert: {'yes' if report.can_convert else 'no'}; "
                 f"can load for inference here: {'yes' if report.can_load_for_inference else 'no'}")
    for finding in report.findings:
        if finding.severity == "info":
            continue
        hint = f" ({finding.hint})" if finding.hint else ""
        lines.append(f"  {finding.severity}: {finding.message}{hint}")
    data = report.to_dict(strict=strict)
    lines.append(f"verdict: {data['verdict']} (exit {data['exit_code']})")
    return "\n".join(lines)
