#!/usr/bin/env bash
# The libraries also target net8.0 (LTS). This publishes samples/SaveLoadPredict for net8.0, self-contained (the .NET 8
# runtime comes from the package feed as a runtime pack, so no .NET 8 install is needed), and runs it: fit a QuanTA
# classifier through ML.NET, save, load in a fresh MLContext, predict; it exits non-zero unless the loaded model predicts
# exactly what the fitted one did.    bash scripts/check-net8.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-out/net8-check}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Built in a copy of the tree, so this checkout's net10.0 restore and build outputs are left alone.
tar --exclude=bin --exclude=obj --exclude=./out --exclude=./.git -cf - . | tar -xf - -C "$work"
cd "$work"
dotnet restore samples/SaveLoadPredict -r linux-x64 -p:TargetFramework=net8.0
dotnet publish samples/SaveLoadPredict --no-restore -c Release -r linux-x64 --self-contained -p:TargetFramework=net8.0 -o pub
grep -o '"version": "8[^"]*"' pub/SaveLoadPredict.runtimeconfig.json
pub/SaveLoadPredict --out "$out"
