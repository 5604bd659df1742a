#!/usr/bin/env bash
# `sam build` of some of template.yaml's functions, as a new user runs it (rust-cargolambda,
# release, the template's architecture), then checks each built `bootstrap` is an ELF
# executable for that architecture (arm64 unless ARCH=x86_64) and that the built template
# points at it. Each function builds into target/sam/<logical id> (sam build empties its
# build directory first); cargo's artifacts (the workspace's target/) are shared between
# them. SAM_BUILD_MODE=debug (read by sam itself) builds without --release: the same
# template, CodeUri and Metadata, several times faster than the release profile's LTO.
#
#   scripts/sam-build-check.sh EchoFunction ApiFunction
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv/bin ] && export PATH="$PWD/.venv/bin:$PATH"
arch=${ARCH:-arm64}
for function in "$@"; do
    build_dir="target/sam/$function"
    started=$(date +%s)
    sam build "$function" --beta-features --template template.yaml --build-dir "$build_dir" \
        --parameter-overrides "Architecture=$arch"
    echo "sam build $function: $(( $(date +%s) - started )) s"
    python3 - "$build_dir" "$function" "$arch" <<'PY'
import struct, sys
from samtranslator.yaml_helper import yaml_parse

build_dir, function, arch = sys.argv[1:]
built = yaml_parse(open(f"{build_dir}/template.yaml").read())
code_uri = built["Resources"][function]["Properties"]["CodeUri"]
assert code_uri == function, f"the built template deploys {code_uri!r}, not the build of {function}"
runtime = built["Resources"][function]["Properties"].get("Runtime") or built["Globals"]["Function"]["Runtime"]
assert runtime == "provided.al2023", f"{function} runs on {runtime}"
path = f"{build_dir}/{function}/bootstrap"
with open(path, "rb") as f:
    header = f.read(20)
machine = {"arm64": 183, "x86_64": 62}[arch]  # EM_AARCH64, EM_X86_64
assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
assert header[4] == 2, f"{path} is not 64-bit"
(e_type, e_machine) = struct.unpack("<HH", header[16:20])
assert e_type in (2, 3), f"{path} is not an executable (e_type {e_type})"
assert e_machine == machine, f"{path} is for machine {e_machine}, not {arch} ({machine})"
print(f"{path}: ELF 64-bit {arch} executable")
PY
done
