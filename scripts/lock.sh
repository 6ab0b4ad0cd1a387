#!/usr/bin/env bash
# Regenerate constraints.txt from the current .venv (run after changing dependencies in pyproject.toml).
# torch, triton and torch's own CUDA runtime wheels (nvidia-cublas-*, nvidia-cudnn-*, ...) are left
# out: the set-up picks torch per machine. Other NVIDIA packages (nvidia-ml-py, nvidia-modelopt) are
# pinned like any other, and TensorRT pins of a CUDA major this venv does not have are carried over.
set -euo pipefail
cd "$(dirname "$0")/.."
torch_cuda='^(torch|triton|iris|nvidia-(cublas|cuda|cudnn|cufft|cufile|curand|cusolver|cusparse|cusparselt|nccl|nvjitlink|nvshmem|nvtx)[a-z0-9-]*)=='
frozen=$(.venv/bin/pip freeze --exclude-editable | grep -v -i -E "$torch_cuda" | sed 's/$/ ; python_version >= "3.11"/')
have=$(printf '%s\n' "$frozen" | sed 's/==.*//' | tr 'A-Z_' 'a-z-')
kept=$(grep -i -E '^tensorrt' constraints.txt | while read -r line; do
  name=$(printf '%s' "${line%%==*}" | tr 'A-Z_' 'a-z-')
  printf '%s\n' "$have" | grep -qx "$name" || printf '%s\n' "$line"
done)
{
  sed -n '1,/^# Regenerate/p' constraints.txt
  printf '%s\n%s\n' "$frozen" "$kept" | grep -v '^$' | sort -f -t= -k1,1
} > constraints.txt.new
mv constraints.txt.new constraints.txt
