#!/usr/bin/env bash
# Mutation testing of the consensus oracles (not in CI: it takes an hour or more).
#
# Every mutant cargo-mutants makes in the functions that decide safety (quorum
# sizes, view-change selection, NEW-VIEW validation, certificate checks,
# watermarks, persist-before-send) must be caught by the consensus test suite at
# a reduced seed count. Survivors are listed in docs/MUTANTS.md with a test that
# now kills each one or the reason it is equivalent.
#
#   consensus/mutants.sh               the safety-critical functions (~150 mutants)
#   MUTANTS_ALL=1 consensus/mutants.sh every function of the six files
#   MUTANTS_RE='regex' consensus/mutants.sh  only the functions it names
#   MUTANTS_OUT=dir                    where results go (default target/mutants)
#
# Results: $MUTANTS_OUT/mutants.out/{caught,missed,timeout,unviable}.txt
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo mutants --version >/dev/null 2>&1; then
  echo "installing cargo-mutants"
  cargo install --locked cargo-mutants
fi

files=(-f consensus/src/replica.rs -f consensus/src/safety.rs
       -f consensus/src/messages.rs -f consensus/src/types.rs
       -f consensus/src/choice.rs -f consensus/src/ahead.rs)
filter=(--re "${MUTANTS_RE:-quorum|select|on_new_view|retry_new_view|verify_view_change|verify_summary|proven_claims|claims_to_prove|refresh_own_view_change|ask_again|out_of_window|Ahead::room|Certificate::verify|CheckpointProof::verify|in_window|persist_and|check_vote|contradicts_delivered}")
if [[ "${MUTANTS_ALL:-0}" == 1 ]]; then
  filter=()
fi

# The suite at a reduced seed count: each mutant costs one build and one run.
export MOSAIC_SIM_SEEDS="${MOSAIC_SIM_SEEDS:-200}"
export MOSAIC_REWRITER_SEEDS="${MOSAIC_REWRITER_SEEDS:-30}"

exec cargo mutants --package mosaic-consensus "${files[@]}" "${filter[@]}" \
  --test-tool nextest --no-shuffle -j 1 --timeout 300 \
  --output "${MUTANTS_OUT:-target/mutants}" "$@"
