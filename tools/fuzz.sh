#!/usr/bin/env bash
# Builds and runs the libFuzzer harnesses of tests/fuzz (clang, ASan + UBSan) in build-fuzz/.
#   tools/fuzz.sh build                      configure with clang (-DMDI_FUZZ=ON) and build them
#   tools/fuzz.sh run [SECONDS] [HARNESS...]  run each harness (default: all) for SECONDS (60)
# Harnesses: bpe char h5 safetensors cli. Each works on build-fuzz/corpus/fuzz_NAME, seeded from
# tests/fuzz/corpus/fuzz_NAME (h5: also the fixture models; safetensors: hf_tiny's checkpoint) and
# tests/fuzz/regressions/fuzz_NAME. Crash files go to build-fuzz/crashes/fuzz_NAME/, the full
# libFuzzer output to build-fuzz/logs/fuzz_NAME.log. Exits 1 if a harness crashed.
# MDI_FUZZ_GPT2_DIR (encoder.json + vocab.bpe) gives fuzz_bpe GPT-2's vocabulary; by default the
# files that ctest bpe_vs_js fetched into build/, if any, else a small built-in one.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=$root/build-fuzz
all=(bpe char h5 safetensors cli)

usage() {
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

build_fuzzers() {
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMDI_FUZZ=ON -DMDI_BUILD_TESTS=OFF
  cmake --build "$build" --target fuzzers
}

# Seeds a harness's working corpus (never overwrites: libFuzzer names its files by content).
seed() {
  local name=$1 corpus=$2
  mkdir -p "$corpus"
  cp -n "$root/tests/fuzz/corpus/fuzz_$name"/* "$corpus"/ 2>/dev/null || true
  case $name in
    h5) cp -n "$root"/tests/fixtures/*.h5 "$corpus"/ ;;
    safetensors) cp -n "$root/tests/fixtures/hf_tiny/model.safetensors" "$corpus/hf_tiny.safetensors" ;;
  esac
}

# The value of "key: VALUE" in libFuzzer's last status line (cov:, ft:, corp:), or "-".
status_field() {
  local log=$1 key=$2 line
  line=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  [[ $line =~ $key:\ ([^ ]+) ]] && echo "${BASH_REMATCH[1]}" || echo "-"
}

stat_field() {  # "stat::KEY: VALUE" of -print_final_stats, or "-"
  local v
  v=$(sed -n "s/^stat::$2: *//p" "$1" | tail -n 1)
  echo "${v:--}"
}

run_fuzzers() {
  local secs=${1:-60}
  shift || true
  [[ $secs =~ ^[0-9]+$ ]] || usage
  local names=("$@")
  [ ${#names[@]} -gt 0 ] || names=("${all[@]}")
  local name
  for name in "${names[@]}"; do
    [[ " ${all[*]} " == *" $name "* ]] || { echo "fuzz.sh: unknown harness '$name' (${all[*]})"; exit 2; }
  done
  mkdir -p "$build/logs"
  if ! build_fuzzers >"$build/logs/build.log" 2>&1; then  # incremental: never a stale harness
    tail -n 30 "$build/logs/build.log"
    echo "fuzz.sh: the build failed (full log: $build/logs/build.log)"
    exit 1
  fi
  if [ -z "${MDI_FUZZ_GPT2_DIR:-}" ] && [ -f "$root/build/tests/bpe_ref/package/encoder.json" ]; then
    export MDI_FUZZ_GPT2_DIR=$root/build/tests/bpe_ref/package
  fi
  local supp=$root/tests/sanitize
  # intercept_tls_get_addr=0: see MDI_ASAN_OPTIONS in CMakeLists.txt (LLVM 14's tracer crash).
  export ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0:intercept_tls_get_addr=0
  export LSAN_OPTIONS=suppressions=$supp/lsan.supp:print_suppressions=0
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  local failed=0 rows=() corpus crashes log rc regress
  for name in "${names[@]}"; do
    corpus=$build/corpus/fuzz_$name crashes=$build/crashes/fuzz_$name log=$build/logs/fuzz_$name.log
    regress=()
    [ -d "$root/tests/fuzz/regressions/fuzz_$name" ] && regress=("$root/tests/fuzz/regressions/fuzz_$name")
    seed "$name" "$corpus"
    mkdir -p "$crashes"
    touch "$log.start"  # crash files newer than this are this run's
    echo "fuzz_$name: ${secs} s ..."
    rc=0
    nice -n 10 "$build/tests/fuzz/fuzz_$name" -max_total_time="$secs" -rss_limit_mb=2048 \
      -malloc_limit_mb=2048 -timeout=30 -print_final_stats=1 -artifact_prefix="$crashes/" \
      "$corpus" "${regress[@]}" >"$log" 2>&1 || rc=$?
    local found
    found=$(find "$crashes" -type f -newer "$log.start" \( -name 'crash-*' -o -name 'leak-*' \
      -o -name 'oom-*' -o -name 'timeout-*' \) | wc -l)
    if [ "$rc" -ne 0 ] || [ "$found" -gt 0 ]; then
      failed=1
      echo "fuzz_$name: FAILED (exit $rc); crash files in $crashes/, output in $log:"
      grep -E 'ERROR|SUMMARY|FUZZ_CHECK|==[0-9]+==' "$log" | head -n 8 || true
    fi
    rows+=("$(printf '%-16s %10s %8s %7s %7s %11s %7s' "fuzz_$name" \
      "$(stat_field "$log" number_of_executed_units)" "$(stat_field "$log" average_exec_per_sec)" \
      "$(status_field "$log" cov)" "$(status_field "$log" ft)" "$(status_field "$log" corp)" "$found")")
  done
  printf '%-16s %10s %8s %7s %7s %11s %7s\n' harness execs exec/s cov ft corpus crashes
  printf '%s\n' "${rows[@]}"
  return $failed
}

case ${1:-} in
  build) build_fuzzers ;;
  run) shift; run_fuzzers "$@" ;;
  *) usage ;;
esac
