#!/usr/bin/env bash
# Install intent-router, fine-tune the 3-intent ATIS example and classify a few utterances.
# Data: ../shared/datasets/atis next to the project, or set ATIS_DIR to a folder with atis_3class.csv.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
atis=${ATIS_DIR:-$root/../shared/datasets/atis}
[ -f "$atis/atis_3class.csv" ] || { echo "no $atis/atis_3class.csv: set ATIS_DIR to the folder holding it" >&2; exit 1; }
cd "$root"
./install.sh
export HF_HUB_OFFLINE=1
router=.venv/bin/intent-router
$router preview "$atis/atis_3class.csv" --rows 5
$router train "$atis/atis_3class.csv" --name atis-3 --overwrite
$router predict atis-3 "show me fares from boston to denver" \
  "is there a shuttle from the airport to downtown" "which airlines fly from atlanta to dallas"
