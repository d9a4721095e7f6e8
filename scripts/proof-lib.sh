# shellcheck shell=bash
# Time limits and environment for the GPU proof scripts (gpu-proof.sh, speed-vs-peer.sh).
# Sourced, never run; tests/proof_scripts.rs checks every limit here on the CPU machine.
#
# Limits nest: a call holds stages, a stage holds runs. Each level exports its deadline
# (PROOF_DEADLINE_MS, milliseconds since the epoch) and every limit inside is cut to what is
# left of it, so no inner limit can outlast an outer one. Why not one `timeout` per level
# alone: GNU timeout puts itself and its command in a process group of its own and, when its
# time is up, signals only that group. A run's timeout inside a stage's is in another group, so
# the stage's signal never reaches it, and the stage's `| tee` then waits for that orphan to end
# by itself (a 6 s run kept a 2 s stage alive for 6 s). With every limit cut to its parent's
# deadline, each group ends by its own timer at the latest when its parent's does.
#
# A run is killed as a whole: SIGTERM to its process group, SIGKILL after PROOF_KILL_AFTER
# seconds (default 5) to one that ignores it, and SIGKILL to whatever is left in the group once
# the run has ended (a test's child process, a Python peer under a shell). `--foreground` is not
# used: it would signal only the run's first process and leave its children running.

# Milliseconds since the epoch (bash's clock: no process started).
proof_now_ms() {
  local t=${EPOCHREALTIME/[^0-9]/}
  echo $((10#$t / 1000))
}

# proof_ms SECONDS: whole or decimal seconds ("2", "0.5") as milliseconds.
proof_ms() {
  local s=$1 whole frac
  whole=${s%%.*}
  frac=000
  [[ $s == *.* ]] && frac="${s#*.}000"
  echo $((10#${whole:-0} * 1000 + 10#${frac:0:3}))
}

# proof_secs MS: milliseconds as decimal seconds for timeout(1) ("2.000").
proof_secs() {
  printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000))
}

# proof_left_ms [SECONDS]: SECONDS (default: no limit of its own) cut to what is left of the
# enclosing deadline, in milliseconds; negative once that deadline has passed.
proof_left_ms() {
  local want=${1:-} now left
  now=$(proof_now_ms)
  if [[ -n $want ]]; then left=$(proof_ms "$want"); else left=$((1 << 40)); fi
  if [[ -n ${PROOF_DEADLINE_MS:-} ]] && ((PROOF_DEADLINE_MS - now < left)); then
    left=$((PROOF_DEADLINE_MS - now))
  fi
  echo "$left"
}

# proof_limit_shell SECONDS: everything this shell runs from now on (through `within`) ends
# within SECONDS, or sooner where an enclosing deadline says so.
proof_limit_shell() {
  local left
  left=$(proof_left_ms "$1")
  PROOF_DEADLINE_MS=$(($(proof_now_ms) + left))
  export PROOF_DEADLINE_MS
}

# within SECONDS COMMAND...: runs COMMAND (a program: export functions and call them through
# `bash -c`) for at most SECONDS, cut to the enclosing deadline, stdin closed. Exit status:
# COMMAND's; 124 when its time ran out (137 when it had to be killed); 124 without starting it
# when no time is left.
within() {
  local left pid rc
  left=$(proof_left_ms "$1")
  shift
  ((left >= 100)) || return 124
  # The limits inside end a little sooner (1/20, at most 1 s), so that a run cut short is named
  # by the stage around it and the runs after it are listed as not started, before this limit
  # (the backstop) ends the whole.
  local margin=$((left / 20 < 1000 ? left / 20 : 1000))
  # In the background so that its pid, which timeout makes its process group's id, is known.
  PROOF_DEADLINE_MS=$(($(proof_now_ms) + left - margin)) \
    timeout --kill-after="${PROOF_KILL_AFTER:-5}" "$(proof_secs "$left")" "$@" < /dev/null &
  pid=$!
  # This shell stopped (an enclosing limit, Ctrl-C) stops the command at once, not at its limit.
  # shellcheck disable=SC2064 # $pid is meant to be expanded now
  trap "kill -TERM -- -$pid 2> /dev/null; exit 143" INT TERM
  wait "$pid" 2> /dev/null # (no "Killed" notice: the caller names the timeout)
  rc=$?
  trap - INT TERM
  # Nothing the command started outlives it (an orphan would hold the stage's pipe open).
  kill -KILL -- "-$pid" 2> /dev/null
  return "$rc"
}

# run SECONDS COMMAND...: one run inside a stage, announced, its failure or timeout named.
run() {
  proof_run "$*" "$@"
}

# proof_run SHOWN SECONDS COMMAND...: `run`, announcing COMMAND as SHOWN (paths in the bundle
# relative to it).
proof_run() {
  local shown=${1//${PROOF_BUNDLE:-\/nowhere}\//} left rc t0
  shift
  shown=${shown#* } # without its first word, the limit
  left=$(proof_left_ms "$1")
  shift
  if ((left < 100)); then
    echo "--- not started, no time left: $shown"
    return 124
  fi
  t0=$(proof_now_ms)
  echo "--- $shown (limit $(((left + 500) / 1000)) s)"
  within "$(proof_secs "$left")" "$@"
  rc=$?
  case $rc in
    0) ;;
    # (After a newline: the output cut short may have ended mid-line.)
    124 | 137) printf '\n--- TIMED OUT after %d s: %s\n' $((($(proof_now_ms) - t0) / 1000)) "$shown" ;;
    *) echo "--- FAILED (exit $rc): $shown" ;;
  esac
  return "$rc"
}

# Exit status of a stage that could not run here for reasons outside the project (a tool the
# machine's runtime does not support): logged as such, not counted as a failure. Such a stage
# prints one line beginning "unavailable" that says why.
PROOF_UNAVAILABLE=75

# stage NAME SECONDS COMMAND...: runs COMMAND (a program or an exported function) within
# SECONDS, its output also in $OUT/NAME.log. Exit status: COMMAND's, as `within` gives it.
stage() {
  local name=$1 want=$2 left t0 rc
  shift 2
  left=$(proof_left_ms "$want")
  t0=$(proof_now_ms)
  if ((left < 1000)); then
    echo "=== $name: not started, no time left in this call"
    return 124
  fi
  echo "=== $name (limit $(((left + 500) / 1000)) s)"
  # Through bash -c: timeout runs programs, and a stage is often a function (exported).
  within "$want" bash -c '"$@"' "$name" "$@" 2>&1 | tee "${OUT:?}/$name.log"
  rc=${PIPESTATUS[0]}
  local took=$((($(proof_now_ms) - t0) / 1000))
  [[ -z $(tail -c 1 "$OUT/$name.log") ]] || echo # the log cut mid-line
  case $rc in
    0) echo "=== $name: ok ($took s)" ;;
    "$PROOF_UNAVAILABLE")
      # The stage said why in a line of its own ("unavailable ...: <the tool's words>").
      echo "=== $name: not counted as a failure ($took s): $(grep '^unavailable' "$OUT/$name.log" | tail -1)" ;;
    124 | 137) echo "=== $name: TIMED OUT ($took s)" ;;
    *) echo "=== $name: FAILED (exit $rc, $took s)" ;;
  esac
  return "$rc"
}

