#!/usr/bin/env bash
# Reruns every table of BENCHMARKS.md (about 1-2 hours on 2 cores), then regenerates the tables.
#   bash tools/bench_all.sh            # all sections
#   bash tools/bench_all.sh peers      # some sections: quality curvature speed deploy peers causal scaling iia_layer swap_p large
set -euo pipefail
cd "$(dirname "$0")/.."
sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(quality curvature speed deploy peers causal scaling iia_layer swap_p large)
for s in "${sections[@]}"; do
  echo "== $s"
  nice -n 10 python "tools/bench_${s}.py"
done
python tools/bench_tables.py --write
