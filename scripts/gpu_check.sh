#!/usr/bin/env bash
# The checks only a GPU can make, in one short run (a few minutes on one H100), as one PASS/FAIL table:
#   bf16 and fp16    kd distill of the embedded sample in each precision, on the GPU
#   2 processes      the same run on 2 GPUs matches 1 process (skipped with fewer than 2 GPUs)
#   resume           a run killed (SIGKILL) mid-epoch and resumed ends with the uninterrupted run's weights
#   export parity    the ONNX export of a GPU-trained student against PyTorch on CUDA, on kd's parity texts
#   teacher memory   the student stage's peak GPU memory with the teacher released (kd) and kept (as before)
#   sweep, 2 jobs    one GPU per job; with one GPU, --jobs 2 is refused in one line
# Usage, from the repository root:  bash scripts/gpu_check.sh [OUT]   (OUT: its runs and logs; default: a new temp folder)
set -u
cd "$(dirname "$0")/.." || exit 2
OUT=${1:-$(mktemp -d -t kd-gpu-check-XXXX)}
mkdir -p "$OUT/logs"
QUICK=(--config configs/sample.yaml teacher.train.epochs=1 student.train.epochs=2 "output_dir=$OUT/runs"
       "cache_dir=$OUT/cache")
GPUS=$(python -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
declare -a ROWS

record() {  # record NAME STATUS: the detail is the last "DETAIL:" line of the check's log
    local detail
    detail=$(grep -h "^DETAIL:" "$OUT/logs/$1.log" 2>/dev/null | tail -1 | cut -c9-)
    ROWS+=("$(printf '%-16s %-5s %s' "$1" "$2" "$detail")")
}

run_check() {  # run_check NAME FUNCTION: PASS when the function exits 0
    if "$2" > "$OUT/logs/$1.log" 2>&1; then record "$1" PASS; else record "$1" FAIL; fi
}

final() {  # final RUN KEY...: a value of the run's final_metrics.json
    python -c "import json, sys; d = json.load(open(sys.argv[1])); [d := d[k] for k in sys.argv[2:]]; print(d)" \
        "$OUT/runs/$1/final_metrics.json" "${@:2}"
}

precision_run() {  # precision_run PRECISION
    kd distill "${QUICK[@]}" "mixed_precision=$1" "run_name=$1" || return 1
    grep -q "on cuda" "$OUT/logs/$1.log" || return 1
    echo "DETAIL: student macro AUC $(final "$1" student val macro_auc), trained in $1 on $(grep -o 'on cuda[:0-9]*' "$OUT/logs/$1.log" | head -1)"
}
check_bf16() { precision_run bf16; }
check_fp16() { precision_run fp16; }

check_two_processes() {
    kd distill "${QUICK[@]}" mixed_precision=no run_name=p1 || return 1
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \
        scripts/distill.py "${QUICK[@]}" mixed_precision=no run_name=p2 || return 1
    python - "$OUT/runs" <<'EOF'
import json, sys
one, two = (json.load(open(f"{sys.argv[1]}/{run}/final_metrics.json")) for run in ("p1", "p2"))
gap = abs(one["student"]["val"]["bce"] - two["student"]["val"]["bce"])
print(f"DETAIL: student val BCE 1 process {one['student']['val']['bce']:.5f}, 2 processes "
      f"{two['student']['val']['bce']:.5f} (|gap| {gap:.1e}, at most 1e-3)")
sys.exit(two["num_processes"] != 2 or gap > 1e-3)
EOF
}

check_resume() {
    local extra=(mixed_precision=no student.train.epochs=3 student.train.save_every_steps=5)
    kd distill "${QUICK[@]}" "${extra[@]}" run_name=uninterrupted || return 1
    kd distill "${QUICK[@]}" "${extra[@]}" run_name=killed &
    local pid=$! state="$OUT/runs/killed/state/student.safetensors"
    python - "$state" "$pid" <<'EOF' || return 1
import json, os, signal, sys, time
from safetensors import safe_open
deadline = time.time() + 300
while time.time() < deadline:
    try:
        with safe_open(sys.argv[1], "pt") as handle:
            progress = json.loads(handle.metadata()["progress"])
        if progress["epoch"] == 2 and progress["step"] > 0:
            os.kill(int(sys.argv[2]), signal.SIGKILL)
            print(f"killed at student epoch 2, batch {progress['step']}")
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.01)
sys.exit(1)
EOF
    wait "$pid" 2>/dev/null
    kd distill --resume "$OUT/runs/killed" || return 1
    python - "$OUT/runs" <<'EOF'
import sys
from safetensors.torch import load_file
a, b = (load_file(f"{sys.argv[1]}/{run}/student/model.safetensors") for run in ("uninterrupted", "killed"))
diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
print(f"DETAIL: max |weight difference| to the uninterrupted run {diff:.1e} (at most 1e-4)")
sys.exit(diff > 1e-4)
EOF
}

