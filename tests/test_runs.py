"""Fork/resume plans, run manifests, the cache and the plan script, on a local catalogue.

The same paths against the real S3 server, offline, are in test_runs_s3.py.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.api import Catalogue
from anemoi_ckpt_nb.cli import main
from anemoi_ckpt_nb.compat import environment as env
from anemoi_ckpt_nb.runs import cache as run_cache
from anemoi_ckpt_nb.runs import plans as runs
from anemoi_ckpt_nb.runs.spool import Spool
from anemoi_ckpt_nb.errors import (
    CacheError,
    ConflictError,
    DriftError,
    InsufficientSpaceError,
    RunPlanError,
)

FAKE_TRAINING = Path(__file__).with_name("runs_fake_training.py")


def snapshot(**packages: str | None) -> env.EnvironmentSnapshot:
    """The environment of a run's node: the checkpoint's versions unless overridden (``a__b`` is ``a.b``)."""
    base = {name: examples.DEFAULT_MODULE_VERSIONS.get(name) for name in env.TRACKED_PACKAGES}
    base.update({name.replace("__", "."): value for name, value in packages.items()})
    return env.EnvironmentSnapshot(python="3.11.9", packages=base)


@pytest.fixture
def project(tmp_path):
    """A local catalogue with a registered run of two epochs; ``(catalogue, checkpoints, cache)``."""
    written = examples.write_run(tmp_path / "runs", checkpoints=2, weights_bytes=60_000)
    catalogue = Catalogue.create(tmp_path / "catalogue")
    catalogue.register_run(tmp_path / "runs")
    return catalogue, written, tmp_path / "cache"


def train_command(output: Path) -> str:
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(FAKE_TRAINING))} --output {shlex.quote(str(output))}"


# --- manifests ------------------------------------------------------------------------------


def test_fork_stores_its_manifest_in_the_catalogue_and_beside_the_checkpoint(project):
    catalogue, written, cache = project
    parent = catalogue.get(written[-1].uuid)
    manifest = parent.fork(cache=cache, environment=snapshot(), prefetch=False, layout="system")

    assert manifest.mode == "fork" and manifest.parent.uuid == parent.uuid
    assert manifest.parent.relation == "forked-from" and manifest.parent_run_id == written[-1].run_id
    assert manifest.run_id and manifest.run_id != written[-1].run_id
    assert manifest.checkpoint.sha256 == parent.sha256 and manifest.checkpoint.size == parent.size
    assert Path(manifest.checkpoint.path) == cache.absolute() / parent.uuid / parent.filename
    assert manifest.overrides == [
        f"training.run_id={manifest.run_id}",
        f"training.fork_run_id={written[-1].run_id}",
        f"system.input.warm_start={manifest.checkpoint.path}",
        "training.load_weights_only=true",
    ]
    assert manifest.checkpoint_code.modules["anemoi.models"] == "0.5.2"
    assert not manifest.drift

    local = Path(manifest.local_path)
    assert local == cache.absolute() / parent.uuid / "runs" / f"{manifest.uuid}.json"
    stored = runs.get_manifest(catalogue.store.storage, manifest.uuid)
    assert stored == runs.load_manifest(local) == manifest
    assert [m.uuid for m in runs.list_manifests(catalogue.store.storage, parent_uuid=parent.uuid)] == [manifest.uuid]
    with pytest.raises(ConflictError):  # create-only
        runs.record_manifest(catalogue.store.storage, manifest, cache=cache)


def test_resume_keeps_the_run_and_restores_the_full_state(project):
    catalogue, written, cache = project
    manifest = catalogue.get(written[-1].uuid).resume(cache=cache, environment=snapshot(), prefetch=False, layout="system")
    assert manifest.run_id == written[-1].run_id and manifest.parent.relation == "resumed-from"
    assert manifest.overrides[:2] == [f"training.run_id={written[-1].run_id}", "training.fork_run_id=null"]
    assert "training.load_weights_only=false" in manifest.overrides


def test_plans_refuse_what_anemoi_training_cannot_start_from(project):
    catalogue, written, cache = project
    record = catalogue.get(written[0].uuid).record
    storage = catalogue.store.storage
    with pytest.raises(RunPlanError, match="inference checkpoint"):
        runs.plan_fork(storage, record.model_copy(update={"kind": "inference"}), cache=cache, environment=snapshot())
    with pytest.raises(RunPlanError, match="records no run id") as info:
        runs.plan_resume(storage, record.model_copy(update={"run_id": None}), cache=cache, environment=snapshot())
    assert "anemoi-ckpt fork" in info.value.hint
    with pytest.raises(RunPlanError, match="--checkpoints-dir"):
        runs.plan_fork(storage, record, cache=cache, environment=snapshot(anemoi__training="0.4.1"))


def test_hardware_layout_links_the_cached_file_where_old_anemoi_training_looks(project, tmp_path):
    catalogue, written, cache = project
    record = catalogue.get(written[0].uuid).record
    manifest = runs.plan_resume(
        catalogue.store.storage, record, cache=cache, environment=snapshot(anemoi__training="0.4.1"),
        checkpoints_dir=tmp_path / "out",
    )
    assert manifest.training.layout == "hardware" and "0.4.1 < 0.8" in manifest.training.layout_reason
    assert manifest.training.stage_link == str(tmp_path / "out" / record.run_id / record.filename)
    assert f"hardware.files.warm_start={record.filename}" in manifest.overrides


# --- code versions --------------------------------------------------------------------------------


def test_drift_refuses_a_resume_and_stores_nothing_unless_allowed(project):
    catalogue, written, cache = project
    parent = catalogue.get(written[-1].uuid)
    drifted = snapshot(anemoi__models="0.6.1")
    with pytest.raises(DriftError) as info:
        parent.resume(cache=cache, environment=drifted, prefetch=False, layout="system")
    assert any(line.startswith("anemoi.models: checkpoint 0.5.2, environment 0.6.1 (blocking") for line in info.value.differences)
    assert runs.list_manifests(catalogue.store.storage) == []
    assert not (cache / parent.uuid).exists()

    manifest = parent.resume(cache=cache, environment=drifted, prefetch=False, allow_drift=True, layout="system")
    assert manifest.drift_allowed
    assert [(d.name, d.severity) for d in manifest.drift] == [("anemoi.models", "blocking")]
    assert runs.get_manifest(catalogue.store.storage, manifest.uuid).drift == manifest.drift


def test_the_training_step_checks_the_environment_again(project):
    catalogue, written, cache = project
    parent = catalogue.get(written[-1].uuid)
    manifest = parent.resume(cache=cache, environment=snapshot(), layout="system")
    checked, report = runs.verify_run(manifest.local_path, environment=snapshot(anemoi__models="0.5.9"))
    assert checked.uuid == manifest.uuid and [d.reason for d in report.warnings] == ["different patch version"]
    with pytest.raises(DriftError, match="anemoi.training: checkpoint 0.4.1, environment 0.5.0"):
        runs.verify_run(manifest.local_path, environment=snapshot(anemoi__training="0.5.0"))


def test_a_dirty_code_checkout_is_refused_when_clean_is_required(project, tmp_path):
    catalogue, written, cache = project
    repo = tmp_path / "code"
    repo.mkdir()
    (repo / "train.py").write_text("x = 1\n")
    for args in (["init", "-q"], ["add", "train.py"], ["commit", "-q", "-m", "first"]):
        subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args], check=True)
    (repo / "untracked.py").write_text("y = 2\n")
    parent = catalogue.get(written[-1].uuid)
    with pytest.raises(DriftError, match="uncommitted changes"):
        parent.fork(cache=cache, code_path=repo, require_clean=True, prefetch=False, layout="system")


# --- the cache -------------------------------------------------------------------------------------


def test_prefetch_writes_a_verified_file_and_its_entry_once(project):
    catalogue, written, cache = project
    parent = catalogue.get(written[0].uuid)
    entry = parent.prefetch(cache=cache)
    path = Path(entry.path)
    assert path == cache.absolute() / parent.uuid / parent.filename
    assert path.read_bytes() == written[0].path.read_bytes()
    assert run_cache.read_entry(cache, parent.uuid) == entry and entry.sha256 == parent.sha256
    inode = path.stat().st_ino
    again = parent.prefetch(cache=cache)
    assert again == entry and path.stat().st_ino == inode  # verified in place, not downloaded again
    assert run_cache.verify_entry(cache, parent.uuid[:8]).uuid == parent.uuid


def test_a_cache_reference_is_a_uuid_prefix_not_a_pattern(project):
    catalogue, written, cache = project
    catalogue.get(written[0].uuid).prefetch(cache=cache)
    # "*" would match every cached checkpoint if the prefix were used as a glob pattern
    for ref in ("*", "?" * 8, "[0-9a-f]"):
        with pytest.raises(CacheError, match="nothing is cached"):
            run_cache.verify_entry(cache, ref)


def test_an_interrupted_prefetch_resumes_from_its_part_file(project):
    catalogue, written, cache = project
    parent = catalogue.get(written[0].uuid)
    data = written[0].path.read_bytes()
    part = cache / parent.uuid / (parent.filename + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[: len(data) // 3])  # what a killed download leaves

    with pytest.raises(CacheError, match="interrupted") as info:
        run_cache.verify_cached(cache / parent.uuid / parent.filename, sha256=parent.sha256, hint="prefetch it")
    assert "resume it with: prefetch it" in str(info.value)

    fetched = []
    parent.prefetch(cache=cache, progress=fetched.append)
    assert sum(fetched) == len(data) - len(data) // 3
    assert (cache / parent.uuid / parent.filename).read_bytes() == data and not part.exists()


def test_prefetch_refuses_a_disk_that_is_too_small(project, capsys):
    catalogue, written, cache = project
    parent = catalogue.get(written[0].uuid)
    with pytest.raises(InsufficientSpaceError) as info:
        parent.prefetch(cache=cache, margin=10**18)
    assert info.value.needed > info.value.free and "--cache" in info.value.hint
    assert list((cache / parent.uuid).iterdir()) == []  # nothing downloaded

    code = main(["prefetch", parent.uuid, "--catalogue", catalogue.url, "--cache", str(cache), "--margin", str(10**18)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not enough free disk space" in err


def test_a_tampered_cached_file_is_refused_and_prefetch_heals_it(project, capsys):
    catalogue, written, cache = project
    parent = catalogue.get(written[-1].uuid)
    manifest = parent.fork(cache=cache, environment=snapshot(), layout="system")
    cached = Path(manifest.checkpoint.path)
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))

    with pytest.raises(CacheError, match="changed or damaged") as info:
        runs.verify_run(manifest.local_path, environment=snapshot())
    assert info.value.path == str(cached) and f"prefetch {parent.uuid}" in info.value.hint

    code = main(["verify-cache", "--manifest", manifest.local_path])
    err = capsys.readouterr().err
    assert code == 2 and str(cached) in err and "anemoi-ckpt" in err and "Traceback" not in err

    parent.prefetch(cache=cache)  # a bad copy is fetched again
    runs.verify_run(manifest.local_path, environment=snapshot())


def test_a_missing_cached_file_names_the_prefetch_command(project):
    catalogue, written, cache = project
    parent = catalogue.get(written[-1].uuid)
    manifest = parent.fork(cache=cache, environment=snapshot(), prefetch=False, layout="system")
    with pytest.raises(CacheError, match="missing") as info:
        runs.verify_run(manifest.local_path, environment=snapshot())
    assert info.value.path == manifest.checkpoint.path
    assert info.value.hint.endswith(f"anemoi-ckpt --catalogue {catalogue.url} prefetch {parent.uuid} --cache {cache.absolute()}")


# --- CLI --------------------------------------------------------------------------------------------


def test_fork_and_resume_commands_print_the_overrides(project, capsys):
    catalogue, written, cache = project
    uuid = written[-1].uuid
    assert main(["fork", uuid[:8], "--catalogue", catalogue.url, "--cache", str(cache), "--run-id", "my-new-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("anemoi-training train training.run_id=my-new-run")
    assert f"training.fork_run_id={written[-1].run_id}" in out[-1]
    assert (cache.absolute() / uuid / written[-1].path.name).is_file()  # prefetched

    assert main(["resume", uuid, "--catalogue", catalogue.url, "--cache", str(cache), "--no-prefetch", "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["mode"] == "resume" and manifest["run_id"] == written[-1].run_id


def test_run_commands_take_the_catalogue_given_before_the_command(project, tmp_path):
    # `anemoi-ckpt --catalogue DIR fork ...`, as for the catalogue commands; the default catalogue
    # ($ANEMOI_CKPT_CATALOGUE, set by conftest) does not exist, so ignoring the option fails.
    catalogue, written, cache = project
    uuid = written[-1].uuid
    folder = str(catalogue.url).removeprefix("file://")

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "anemoi_ckpt_nb", "--catalogue", folder, *args],
                              capture_output=True, text=True, env=dict(os.environ), timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    manifest = json.loads(cli("fork", uuid[:8], "--cache", str(cache), "--no-prefetch", "--layout", "system", "--json"))
    assert manifest["mode"] == "fork" and manifest["parent"]["uuid"] == uuid
    assert manifest["catalogue"].rstrip("/") == catalogue.url.rstrip("/")
    assert "verified" in cli("prefetch", uuid[:8], "--cache", str(cache))
    script = tmp_path / "job.sh"
    assert "resume of" in cli("plan", uuid[:8], "--resume", "-o", str(script), "--cache", str(cache), "--layout", "system")
    assert script.is_file()
    # A subcommand's own --catalogue still wins over the one before it.
    done = subprocess.run([sys.executable, "-m", "anemoi_ckpt_nb", "--catalogue", str(tmp_path / "nowhere"),
                           "prefetch", uuid[:8], "--catalogue", folder, "--cache", str(cache)],
                          capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert done.returncode == 0, done.stderr


def test_plan_writes_a_two_step_slurm_script(project, tmp_path):
    catalogue, written, cache = project
    script = tmp_path / "job.sh"
    code = main([
        "plan", written[-1].uuid, "--resume", "--catalogue", catalogue.url, "--cache", str(cache), "-o", str(script),
        "--account", "proj", "--partition", "boost_usr_prod", "--time", "04:00:00", "--gpus-per-node", "4",
        "--train-command", "srun anemoi-training train --config-name=mine", "--override", "training.max_epochs=20",
    ])
    assert code == 0 and os.access(script, os.X_OK)
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n#SBATCH --job-name=anemoi-resume-")
    for directive in ("--account=proj", "--partition=boost_usr_prod", "--time=04:00:00", "--gpus-per-node=4"):
        assert f"#SBATCH {directive}\n" in text
    prefetch, train = text.split("step_prefetch() {")[1], text.split("step_train() {")[1]
    assert "ANEMOI_CKPT_OFFLINE" not in prefetch.split("}")[0]
    assert train.index("export ANEMOI_CKPT_OFFLINE=1") < train.index("verify-cache --manifest") < train.index("srun anemoi-training train")
    assert f"training.run_id={written[-1].run_id}" in train and "training.max_epochs=20" in train
    assert "--dependency=afterok" in text
    subprocess.run(["bash", "-n", str(script)], check=True)


STANDIN_SBATCH = """#!/usr/bin/env bash
# Stands in for sbatch: records its arguments, prints a job id (--parsable) and runs the job now,
# as SLURM would later: the script itself, or a --wrap command.
log="$(dirname "$0")/sbatch.args"
echo "$@" >> "$log"
id=$((41 + $(wc -l < "$log")))
echo "$id"
wrap=""; words=()
for arg in "$@"; do
  case "$arg" in --wrap=*) wrap="${arg#--wrap=}" ;; --*) ;; *) words+=("$arg") ;; esac
