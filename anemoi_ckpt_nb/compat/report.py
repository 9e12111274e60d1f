"""The report of ``anemoi-ckpt validate``: its findings, the package checks, the verdict and exit code, and its text.

Verdicts: ``compatible`` (exit 0), ``warnings`` (exit 1), ``incompatible``
(exit 2); ``strict`` turns warnings into incompatible. The verdict is the file's: findings
about this environment (the packages and Python here, :data:`ENVIRONMENT_CODES`) are kept
apart, with their own ``environment_verdict``, and count only with ``environment=True``
(``validate --environment``), since they change with the machine, not with the file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["info", "warning", "error"]
Verdict = Literal["compatible", "warnings", "incompatible"]
Scope = Literal["file", "environment"]

#: Findings about the environment that runs the check, not about the file.
ENVIRONMENT_CODES = frozenset({
    "python-version", "package-missing", "package-newer", "package-older", "package-version", "classes-not-installed",
})

EXIT_CODES: dict[str, int] = {"compatible": 0, "warnings": 1, "incompatible": 2}


@dataclass
class Finding:
    """One observation about the file."""

    severity: Severity
    code: str
    message: str
    hint: str | None = None
    #: ``file``, or ``environment`` for what depends on the packages installed here.
    scope: Scope = "file"


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
    #: ``[(runner, what it needs), ...]`` (:mod:`anemoi_ckpt_nb.read.runs_with`).
    runs_with: list[tuple[str, str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    #: For a catalogue's copy of the metadata: the registered checkpoint's uuid and file name, so
    #: that advice names commands that work on it (the file must be downloaded to be upgraded).
    registered: tuple[str, str] | None = None

    def add(self, severity: Severity, code: str, message: str, hint: str | None = None) -> None:
        scope: Scope = "environment" if code in ENVIRONMENT_CODES else "file"
        self.findings.append(Finding(severity, code, message, hint, scope))

    @property
    def verdict(self) -> Verdict:
        """The file's: ``incompatible`` if any error about it, ``warnings`` if any warning, else ``compatible``."""
        return _verdict(f for f in self.findings if f.scope == "file")

    @property
    def environment_verdict(self) -> Verdict:
        """The same, from the findings about this environment alone."""
        return _verdict(f for f in self.findings if f.scope == "environment")

    def counted_verdict(self, *, strict: bool = False, environment: bool = False) -> Verdict:
        """The verdict the exit status reflects: the file's, and this environment's with ``environment``."""
        verdicts = [self.verdict, self.environment_verdict] if environment else [self.verdict]
        verdict = max(verdicts, key=EXIT_CODES.__getitem__)
        return "incompatible" if strict and verdict == "warnings" else verdict

    def exit_code(self, *, strict: bool = False, environment: bool = False) -> int:
        """0, 1 or 2 for compatible, warnings, incompatible; ``strict`` makes warnings 2;
        ``environment`` counts the findings about this environment too."""
        return EXIT_CODES[self.counted_verdict(strict=strict, environment=environment)]

    def to_dict(self, *, strict: bool = False, environment: bool = False) -> dict[str, Any]:
        """JSON-able form, as ``validate --json`` prints it."""
        data = asdict(self)
        del data["registered"]  # part of the advice already, and not a finding
        data["file_verdict"] = self.verdict
        data["environment_verdict"] = self.environment_verdict
        data["verdict"] = self.counted_verdict(strict=strict, environment=environment)
        data["exit_code"] = self.exit_code(strict=strict, environment=environment)
        data["strict"] = strict
        data["environment_counted"] = environment
        return data


def _verdict(findings: Any) -> Verdict:
    levels = {f.severity for f in findings}
    if "error" in levels:
        return "incompatible"
    return "warnings" if "warning" in levels else "compatible"



def render_text(report: ValidationReport, *, strict: bool = False, environment: bool = False) -> str:
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
    from anemoi_ckpt_nb.read.runs_with import runs_with_text

    # A file that could not be read has no format: nothing is known of what would run it.
    lines.append(f"  runs with: {runs_with_text(report.runs_with, report.format) if report.format else '-'}")
    lines.append(f"  can convert: {'yes' if report.can_convert else 'no'}; "
                 f"can load for inference here: {'yes' if report.can_load_for_inference else 'no'}")
    shown = [f for f in report.findings if f.severity != "info"]
    for finding in (f for f in shown if f.scope == "file"):
        hint = f" ({finding.hint})" if finding.hint else ""
        lines.append(f"  {finding.severity}: {finding.message}{hint}")
    here = [f for f in shown if f.scope == "environment"]
    if here:
        counted = "counted in the verdict" if environment else "not counted: --environment counts them"
        lines.append(f"  this environment ({report.environment_verdict}; {counted}):")
        for finding in here:
            hint = f" ({finding.hint})" if finding.hint else ""
            lines.append(f"    {finding.severity}: {finding.message}{hint}")
    data = report.to_dict(strict=strict, environment=environment)
    lines.append(f"verdict: {data['verdict']} (exit {data['exit_code']})")
    return "\n".join(lines)