check_export() {
    [ -d "$OUT/runs/uninterrupted/student" ] || kd distill "${QUICK[@]}" mixed_precision=no run_name=uninterrupted \
        || return 1
    kd export --model "$OUT/runs/uninterrupted/student" --out "$OUT/export-onnx" --onnx || return 1
    python - "$OUT" <<'EOF'
import sys
import numpy as np
import torch
from kd.deployment.classifier import Classifier
from kd.deployment.export import FP32_MAX_PROB_DIFF, parity_texts
from kd.models.saved import load_classifier
out = sys.argv[1]
model, tokenizer, _ = load_classifier(f"{out}/runs/uninterrupted/student")
model = model.cuda()
onnx = Classifier.from_pretrained(f"{out}/export-onnx")
texts = parity_texts()
with torch.no_grad():
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to("cuda")
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float().cpu().numpy()
diff = float(np.abs(1 / (1 + np.exp(-logits)) - 1 / (1 + np.exp(-onnx.logits(texts)))).max())
print(f"DETAIL: max |Δ probability| ONNX (CPU) vs PyTorch on CUDA over {len(texts)} texts {diff:.1e} "
      f"(at most {FP32_MAX_PROB_DIFF:.0e})")
sys.exit(diff > FP32_MAX_PROB_DIFF)
EOF
}

check_teacher_memory() {
    python - "$OUT" <<'EOF'
import sys
import torch
from kd.config.settings import load_config
from kd.run import pipeline
from kd.runtime.context import RunContext
from kd.student import stage
out, peaks = sys.argv[1], {}
real_fit, real_release = stage.fit, RunContext.release

def fit(ctx, job):  # the student stage's peak, from its first step
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    result = real_fit(ctx, job)
    peaks[ctx.run_dir.name] = torch.cuda.max_memory_allocated() / 2**20
    return result

def kept(ctx, *roles):  # as before the release: the teacher stays held and registered
    if "teacher" not in roles:
        real_release(ctx, *roles)

stage.fit = fit
settings = ["teacher.train.epochs=1", "student.train.epochs=1", f"output_dir={out}/runs", f"cache_dir={out}/cache"]
pipeline.distill(load_config(["configs/sample.yaml"], [*settings, "run_name=released"]))
RunContext.release = kept
pipeline.distill(load_config(["configs/sample.yaml"], [*settings, "run_name=kept"]))
print(f"DETAIL: student stage peak {peaks['released']:.0f} MiB with the teacher released, {peaks['kept']:.0f} MiB kept")
sys.exit(not peaks["released"] < peaks["kept"])
EOF
}

check_sweep() {
    cat > "$OUT/sweep.yaml" <<EOF
name: gpu-check
configs: [configs/sample.yaml]
set: {teacher.train.epochs: 1, student.train.epochs: 1, cache_dir: $OUT/cache}
grid: {distill.alpha: [0.3, 0.7]}
seeds: [0]
output_dir: $OUT/sweeps
EOF
    if [ "$GPUS" -ge 2 ]; then
        kd sweep "$OUT/sweep.yaml" --jobs 2 || return 1
        echo "DETAIL: 2 runs, one GPU each ($(ls "$OUT/sweeps/gpu-check/logs" | wc -l) logs)"
    else
        kd sweep "$OUT/sweep.yaml" --jobs 2 2> "$OUT/logs/sweep-refusal.txt" && return 1
        grep -q "with 1 visible GPU" "$OUT/logs/sweep-refusal.txt" || return 1
        echo "DETAIL: one GPU: --jobs 2 refused in one line: $(head -1 "$OUT/logs/sweep-refusal.txt")"
    fi
}

if [ "$GPUS" -lt 1 ]; then
    echo "no CUDA GPU is visible: nothing to check here" >&2
    exit 2
fi
started=$(date +%s)
run_check bf16 check_bf16
run_check fp16 check_fp16
if [ "$GPUS" -ge 2 ]; then run_check "2 processes" check_two_processes; else ROWS+=("$(printf '%-16s %-5s %s' "2 processes" SKIP "$GPUS GPU visible")"); fi
run_check resume check_resume
run_check "export parity" check_export
run_check "teacher memory" check_teacher_memory
run_check "sweep, 2 jobs" check_sweep
echo
echo "kd GPU check: $(python -c 'import torch; print(torch.cuda.get_device_name(0))'), $GPUS GPU(s), $(( $(date +%s) - started )) s; logs in $OUT/logs"
printf '%-16s %-5s %s\n' check result detail
printf '%s\n' "${ROWS[@]}"
! printf '%s\n' "${ROWS[@]}" | grep -q " FAIL "
