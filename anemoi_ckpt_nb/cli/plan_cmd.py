"""``anemoi-ckpt plan ID --fork|--resume -o job.sh``: a bash/SLURM script, step 1 on the login node, step 2 offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from anemoi_ckpt_nb.cli import _runs_common as common
from anemoi_ckpt_nb.cli._catalogue import open_catalogue


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="write a bash (or SLURM) script that prefetches on the login node and trains offline",
        description="Check code versions, store a run manifest (catalogue and cache) and write a bash script "
        "with two steps: step 1 (login node, network) runs `anemoi-ckpt prefetch`; step 2 (compute node, "
        "ANEMOI_CKPT_OFFLINE=1) runs `anemoi-ckpt verify-cache` against the manifest and then the training "
        "command with the overrides, the training callback capturing every checkpoint into a spool; step 3 "
        "(network) runs `anemoi-ckpt sync` on that spool. Run without arguments on the login node, the script "
        "does all three in turn; with --slurm it carries #SBATCH directives, does step 1, submits itself for "
        "step 2 and step 3 after it (with --sync-partition) or says when to run `bash SCRIPT sync`.",
    )
    parser.add_argument("ref", metavar="ID", help="uuid, uuid prefix, name or file name of a registered training checkpoint")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--fork", dest="mode", action="store_const", const="fork", help="start a new run from its weights")
    which.add_argument("--resume", dest="mode", action="store_const", const="resume", help="continue its run")
    parser.add_argument("-o", "--output", required=True, metavar="SCRIPT", help="the script to write")
    common.add_run_options(parser)
    parser.add_argument("--train-command", default="anemoi-training train", metavar="CMD",
                        help="shell words that start training, followed by the overrides (default: %(default)s; "
                        "e.g. 'srun anemoi-training train --config-name=mine')")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="one more Hydra override (repeatable)")
    parser.add_argument("--spool", metavar="DIR",
                        help="the spool of the training callback (ANEMOI_CKPT_SPOOL in step 2), synced by step 3 "
                        "(default: CACHE/spool; best on the file system of the run's output, where captures are hard links)")
    slurm = parser.add_argument_group("SLURM (step 2)")
    slurm.add_argument("--slurm", action="store_true", help="add #SBATCH directives; implied by any option below")
    slurm.add_argument("--account", metavar="ACCOUNT", help="#SBATCH --account")
    slurm.add_argument("--partition", metavar="PARTITION", help="#SBATCH --partition")
    slurm.add_argument("--qos", metavar="QOS", help="#SBATCH --qos")
    slurm.add_argument("--time", metavar="T", help="#SBATCH --time, e.g. 24:00:00")
    slurm.add_argument("--nodes", type=int, metavar="N", help="#SBATCH --nodes")
    slurm.add_argument("--ntasks-per-node", type=int, metavar="N", help="#SBATCH --ntasks-per-node")
    slurm.add_argument("--gpus-per-node", type=int, metavar="N", help="#SBATCH --gpus-per-node")
    slurm.add_argument("--cpus-per-task", type=int, metavar="N", help="#SBATCH --cpus-per-task")
    slurm.add_argument("--mem", metavar="MEM", help="#SBATCH --mem")
    slurm.add_argument("--job-name", metavar="NAME", help="#SBATCH --job-name")
    slurm.add_argument("--sbatch-option", action="append", default=[], metavar="OPT", help="another directive, e.g. --sbatch-option=--exclusive")
    slurm.add_argument("--sync-partition", metavar="P",
                       help="a partition whose nodes reach the catalogue: step 3 (sync) is submitted there, to run "
                       "when step 2 ends; without it, run `bash SCRIPT sync` on the login node")


_SLURM_FIELDS = ("account", "partition", "qos", "time", "nodes", "ntasks_per_node", "gpus_per_node", "cpus_per_task", "mem", "job_name")


def run(args: argparse.Namespace) -> int:
    from anemoi_ckpt_nb.runs.jobscript import SlurmOptions, write_job

    values = {name: getattr(args, name) for name in _SLURM_FIELDS}
    slurm = None
    if args.slurm or args.sbatch_option or args.sync_partition or any(v is not None for v in values.values()):
        slurm = SlurmOptions(**values, extra=list(args.sbatch_option))
    checkpoint = open_catalogue(args).get(args.ref)
    start = checkpoint.fork if args.mode == "fork" else checkpoint.resume
    manifest = start(cache=args.cache, prefetch=False, require_clean=args.require_clean, **common.run_options(args))
    script = write_job(
        manifest,
        Path(args.output),
        train_command=args.train_command,
        extra_overrides=args.override,
        slurm=slurm,
        spool=args.spool,
        sync_partition=args.sync_partition,
    )
    common.print_drift(manifest)
    print(f"{script}: {manifest.mode} of {manifest.parent.uuid}, run manifest {manifest.uuid} ({manifest.local_path})")
    if slurm is not None and args.sync_partition:
        print(f"  on the login node: bash {script}   (prefetch, sbatch for the offline training step, "
              f"then sync on partition {args.sync_partition})")
    elif slurm is not None:
        print(f"  on the login node: bash {script}   (prefetch, then sbatch for the offline training step)")
        print(f"  when training has ended, on the login node: bash {script} sync   (registers what it saved)")
    else:
        print(f"  bash {script} prefetch   on a node with network;   bash {script} train   on the compute node;   "
              f"bash {script} sync   on a node with network, after training")
    return 0
