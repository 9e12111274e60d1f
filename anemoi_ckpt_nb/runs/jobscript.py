"""The bash script of a fork or resume plan, split by where each step runs.

Step 1 runs on a login node, which has network access: it downloads the
checkpoint into the cache (``anemoi-ckpt prefetch``). Step 2 runs on a compute
node with ``ANEMOI_CKPT_OFFLINE=1``: it verifies the cached file and the code
versions against the run manifest (``anemoi-ckpt verify-cache``), then starts
the training command with the manifest's overrides. With SLURM options the
script carries ``#SBATCH`` directives for step 2 and, run without arguments on
the login node, does step 1 and submits itself for step 2.

The text is built by pure functions; :func:`write_script` only writes it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from anemoi_ckpt_nb.errors import RunPlanError

DEFAULT_TRAIN_COMMAND = "anemoi-training train"


@dataclass
class SlurmOptions:
    """``#SBATCH`` directives of the training step. ``None`` leaves a directive out."""

    account: str | None = None
    partition: str | None = None
    time: str | None = None
    nodes: int | None = None
    gpus_per_node: int | None = None
    ntasks_per_node: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    qos: str | None = None
    job_name: str | None = None
    output: str | None = None
    #: Further directives, each as ``--name=value``.
    extra: list[str] = field(default_factory=list)

    def directives(self) -> list[str]:
        """The ``#SBATCH`` lines, in a fixed order.

        Raises:
            RunPlanError: a value holds a line break (it would end the directive).
        """
        pairs = [
            ("job-name", self.job_name),
            ("account", self.account),
            ("partition", self.partition),
            ("qos", self.qos),
            ("time", self.time),
            ("nodes", self.nodes),
            ("ntasks-per-node", self.ntasks_per_node),
            ("gpus-per-node", self.gpus_per_node),
            ("cpus-per-task", self.cpus_per_task),
            ("mem", self.mem),
            ("output", self.output),
        ]
        lines = [f"#SBATCH --{name}={_sbatch_value(value)}" for name, value in pairs if value is not None]
        lines += [f"#SBATCH {option}" for option in self.extra]
        for line in lines:
            if "\n" in line or "\r" in line:
                raise RunPlanError("slurm", f"a SLURM option holds a line break: {line!r}", hint="give each option on one line")
        return lines


_SBATCH_PLAIN = re.compile(r"^[\w./:@%+,=-]+$", re.ASCII)


def _sbatch_value(value: object) -> str:
    """A directive value as sbatch reads it back: sbatch splits ``#SBATCH`` lines at
    whitespace, starts a comment at ``#`` and honours quotes and backslash escapes."""
    text = str(value)
    if _SBATCH_PLAIN.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def default_anemoi_ckpt() -> list[str]:
    """How the script calls this toolkit: the same Python, so the same installation."""
    return [sys.executable, "-m", "anemoi_ckpt_nb"]


def _q(value: object) -> str:
    return shlex.quote(str(value))


