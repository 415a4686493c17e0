#!/usr/bin/env bash
# Restores, builds and runs every test project of the solution; prints "N passed, N failed, N skipped" last.
# Needs only the .NET 10 SDK: packages come from the configured NuGet feed, the Debian-12 TorchSharp fix is part of the build.
set -uo pipefail
cd "$(dirname "$0")/.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
results="$(mktemp -d)"
# The GGUF export tests read their files with @huggingface/gguf (pinned in test/gguf-reader/package.json); install it
# once from the npm registry. Quiet and idempotent; without npm the tests themselves say what is missing.
if command -v npm >/dev/null 2>&1 && [ ! -f test/gguf-reader/node_modules/@huggingface/gguf/package.json ]; then
  npm install --prefix test/gguf-reader --no-audit --no-fund --no-package-lock --silent >/dev/null 2>&1 \
    || echo "warning: npm install in test/gguf-reader failed; the GGUF tests will try again" >&2
fi
dotnet build QuanTA.MLNet.sln -c Release -nologo -v q -clp:ErrorsOnly || { echo "0 passed, 1 failed"; exit 1; }
rc=0
for proj in test/*/*.csproj; do
  name="$(basename "$proj" .csproj)"
  dotnet test "$proj" -c Release --no-build -nologo --logger "trx;LogFileName=$name.trx" --results-directory "$results" "$@" || rc=1
done
python3 - "$results" <<'PY' || rc=1
import sys, glob, xml.etree.ElementTree as ET
p = f = s = 0
for t in glob.glob(sys.argv[1] + "/*.trx"):
    c = ET.parse(t).getroot().find(".//{*}Counters")
    p += int(c.get("passed")); f += int(c.get("failed")) + int(c.get("error")) + int(c.get("timeout")) + int(c.get("aborted"))
    s += int(c.get("notExecuted"))
print(f"{p} passed, {f} failed, {s} skipped")
sys.exit(1 if f or p == 0 else 0)
PY
exit $rc