done
if [[ -n "$wrap" ]]; then SLURM_JOB_ID=$id sh -c "$wrap" >&2; else SLURM_JOB_ID=$id bash "${words[@]}" >&2; fi
"""


def standin_sbatch(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(STANDIN_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    return bin_dir, {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def registered_run(catalogue: Catalogue, run_id: str) -> list:
    return [catalogue.get(e["uuid"]) for e in catalogue.entries() if e.get("run_id") == run_id]


def test_plan_script_runs_all_three_steps_and_the_new_run_is_registered_as_it_trains(project, tmp_path):
    """No SLURM here: a stand-in ``sbatch`` records its arguments and runs the jobs as SLURM would."""
    catalogue, written, cache = project
    bin_dir, environ = standin_sbatch(tmp_path)
    out = tmp_path / "new-run"
    script = tmp_path / "fork.sh"
    parent = written[0]
    assert main(["plan", parent.uuid, "--fork", "--catalogue", catalogue.url, "--cache", str(cache),
                 "-o", str(script), "--sync-partition", "transfer", "--account", "proj",
                 "--gpus-per-node", "4", "--train-command", train_command(out)]) == 0
    manifest = runs.list_manifests(catalogue.store.storage)[0]

    done = subprocess.run(["bash", str(script)], env=environ, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    train, sync = (line.split() for line in (bin_dir / "sbatch.args").read_text().splitlines())
    assert train == ["--parsable", str(script.resolve()), "train"]
    # Step 3 waits for step 2 whatever its outcome, on a partition with network, without the GPUs of step 2.
    assert sync[:5] == ["--parsable", "--dependency=afterany:42", "--partition=transfer",
                        f"--job-name=anemoi-sync-{parent.uuid[:8]}", "--account=proj"]
    assert sync[5:] == ["--wrap=bash", str(script.resolve()), "sync"]
    report = json.loads((out / "standin.json").read_text())
    assert report["offline"] == "1" and report["relation"] == "fork"
    assert report["started_from"] == manifest.checkpoint.path and report["run_id"] == manifest.run_id
    assert report["spool"] == str(cache / "spool")

    # Step 3 registered the new run, linked to its parent (a weights-only fork: named by the capture).
    new = registered_run(catalogue, manifest.run_id)
    assert len(new) == 2 and {(c.parents[0].uuid, c.parents[0].relation) for c in new} == {(parent.uuid, "forked-from")}
    assert catalogue.get(parent.uuid) in new[-1].ancestors()
    assert Spool.open(cache / "spool").pending() == []


def test_plan_script_without_slurm_syncs_what_a_failed_training_saved(project, tmp_path, capsys):
    catalogue, written, cache = project
    out, script, spool = tmp_path / "resumed", tmp_path / "resume.sh", tmp_path / "my spool"
    parent = written[-1]
    assert main(["plan", parent.uuid, "--resume", "--catalogue", catalogue.url, "--cache", str(cache),
                 "-o", str(script), "--spool", str(spool), "--train-command", train_command(out) + " --fail"]) == 0
    assert f"bash {script} sync" in capsys.readouterr().out
    text = script.read_text()
    assert f"SPOOL={shlex.quote(str(spool))}\n" in text and "sync) step_sync ;;" in text

    done = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert done.returncode == 3, done.stderr  # training's status, after step 3 ran
    assert "[step 3/3] registering the checkpoints captured in" in done.stdout
    new = registered_run(catalogue, parent.run_id)
    assert len(new) == len(written) + 2
    resumed = [c for c in new if c.uuid not in {w.uuid for w in written}]
    assert {(p.uuid, p.relation) for c in resumed for p in c.parents} >= {(parent.uuid, "resumed-from")}
    # Step 3 alone, again: nothing left to do; with no spool at all, it says what to add.
    again = subprocess.run(["bash", str(script), "sync"], capture_output=True, text=True)
    assert again.returncode == 0 and "0 registered" in again.stdout, again.stderr
    shutil.rmtree(spool)
    none = subprocess.run(["bash", str(script), "sync"], capture_output=True, text=True)
    assert none.returncode == 0 and "is anemoi_ckpt_nb.training.RegisterCheckpoints in diagnostics.callbacks?" in none.stdout


def test_the_catalogue_policy_can_require_a_clean_checkout(project, tmp_path):
    catalogue, written, cache = project
    storage = catalogue.store.storage
    data, etag = storage.get("catalogue.json")
    storage.replace("catalogue.json", json.dumps({**json.loads(data), "require_clean_code": True}).encode(), etag=etag)
    strict = Catalogue(catalogue.url)
    assert runs.policy_requires_clean(strict.store)
    repo = tmp_path / "code"
    repo.mkdir()
    (repo / "train.py").write_text("x = 1\n")
    for args in (["init", "-q"], ["add", "train.py"], ["commit", "-q", "-m", "first"]):
        subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args], check=True)
    parent = strict.get(written[-1].uuid)
    clean = parent.fork(cache=cache, code_path=repo, prefetch=False, layout="system")
    assert clean.require_clean and clean.environment.git.commit and not clean.environment.git.dirty
    (repo / "train.py").write_text("x = 2\n")
    with pytest.raises(DriftError, match="the policy requires a clean tree"):
        parent.fork(cache=cache, code_path=repo, prefetch=False, layout="system")


def test_verify_cache_by_uuid_reads_only_the_cache(project, capsys, monkeypatch):
    catalogue, written, cache = project
    parent = catalogue.get(written[0].uuid)
    parent.prefetch(cache=cache)
    monkeypatch.setenv("ANEMOI_CKPT_OFFLINE", "1")
    monkeypatch.setenv("ANEMOI_CKPT_CATALOGUE", "s3://no-such-bucket/never-opened")
    assert main(["verify-cache", parent.uuid[:6], "--cache", str(cache)]) == 0
    assert f"sha256 {parent.sha256} verified" in capsys.readouterr().out
    assert main(["verify-cache", "ffffffff", "--cache", str(cache)]) == 2
    assert "nothing is cached under it" in capsys.readouterr().err


def test_plan_script_keeps_awkward_paths_and_hostile_run_ids_inert(tmp_path):
    """Paths with spaces, quotes and ``$``, and a run id from someone else's checkpoint holding a
    line break: the script must pass the paths through whole and never run the run id as a command."""
    hostile = "run-1\ntouch pwned"
    examples.write_run(tmp_path / "runs", checkpoints=1, run_id=hostile, weights_bytes=40_000)
    catalogue = Catalogue.create(tmp_path / "catalogue")
    (parent,) = catalogue.register_run(tmp_path / "runs")
    cache = tmp_path / "cache it's $HOME ${x}"
    out = tmp_path / "new run"
    script = tmp_path / "my jobs" / "fork job.sh"
    assert main(["plan", parent.uuid, "--fork", "--catalogue", catalogue.url, "--cache", str(cache), "-o", str(script),
                 "--layout", "system", "--train-command", train_command(out)]) == 0
    text = script.read_text()
    assert "#   parent run    run-1\\ntouch pwned\n" in text  # shown escaped in the comments

    done = subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "pwned").exists()
    manifest = runs.list_manifests(catalogue.store.storage)[0]
    report = json.loads((out / "standin.json").read_text())
    assert report["started_from"] == manifest.checkpoint.path == str(cache.absolute() / parent.uuid / parent.filename)


def test_slurm_directives_quote_what_sbatch_would_split(project, tmp_path):
    from anemoi_ckpt_nb.runs.jobscript import SlurmOptions, render_script

    catalogue, written, cache = project
    manifest = catalogue.get(written[-1].uuid).fork(cache=cache, environment=snapshot(), prefetch=False, layout="system")
    options = SlurmOptions(account="proj", output="/scratch/my logs/%j #1.out", job_name='say "hi"')
    text = render_script(manifest, manifest_path=manifest.local_path, cache=cache, catalogue=catalogue.url, slurm=options)
    # sbatch splits a directive at whitespace, ends it at '#', and reads quotes and backslash escapes.
    assert '#SBATCH --output="/scratch/my logs/%j #1.out"\n' in text
    assert '#SBATCH --job-name="say \\"hi\\""\n' in text and "#SBATCH --account=proj\n" in text
    default = SlurmOptions()
    assert "#SBATCH --job-name=anemoi-fork-" in render_script(
        manifest, manifest_path=manifest.local_path, cache=cache, catalogue=catalogue.url, slurm=default)
    assert default.job_name is None  # the caller's options are not changed


def test_the_prefetch_hint_can_be_pasted_into_a_shell(project, tmp_path):
    catalogue, written, _ = project
    cache = tmp_path / "cache with space"
    parent = catalogue.get(written[-1].uuid)
    manifest = parent.fork(cache=cache, environment=snapshot(), prefetch=False, layout="system")
    with pytest.raises(CacheError) as info:
        runs.verify_run(manifest.local_path, environment=snapshot())
    command = info.value.hint.split("with: ", 1)[1]
    assert shlex.split(command)[-2:] == ["--cache", str(cache.absolute())]
