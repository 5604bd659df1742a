#!/usr/bin/env bash
# Regenerates the published JSON Schemas in docs/schemas from the code.
set -euo pipefail
cd "$(dirname "$0")/.."
for kind in application configuration schedule pack; do
  cargo run -q -- schema "$kind" > "docs/schemas/$kind.schema.json"
done