def _comment(value: object) -> str:
    """Text for a ``#`` comment line: names and run ids come from other people's
    checkpoints, and a line break in one would end the comment and run the rest."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))


def render_script(
    manifest,
    *,
    manifest_path: str | Path,
    cache: str | Path,
    catalogue: str,
    train_command: str = DEFAULT_TRAIN_COMMAND,
    extra_overrides: list[str] | tuple[str, ...] = (),
    slurm: SlurmOptions | None = None,
    anemoi_ckpt: list[str] | None = None,
    script_name: str = "job.sh",
    spool: str | Path | None = None,
    sync_partition: str | None = None,
) -> str:
    """The bash script of a plan.

    Args:
        manifest: The :class:`~anemoi_ckpt_nb.runs.plans.RunManifest`.
        manifest_path: Its local copy, which step 2 verifies against.
        cache: The cache folder.
        catalogue: The catalogue URL step 1 downloads from.
        train_command: Shell words that start training; the overrides follow them.
        extra_overrides: More ``key=value`` overrides, after the manifest's.
        slurm: Directives for step 2, or None for a plain script.
        anemoi_ckpt: The command that runs this toolkit (default: this Python
            with ``-m anemoi_ckpt_nb``); ``$ANEMOI_CKPT`` overrides it at run time.
        script_name: Shown in the usage comments.
        spool: The training callback's spool (``ANEMOI_CKPT_SPOOL`` of step 2), which step 3
            syncs; default ``<cache>/spool``.
        sync_partition: With ``slurm``: a partition whose nodes reach the catalogue, where step 3
            is submitted to run after step 2 (``afterany``); without it the script says how to
            run step 3 on the login node.

    Returns:
        The script text.
    """
    anemoi_ckpt = anemoi_ckpt or default_anemoi_ckpt()
    spool = spool if spool is not None else Path(cache) / "spool"
    uuid = manifest.parent.uuid
    name = f" ({manifest.parent_name})" if manifest.parent_name else ""
    run = manifest.run_id or "chosen by anemoi-training when it starts"
    lines = ["#!/usr/bin/env bash"]
    if slurm is not None:
        if slurm.job_name is None:  # a copy: the caller's options stay as given
            slurm = dataclasses.replace(slurm, job_name=f"anemoi-{manifest.mode}-{uuid[:8]}")
        lines += slurm.directives()
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    from anemoi_ckpt_nb._version import __version__

    lines += [
        "#",
        f"# {manifest.mode.capitalize()} of checkpoint {_comment(uuid + name)}: written by anemoi-ckpt {__version__} at {now}.",
        f"#   run manifest  {manifest.uuid}",
        f"#                 catalogue: {_comment(catalogue.rstrip('/'))}/manifests/{manifest.uuid}.json",
        f"#                 local:     {_comment(manifest_path)}",
        f"#   run id        {_comment(run)}",
        f"#   parent run    {_comment(manifest.parent_run_id or '-')}",
        f"#   config        {manifest.training.layout} layout ({_comment(manifest.training.layout_reason)})",
        f"#   spool         {_comment(spool)}",
    ]
    if manifest.drift:
        lines.append(f"#   drift         {len(manifest.drift)} difference(s) recorded in the manifest"
                     + (" (allowed)" if manifest.drift_allowed else ""))
    shown = _comment(_q(script_name))
    lines += [
        "#",
        "# The steps run on different nodes:",
        "#   step 1, login node (network): download and verify the checkpoint into the cache",
        f"#       bash {shown} prefetch",
        "#   step 2, compute node (offline, ANEMOI_CKPT_OFFLINE=1): verify the cached file and the",
        "#           code versions against the run manifest, then train; with",
        "#           anemoi_ckpt_nb.training.RegisterCheckpoints in diagnostics.callbacks every",
        "#           checkpoint is captured into the spool ($ANEMOI_CKPT_SPOOL)",
        f"#       {'sbatch' if slurm is not None else 'bash'} {shown} train",
        "#   step 3, login node (network): register the spool in the catalogue, parents first;",
        "#           safe to repeat, also while training runs (e.g. from cron:",
        f"#           */30 * * * * bash /path/to/{shown} sync)",
        f"#       bash {shown} sync",
    ]
    if slurm is None:
        lines.append(f"#   bash {shown}   on the login node runs steps 1, 2 and 3 in this shell.")
    elif sync_partition:
        lines.append(f"#   bash {shown}   on the login node does step 1, submits step 2 with sbatch and "
                     f"step 3 to partition {_comment(sync_partition)} after it.")
    else:
        lines.append(f"#   bash {shown}   on the login node does step 1 and submits step 2 with sbatch; "
                     "run step 3 when it has ended.")
    if slurm is not None:
        lines += [
            "#",
            "# If step 1 must itself be a batch job (e.g. on a partition with network access):",
            f"#   jid=$(sbatch --parsable --partition=<transfer> {shown} prefetch) && \\",
            f"#     sbatch --dependency=afterok:$jid {shown} train",
        ]
    lines += [
        "#",
        "# $ANEMOI_CKPT overrides how anemoi-ckpt is called.",
        "set -euo pipefail",
        "",
        'if [[ -n "${ANEMOI_CKPT:-}" ]]; then',
        '  read -r -a CKPT <<< "$ANEMOI_CKPT"',
        "else",
        f"  CKPT=({' '.join(_q(word) for word in anemoi_ckpt)})",
        "fi",
        f"CATALOGUE={_q(catalogue)}",
        f"CACHE={_q(cache)}",
        f"CHECKPOINT={_q(uuid)}",
        f"MANIFEST={_q(manifest_path)}",
        f"SPOOL={_q(spool)}",
        "",
        "step_prefetch() {",
        '  echo "[step 1/3] login node: fetching checkpoint $CHECKPOINT into $CACHE"',
        '  "${CKPT[@]}" prefetch "$CHECKPOINT" --cache "$CACHE" --catalogue "$CATALOGUE"',
        "}",
        "",
        "step_train() {",
        "  export ANEMOI_CKPT_OFFLINE=1",
        "  # Where anemoi_ckpt_nb.training.RegisterCheckpoints captures the checkpoints (step 3 syncs it).",
        '  export ANEMOI_CKPT_SPOOL="$SPOOL"',
        '  echo "[step 2/3] compute node, offline: verifying the cached checkpoint against $MANIFEST"',
        '  "${CKPT[@]}" verify-cache --manifest "$MANIFEST"',
    ]
    if manifest.training.stage_link:
        link = manifest.training.stage_link
        lines += [
            "  # anemoi-training < 0.8 finds the checkpoint at <hardware.paths.checkpoints>/<run>/<warm_start>.",
            f"  mkdir -p {_q(str(Path(link).parent))}",
            f"  ln -sfn {_q(manifest.checkpoint.path)} {_q(link)}",
        ]
    overrides = [*manifest.training.overrides, *extra_overrides]
    lines += [
        '  echo "[step 2/3] training"',
        f"  {train_command.strip()} \\",
        *[f"    {_q(o)} \\" for o in overrides[:-1]],
        f"    {_q(overrides[-1])}",
        "}",
        "",
        "step_sync() {",
        '  echo "[step 3/3] registering the checkpoints captured in $SPOOL"',
        '  if [[ ! -f "$SPOOL/spool.json" ]]; then',
        '    echo "nothing captured in $SPOOL: is anemoi_ckpt_nb.training.RegisterCheckpoints in diagnostics.callbacks?"',
        "    return 0",
        "  fi",
        '  "${CKPT[@]}" sync "$SPOOL" --catalogue "$CATALOGUE"',
        "}",
        "",
        'mode="${1:-}"',
        'if [[ -z "$mode" ]]; then',
        '  if [[ -n "${SLURM_JOB_ID:-}" ]]; then mode=train; else mode=all; fi',
        "fi",
        'case "$mode" in',
        "  prefetch) step_prefetch ;;",
        "  train) step_train ;;",
        "  sync) step_sync ;;",
        "  all)",
        "    step_prefetch",
    ]
    lines += _submit_lines(slurm, sync_partition, uuid) if slurm is not None else [
        # The spool holds what was saved before a failure too: sync it whatever training did.
        "    status=0",
        "    ( step_train ) || status=$?",
        "    step_sync",
        '    exit "$status"',
    ]
    lines += [
        "    ;;",
        '  *) echo "usage: $0 [prefetch|train|sync]" >&2; exit 2 ;;',
        "esac",
        "",
    ]
    return "\n".join(lines)


def _submit_lines(slurm: SlurmOptions, sync_partition: str | None, uuid: str) -> list[str]:
    """Step 2 submitted with sbatch; step 3 after it (``afterany``: what a failed run saved counts)
    on ``sync_partition``, as a small job of its own (``--wrap``: not the training directives)."""
    lines = [
        '    self="$(realpath "${BASH_SOURCE[0]}")"',
        '    job="$(sbatch --parsable "$self" train)"',
        '    job="${job%%;*}"',
        '    echo "[step 2/3] submitted as job $job"',
    ]
    if not sync_partition:
        return lines + ['    echo "[step 3/3] when job $job has ended, on the login node: bash $self sync"']
    options = [f"--partition={sync_partition}", f"--job-name=anemoi-sync-{uuid[:8]}"]
    if slurm.account is not None:
        options.append(f"--account={slurm.account}")
    return lines + [
        f"    sync_job=\"$(sbatch --parsable --dependency=afterany:\"$job\" {' '.join(_q(o) for o in options)} "
        '--wrap="bash $(printf %q "$self") sync")"',
        '    echo "[step 3/3] submitted as job ${sync_job%%;*}, to run when job $job has ended"',
    ]


def write_script(path: str | Path, text: str) -> Path:
    """Write the script, executable by its owner and group.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def write_job(
    manifest,
    path: str | Path,
    *,
    train_command: str = DEFAULT_TRAIN_COMMAND,
    extra_overrides: list[str] | tuple[str, ...] = (),
    slurm: SlurmOptions | None = None,
    anemoi_ckpt: list[str] | None = None,
    spool: str | Path | None = None,
    sync_partition: str | None = None,
) -> Path:
    """Render and write the script of a stored manifest (see :func:`render_script`).

    Args:
        manifest: A manifest stored by :func:`~anemoi_ckpt_nb.runs.plans.record_manifest`
            (its ``local_path`` is what step 2 verifies against).
        path: The script to write.

    Returns:
        The script's path.

    Raises:
        RunPlanError: the manifest has no local copy, or an override is not ``key=value``.
    """
    if not manifest.local_path:
        raise RunPlanError(
            manifest.parent.uuid, "the run manifest was not stored yet", hint="store it with runs.record_manifest first"
        )
    for override in extra_overrides:
        if "=" not in override or override.startswith("="):
            raise RunPlanError(
                manifest.parent.uuid, f"override {override!r} is not KEY=VALUE", hint="e.g. --override training.max_epochs=20"
            )
    text = render_script(
        manifest,
        manifest_path=manifest.local_path,
        cache=manifest.cache_dir,
        catalogue=manifest.catalogue,
        train_command=train_command,
        extra_overrides=extra_overrides,
        slurm=slurm,
        anemoi_ckpt=anemoi_ckpt,
        script_name=Path(path).name,
        spool=spool,
        sync_partition=sync_partition,
    )
    return write_script(path, text)
