#!/usr/bin/env bash
# Capture real nvidia-smi and NVML outputs on a GPU host as SDK test fixtures.
# Read-only: only queries; never changes clocks, power limits, MIG or persistence settings.
# Usage (from the repository root): OUT=/some/dir sdk/scripts/capture_gpu_fixtures.sh
set -u
out="${OUT:-./gpu-capture}"
mkdir -p "$out"
export PYTHONPATH="$PWD/sdk/src${PYTHONPATH:+:$PYTHONPATH}"

{
  echo "## uname"; uname -a
  echo "## python"; command -v python3 && python3 --version
  echo "## pip"; python3 -m pip --version
} >"$out/env.txt" 2>&1

# A short PyTorch load where torch exists, so utilisation, clocks and processes are non-idle.
load_pid=""
if python3 -c 'import torch; assert torch.cuda.is_available()' >/dev/null 2>&1; then
  python3 -c '
import time, torch
x = torch.randn(8192, 8192, device="cuda")
end = time.time() + 40
while time.time() < end:
    x = (x @ x).clamp_(-1, 1)
torch.cuda.synchronize()
' >"$out/load.log" 2>&1 &
  load_pid=$!
  sleep 8
  echo "torch load pid $load_pid" >>"$out/env.txt"
else
  echo "no torch: idle capture" >>"$out/env.txt"
fi

nvidia-smi >"$out/nvidia_smi.txt" 2>&1
nvidia-smi -L >"$out/nvidia_smi_list.txt" 2>&1
nvidia-smi -q >"$out/nvidia_smi_q.txt" 2>&1
nvidia-smi -q -x >"$out/nvidia_smi_q.xml" 2>&1

fields="$(python3 -c 'from ca4_sdk.collectors.nvidia_smi import QUERY_FIELDS; print(",".join(f.query for f in QUERY_FIELDS))')"
echo "$fields" >"$out/query_gpu_fields.txt"
nvidia-smi --query-gpu="$fields" --format=csv,noheader,nounits >"$out/query_gpu.csv" 2>&1
echo "exit=$?" >>"$out/env.txt"
nvidia-smi --query-gpu="$fields" --format=csv >"$out/query_gpu_with_units.csv" 2>&1
nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,used_memory --format=csv,noheader,nounits \
  >"$out/query_compute_apps.csv" 2>&1

# NVML: the carried wheel first (the GPU host may have no route to PyPI), then PyPI.
nvml_dir="$(mktemp -d)"
python3 -m pip install --quiet --no-deps --target "$nvml_dir" dist/gpu-wheels/nvidia_ml_py-*.whl \
  >>"$out/env.txt" 2>&1 \
  || python3 -m pip install --quiet --target "$nvml_dir" nvidia-ml-py >>"$out/env.txt" 2>&1 \
  || { mkdir -p "$nvml_dir" && (cd "$nvml_dir" && python3 -m zipfile -e "$OLDPWD"/dist/gpu-wheels/nvidia_ml_py-*.whl .) ; } >>"$out/env.txt" 2>&1
PYTHONPATH="$nvml_dir:$PYTHONPATH" python3 sdk/scripts/record_nvml.py "$out/nvml_recording.json" \
  >"$out/record_nvml.out" 2>&1
PYTHONPATH="$nvml_dir:$PYTHONPATH" python3 -m ca4_sdk probe nvml >"$out/probe_nvml.json" 2>"$out/probe_nvml.err"
python3 -m ca4_sdk probe nvidia-smi >"$out/probe_nvidia_smi.json" 2>"$out/probe_nvidia_smi.err"
PYTHONPATH="$nvml_dir:$PYTHONPATH" python3 -m ca4_sdk probe >"$out/probe_auto.json" 2>"$out/probe_auto.err"

# Timing: how long one collection takes with each collector (the reporter runs it every 15 s).
PYTHONPATH="$nvml_dir:$PYTHONPATH" python3 - >"$out/timing.json" 2>&1 <<'PY'
import json, time
from ca4_sdk.collectors import AutoCollector
timings = {}
for prefer in ("nvml", "nvidia-smi"):
    collector = AutoCollector(prefer=prefer)
    collector.collect()
    runs = []
    for _ in range(5):
        start = time.perf_counter(); collector.collect(); runs.append(time.perf_counter() - start)
    collector.close()
    timings[prefer] = {"min_s": min(runs), "max_s": max(runs), "median_s": sorted(runs)[2]}
print(json.dumps(timings, indent=2))
PY
if [ -n "$load_pid" ]; then kill "$load_pid" 2>/dev/null; fi
ls -la "$out"
