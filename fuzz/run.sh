#!/usr/bin/env bash
# Run one AFL target for a wall-clock budget: ./run.sh <target> <seconds>
# (resumes when out/<target> exists). Seeds: `target/release/write_seeds in`.
set -euo pipefail
cd "$(dirname "$0")"
t=$1; secs=$2
in=in/$t
[ -d "out/$t/default/queue" ] && in=-
AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 \
  cargo afl fuzz -i "$in" -o "out/$t" -V "$secs" "target/release/$t"
