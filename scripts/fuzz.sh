#!/usr/bin/env bash
# Fuzzes every parser of input that comes from outside (fuzz/fuzz_targets/*.rs: access tokens,
# pagination cursors, Socket.IO payloads, bus events, REST bodies) with cargo-fuzz and libFuzzer.
#
#   scripts/fuzz.sh                  # the short run: 20 s per target (about 3 minutes in all,
#                                    # plus the first build, which takes a while)
#   scripts/fuzz.sh 600              # the longer run: 10 minutes per target (about an hour)
#   scripts/fuzz.sh 60 cursor event  # only these targets
#
# It builds every target once (release, debug assertions, AddressSanitizer, in fuzz/target),
# then runs each one for SECONDS (-max_total_time) from a fresh temporary corpus holding the
# seeds of fuzz/seeds/<target>/, one target after another. It exits non-zero when any target
# finds a crash (a panic or failed assertion, a sanitizer report, a timeout or running out of
# memory), after printing where the input was saved and how to reproduce it; the other targets
# still run.
#
# Only the stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags.
# cargo-fuzz is installed when missing (`cargo install cargo-fuzz --locked`); libFuzzer is
# built from source by the libfuzzer-sys crate, which needs a C++ compiler.
#
# Environment:
#   FUZZ_SANITIZER=none    build without AddressSanitizer (faster runs; the default is address)
#   FUZZ_KEEP_CORPUS=1     grow fuzz/corpus/<target>/ instead of a temporary corpus, and start
#                          from it next time (worth it for long runs; fuzz/corpus is ignored by git)
#   FUZZ_TIMEOUT=10        seconds one input may take before it counts as a hang
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
fuzz_dir="$root/fuzz"
seconds=${1:-20}
shift || true
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 1)); then
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi
sanitizer=${FUZZ_SANITIZER:-address}
timeout=${FUZZ_TIMEOUT:-10}
export RUSTC_BOOTSTRAP=1
export PATH="$HOME/.cargo/bin:$PATH"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
if ! command -v c++ >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
        echo "==> installing a C++ compiler (libFuzzer is built from source)"
        apt-get update -qq && apt-get install -y -qq g++ >/dev/null
    else
        echo "error: libFuzzer needs a C++ compiler (c++); install g++ or clang" >&2
        exit 1
    fi
fi

cd "$fuzz_dir"
mapfile -t all_targets < <(cargo fuzz list)
if (($# > 0)); then
    targets=("$@")
    for target in "${targets[@]}"; do
        if ! printf '%s\n' "${all_targets[@]}" | grep -qx "$target"; then
            echo "error: no fuzz target $target (there are: ${all_targets[*]})" >&2
            exit 2
        fi
    done
else
    targets=("${all_targets[@]}")
fi

echo "==> building ${#all_targets[@]} fuzz targets (sanitizer: $sanitizer)"
build_started=$SECONDS
cargo fuzz build --sanitizer "$sanitizer"
echo "==> built in $((SECONDS - build_started)) s"

triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir="$fuzz_dir/target/$triple/release"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

failed=()
summary=()
index=0
for target in "${targets[@]}"; do
    index=$((index + 1))
    if [[ ${FUZZ_KEEP_CORPUS:-} == 1 ]]; then
        corpus="$fuzz_dir/corpus/$target"
    else
        corpus="$work/corpus-$target"
    fi
    mkdir -p "$corpus" "$fuzz_dir/artifacts/$target"
    if [[ -d $fuzz_dir/seeds/$target ]]; then
        cp -n "$fuzz_dir/seeds/$target"/* "$corpus"/ 2>/dev/null || true
    fi
    log="$work/$target.log"
    marker="$work/$target.started"
    touch "$marker"
    echo "==> [$index/${#targets[@]}] $target: fuzzing for $seconds s ($(find "$corpus" -type f | wc -l) inputs to start from)"
    status=0
    "$bin_dir/$target" "$corpus" \
        -max_total_time="$seconds" \
        -timeout="$timeout" \
        -artifact_prefix="$fuzz_dir/artifacts/$target/" \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    coverage=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 || true)
    if ((status == 0)); then
        echo "    ok: ${runs:-?} inputs run (${speed:-?}/s), ${coverage:-cov: ?}, corpus $(find "$corpus" -type f | wc -l)"
        summary+=("$target: ok, ${runs:-?} runs")
    else
        failed+=("$target")
        echo "    FAILED (libFuzzer exit status $status); the end of its output:"
        grep -v '^#\|^INFO\|^stat::' "$log" | tail -40 | sed 's/^/    | /'
        found=0
        while IFS= read -r artifact; do
            found=1
            echo "    input saved as: $artifact"
            echo "    reproduce:  cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer $sanitizer $target $artifact"
            echo "    or run:     $bin_dir/$target $artifact"
            echo "    minimize:   cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz tmin --sanitizer $sanitizer $target $artifact"
        done < <(find "$fuzz_dir/artifacts/$target" -type f -newer "$marker")
        if ((found == 0)); then
            echo "    (libFuzzer saved no input)"
        fi
        cp "$log" "$fuzz_dir/artifacts/$target/failed-run.log"
        echo "    whole log: $fuzz_dir/artifacts/$target/failed-run.log"
        summary+=("$target: FAILED, ${runs:-?} runs")
    fi
done

echo "==> summary ($seconds s per target)"
printf '    %s\n' "${summary[@]}"
if ((${#failed[@]} > 0)); then
    echo "==> crashes found in: ${failed[*]}" >&2
    exit 1
fi
echo "==> no crash found"
