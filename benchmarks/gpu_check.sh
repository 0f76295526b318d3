#!/usr/bin/env bash
# Issue 17's check on a GPU, one call of under 10 minutes. Pack first (benchmarks/gpu_pack.sh),
# then on the GPU machine, from the repository root, with .gpu carried:
#     bash benchmarks/gpu_check.sh            # results and logs under $OUT (default /tmp/gpu_check)
# 1. the installed versions and the GPU;
# 2. TriMul: `sia.tasks.trimul.gpu_check`, the shipped PyTorch and Triton solutions through the
#    sandboxed harness against a direct CUDA-event timing of the same calls. It runs isolated
#    (bubblewrap) first; only if that fails does it run again without bubblewrap on the PATH and
#    with --unsafe-sandbox, and the log says which isolation each run had;
# 3. `benchmarks/grpo_step.py`: seconds per SFT, GRPO and entropic step with Unsloth and with
#    TRL + PEFT on CUDA, on a randomly initialised model of SmolLM2-135M's shape (the weights
#    cannot travel). Its rewards are those of random weights, so only the times mean anything.
# Every step gets what is left of a 560 s deadline, so the call ends inside the tool's 600 s.
set -uo pipefail
cd "$(dirname "$0")/.."
end=$((SECONDS + 560))
left() { echo $((end - SECONDS > 10 ? end - SECONDS : 10)); }
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
PY=/opt/torch/.venv/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
repo=$PWD
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PATH="$repo/.gpu/bwrap:$PATH"
[ -f .gpu/site.tgz ] || { echo "gpu_check.sh: no .gpu/site.tgz: run benchmarks/gpu_pack.sh and carry .gpu"; exit 2; }
# Into the interpreter's own site-packages, not PYTHONPATH: the sandbox gives its children a
# scrubbed environment and binds the interpreter's import path (sandbox.bwrap.python_paths).
site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
tar -xzf .gpu/site.tgz --strip-components=1 -C "$site"
"$PY" -c "import pydantic" 2> /dev/null || "$PY" -m pip install -q --no-deps --no-index .gpu/opt/typing_extensions-*.whl
# bwrap and the sandbox run with a scrubbed environment, so a library missing here goes where the
# loader looks (ctypes finds libseccomp through the same cache).
chmod +x .gpu/bwrap/bwrap
ldconfig -p > /tmp/ld.cache
for lib in .gpu/bwrap/lib/*; do
    grep -q "$(basename "$lib")" /tmp/ld.cache || { cp "$lib" /usr/local/lib/ && echo "added $(basename "$lib")"; }
done
ldconfig
cd /tmp  # from the repository root, its sia/ folder would shadow the installed package

echo "== 1. versions"
nvidia-smi -L
"$PY" -c "import torch, transformers, peft, trl, triton, sia; print('python', __import__('sys').version.split()[0], \
'| torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', transformers.__version__, \
'| peft', peft.__version__, '| trl', trl.__version__, '| triton', triton.__version__, '| sia from', sia.__file__)"
bwrap --version || echo "bwrap does not run here"

echo "== 2. TriMul through the sandboxed harness vs direct CUDA events"
timeout 150 "$PY" -m sia.tasks.trimul.gpu_check --json "$OUT/trimul.json" 2>&1 | tee "$OUT/trimul.log"
if [ "${PIPESTATUS[0]}" != 0 ]; then
    echo "-- the isolated run failed (above); again without bubblewrap, --unsafe-sandbox (rlimits only)"
    PATH=${PATH#"$repo/.gpu/bwrap:"} timeout 120 "$PY" -m sia.tasks.trimul.gpu_check --unsafe-sandbox \
        --json "$OUT/trimul_unsafe.json" 2>&1 | tee "$OUT/trimul_unsafe.log"
fi

echo "== 3. GRPO / entropic / SFT steps, Unsloth and TRL + PEFT ($(left) s left)"
REPO="$repo" "$PY" - <<'PY'
import os

import torch
import transformers

model = os.environ["REPO"] + "/.gpu/model"
torch.manual_seed(0)
transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(model),
                                              dtype=torch.float32).save_pretrained("/tmp/base")
transformers.AutoTokenizer.from_pretrained(model).save_pretrained("/tmp/base")
print("random-init base model in /tmp/base")
PY
cp "$repo/.gpu/model/generation_config.json" /tmp/base/
timeout "$(left)" "$PY" "$repo/benchmarks/grpo_step.py" --base /tmp/base --methods sft,grpo,entropic \
    --backends unsloth,trl --steps 3 --timeout 150 --json "$OUT/grpo_step.json" 2>&1 | tee "$OUT/grpo_step.log"
echo "== done ($(left) s of the deadline left)"
