#!/usr/bin/env bash
# Rebuilds source.db and target.db from source.sql and target.sql: run it to reset the
# example after a sync (the sync changes target.db).
set -euo pipefail
cd "$(dirname "$0")"
python3 - <<'PY'
import sqlite3, os
for name in ("source", "target"):
    if os.path.exists(f"{name}.db"):
        os.remove(f"{name}.db")
    db = sqlite3.connect(f"{name}.db")
    db.executescript(open(f"{name}.sql").read())
    db.commit()
    db.close()
PY
rm -f target.work.db
echo "source.db and target.db rebuilt; the working copy target.work.db removed"
