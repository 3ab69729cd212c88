#!/usr/bin/env bash
# The first run on a one-GPU machine: at most 10 minutes, every part under its own
# timeout, a failing part recorded and the next one run, so one session yields everything it can.
#
#   bench/gpu_session.sh [--dry-run] [OUT]     (OUT default: results/bench)
#
#   1. nvidia-smi, torch / CUDA / cuDNN / driver versions, the device and its MFU peak   -> OUT/gpu_env.json
#   2. pytest -m gpu (the CUDA paths of the matrix and of pretraining)                    -> OUT/gpu_pytest.txt
#   3. the distributed self-test over NCCL at world size 1 (BEiT-B/16, bf16, the paper profile's
#      engine: DDP at zero_stage 0)                                                      -> OUT/gpu_selftest.json
#   4. 50 BEiT-B/16 pretraining steps at batch 64, bf16: one process, then the paper's
#      data-parallel engine at world size 1; each with a short torch.profiler run
#      counting CUDA synchronisations                         -> OUT/gpu_steps_local.json, OUT/gpu_steps_dp.json
#   5. what each part did (exit code, seconds)                                           -> OUT/gpu_session.json
#
# --dry-run: the same parts on whatever device there is, at the ci profile's micro model and a few steps
# (tests/integration/test_gpu_session.py runs it on a CPU so this script cannot rot). Timeouts are per part; their sum
# (30 + 240 + 120 + 2 x 100 s) stays under 10 minutes.
set -u
cd "$(dirname "$0")/.."
DRY=""
if [ "${1:-}" = "--dry-run" ]; then DRY="--dry-run"; shift; fi
OUT="${1:-results/bench}"
PY="${PYTHON:-python}"
TORCHRUN="${TORCHRUN:-$(dirname "$(command -v "$PY")")/torchrun}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
PARTS=()

part() {  # part NAME TIMEOUT_S COMMAND...: run it, record its exit code and wall time
  local name="$1" limit="$2"; shift 2
  local t0 rc
  echo "== $name (<= ${limit} s): $*"
  t0=$(date +%s)
  timeout "$limit" "$@"
  rc=$?
  PARTS+=("{\"part\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 ))}")
  echo "== $name: exit $rc"
}


if command -v nvidia-smi >/dev/null 2>&1; then
  part nvidia-smi 30 bash -c "nvidia-smi > '$OUT/gpu_nvidia_smi.txt' 2>&1"
fi
part env 30 "$PY" bench/_gpu_session.py env $DRY --out "$OUT/gpu_env.json"

if [ -n "$DRY" ]; then  # collect only: the CUDA tests skip on a CPU and the collection is what can break
  part pytest-gpu 240 bash -c "'$PY' -m pytest -m gpu --collect-only -q tests/integration/test_gpu.py > '$OUT/gpu_pytest.txt' 2>&1"
  SELFTEST=(--model tiny --steps 2 --batch-size 4 --precision fp32)
  STEPS=(--steps 4 --profile-steps 2 --batch-size 4)
else
  part pytest-gpu 240 bash -c "'$PY' -m pytest -m gpu -q tests/integration/test_gpu.py > '$OUT/gpu_pytest.txt' 2>&1"
  SELFTEST=(--model heartbeit_base_patch16_224 --steps 10 --batch-size 64 --precision bf16)
  STEPS=(--steps 50 --profile-steps 10 --batch-size 64)
fi
ZERO=$("$PY" -c "from heartbeit.config import load_config; print(load_config('paper').pretrain.zero_stage)")
ENGINE=$([ "$ZERO" = 0 ] && echo ddp || echo deepspeed)  # the paper's path: DDP at stage 0, else DeepSpeed ZeRO
part selftest 120 "$TORCHRUN" --standalone --nproc_per_node 1 -m heartbeit.train.dist_selftest \
  "${SELFTEST[@]}" --engine "$ENGINE" --zero-stage "$ZERO" --metrics "$OUT/gpu_selftest.json"
part steps-local 100 "$PY" bench/_gpu_session.py steps --engine local $DRY "${STEPS[@]}" \
  --out "$OUT/gpu_steps_local.json"
part steps-dp 100 "$TORCHRUN" --standalone --nproc_per_node 1 bench/_gpu_session.py steps --engine dp \
  $DRY "${STEPS[@]}" --out "$OUT/gpu_steps_dp.json"

JOINED=$(IFS=,; echo "${PARTS[*]}")
echo "{\"kind\": \"heartbeit-gpu-session\", \"dry_run\": $([ -n "$DRY" ] && echo true || echo false), \"parts\": [$JOINED]}" \
  > "$OUT/gpu_session.json"
cat "$OUT/gpu_session.json"
