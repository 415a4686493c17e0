#!/usr/bin/env bash
# README command 1: the main job on the embedded default. Restores packages, builds (the Debian-12 TorchSharp fix is
# part of the build), and runs samples/WordNetClassification in Release: WordNet gloss → lexicographer file on the
# embedded tiny LLaMA base model, head-only baseline vs QuanTA vs LoRA, ML.NET metrics, loss curves under out/.
# Needs only the .NET 10 SDK. Extra arguments go to the sample: --quick, --gpu, --out DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
dotnet build samples/WordNetClassification/WordNetClassification.csproj -c Release -nologo -v q -clp:ErrorsOnly
exec dotnet run -c Release --no-build --project samples/WordNetClassification -- "$@"
