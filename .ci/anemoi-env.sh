#!/usr/bin/env bash
# Create (or check) a venv with the real anemoi packages, apart from the project's venv.
#
#   .ci/anemoi-env.sh PATH [inference|training] [--project DIR]
#   .ci/anemoi-env.sh --lock          # regenerate .ci/anemoi-inference.lock from PyPI
#
# inference (default): torch 2.13.0 (CPU, the project's) + anemoi-models 0.19.0, anemoi-graphs 0.9.8,
#   anemoi-inference 0.13.0, anemoi-datasets 0.5.47, torch-geometric 2.8.1 and their requirements,
#   installed --no-deps from .ci/anemoi-inference.lock: their torch<2.11 pin is bypassed. Checked on the
#   real fixtures: every inference-*.ckpt unpickles and its predict_step equals the reference bit for
#   bit, and `anemoi-inference run` writes the reference forecast. anemoi-training cannot run here:
#   it imports timm, timm imports torchvision, and PyPI's torchvision needs torch's CUDA libraries.
# training: the stack as the anemoi packages pin it (torch 2.10.0 CUDA build from PyPI, runs on CPU),
#   anemoi-training[plotting] 0.17.1 included, from .ci/anemoi-training.lock.
# --project DIR: also install this project (editable, --no-deps) and its few extra requirements, so
#   its entry points (anemoi-inference runner, training callback) are seen by the anemoi packages.
#
# Idempotent: PATH/.anemoi-env-stamp holds the sha256 of the lock and the project option; a second
# call with the same inputs only checks that the packages import.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3.11}"

if [[ "${1:-}" == "--lock" ]]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    "$python" -m venv "$tmp/venv"
    "$tmp/venv/bin/pip" install -q --dry-run --ignore-installed --report "$tmp/report.json" \
        anemoi-models==0.19.0 "anemoi-graphs[tri]==0.9.8" anemoi-inference==0.13.0 anemoi-datasets==0.5.47 \
        anemoi-utils==0.5.14 anemoi-transform==0.5.1 torch-geometric==2.8.1 torch==2.10.0
    "$python" - "$tmp/report.json" "$here/anemoi-inference.lock" <<'PY'
import json, re, sys
skip = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$", re.I)
report = json.load(open(sys.argv[1]))
pins = sorted(f"{i['metadata']['name']}=={i['metadata']['version']}" for i in report["install"]
              if not skip.match(i["metadata"]["name"]))
head = [line for line in open(sys.argv[2]).read().splitlines() if line.startswith("#")]
open(sys.argv[2], "w").write("\n".join(head + pins) + "\n")
print(f"{sys.argv[2]}: {len(pins)} pins")
PY
    exit 0
fi

target="${1:?usage: .ci/anemoi-env.sh PATH [inference|training] [--project DIR]}"
tier="${2:-inference}"
project=""
if [[ "${3:-}" == "--project" ]]; then project="$(cd "${4:?--project needs a folder}" && pwd)"; fi
case "$tier" in
    inference) lock="$here/anemoi-inference.lock"; check="import torch, torch_geometric, anemoi.models, anemoi.graphs, anemoi.inference, anemoi.datasets" ;;
    training) lock="$here/anemoi-training.lock"; check="import torch, torch_geometric, anemoi.models, anemoi.graphs, anemoi.inference, anemoi.datasets, anemoi.training.train.train" ;;
    *) echo "anemoi-env.sh: tier must be inference or training, not '$tier'" >&2; exit 2 ;;
esac
stamp="$(sha256sum "$lock" | cut -d' ' -f1) $tier ${project:-no-project}"

if [[ -f "$target/.anemoi-env-stamp" && "$(cat "$target/.anemoi-env-stamp")" == "$stamp" ]]; then
    "$target/bin/python" -c "$check" && echo "anemoi-env: $target is up to date ($tier)" && exit 0
fi

rm -rf "$target"
"$python" -m venv "$target"
pip=("$target/bin/python" -m pip install -q --disable-pip-version-check)
if [[ "$tier" == inference ]]; then
    "${pip[@]}" torch==2.13.0
    "${pip[@]}" --no-deps -r "$lock"
else
    "${pip[@]}" -r "$lock"
fi
if [[ -n "$project" ]]; then
    "${pip[@]}" boto3 "isal>=1.6" "safetensors>=0.4" "platformdirs>=4"
    "${pip[@]}" --no-deps -e "$project"
fi
"$target/bin/python" -c "$check"
echo "$stamp" > "$target/.anemoi-env-stamp"
echo "anemoi-env: $target ready ($tier): $("$target/bin/python" -c 'import torch, anemoi.models as m; print("torch", torch.__version__, "anemoi-models", m.__version__)')"
