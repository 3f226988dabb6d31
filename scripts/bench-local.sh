#!/usr/bin/env bash
# Local bake figures, measured in one run: a forced bake of recipes/demo.yaml
# (Debian bookworm minbase, apt-get install jq, a file, a script, clean,
# qcow2 + tar.zst capture) and the cache-hit rebuild of the same recipe.
set -euo pipefail
bin=${BAKEHOUSE:-target/debug/bakehouse}
now() { date +%s.%N; }
t0=$(now); "$bin" build --force recipes/demo.yaml >/dev/null 2>&1; t1=$(now)
"$bin" build recipes/demo.yaml >/dev/null 2>&1; t2=$(now)
bake=$(echo "$t1 - $t0" | bc); hit=$(echo "$t2 - $t1" | bc)
printf '%-44s %8.2f s\n' "local bake, recipes/demo.yaml (forced)" "$bake"
printf '%-44s %8.3f s\n' "cache-hit rebuild, same recipe" "$hit"
printf '%-44s %8.0f x\n' "ratio bake / cache hit" "$(echo "$bake / $hit" | bc -l)"
