#!/usr/bin/env bash
# Makes out/gpu-bundle.tar.xz: a self-contained linux-x64 publish of the benchmark program and the quanta tool for a
# GPU host with no .NET installed. TorchSharp's packaged CPU libtorch is left out: on the GPU host set
#   QUANTA_LIBTORCH_DIR=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")')
# and the library preloads that (CUDA) libtorch before TorchSharp starts. Usage on the host:
#   mkdir b && tar -xJf gpu-bundle.tar.xz -C b && QUANTA_LIBTORCH_DIR=... b/bench/quanta-bench probe
set -euo pipefail
cd "$(dirname "$0")/.."
out=out/gpu-bundle; rm -rf "$out"; mkdir -p "$out"
publish() { # project, folder
  dotnet publish "$1" -c Release -r linux-x64 --self-contained -p:InvariantGlobalization=true -nologo -v q -o "$out/$2"
  # keep .NET's own natives and TorchSharp's binding; drop the CPU libtorch (the host's PyTorch provides libtorch)
  find "$out/$2" -maxdepth 1 -name 'lib*.so*' \
    ! -name 'libLibTorchSharp.so' ! -name 'libSystem.*' ! -name 'libclr*' ! -name 'libcoreclr*' ! -name 'libhost*' \
    ! -name 'libmscord*' ! -name 'libMicrosoft.*' ! -name 'libSkiaSharp*' ! -name 'libHarfBuzzSharp*' -delete
}
publish bench/QuanTA.Bench bench
# extra projects (e.g. src/QuanTA.Cli/QuanTA.Cli.csproj) go into the same folder: one copy of the runtime for all
for extra in "$@"; do publish "$extra" bench; done
tar -C "$out" -cJf out/gpu-bundle.tar.xz .
ls -la out/gpu-bundle.tar.xz