# The directory of the toolkit's libnvrtc.so.13 (the driver's CUDA version), printed when the
# loader would not find it by itself: NVRTC_LIB_DIR if set, else the toolkit's usual places.
# A newer nvrtc elsewhere (a Python venv's) is not taken by accident.
proof_nvrtc_dir() {
  if [[ -n ${NVRTC_LIB_DIR:-} ]]; then
    echo "$NVRTC_LIB_DIR"
    return
  fi
  ldconfig -p 2> /dev/null | grep -q 'libnvrtc\.so\.13 ' && return
  local d
  for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda*/targets/*/lib; do
    if [[ -e $d/libnvrtc.so.13 ]]; then
      echo "$d"
      return
    fi
  done
}

# OUR_LD_LIBRARY_PATH: the LD_LIBRARY_PATH for OUR binaries only (train, the test and bench
# executables): the machine's own, with the toolkit's nvrtc first when it needs naming. Never
# exported as LD_LIBRARY_PATH: the PyTorch peer must load its own nvrtc and cudart, and a
# foreign one first on its path would break it.
proof_our_ld_library_path() {
  if [[ -z ${OUR_LD_LIBRARY_PATH+set} ]]; then
    local d
    d=$(proof_nvrtc_dir)
    OUR_LD_LIBRARY_PATH="${d}${d:+${LD_LIBRARY_PATH:+:}}${LD_LIBRARY_PATH:-}"
    export OUR_LD_LIBRARY_PATH
  fi
}

# run_ours SECONDS COMMAND...: `run` with OUR_LD_LIBRARY_PATH (for our binaries, never the peer).
run_ours() {
  proof_run "$*" "$1" env LD_LIBRARY_PATH="${OUR_LD_LIBRARY_PATH:-}" "${@:2}"
}

export -f proof_now_ms proof_ms proof_secs proof_left_ms within run proof_run run_ours
export PROOF_UNAVAILABLE
