package activate

// The target's side of an activation, as POSIX sh run as root. Each deploy
// to a host has a directory Dir/ID holding its state in small files:
//
//	state            "locked" (the keeper holds the host's lock) or "busy"
//	holder           the lock's holder, when busy
//	stale            the holder recorded by a deploy that died holding it
//	previous         readlink /run/current-system before anything changed
//	previous-profile the system profile's store path before anything changed
//	action, toplevel what this deploy activates
//	lease.pid        the shell of deployctl's session (alive = deployctl is there)
//	switch.log/.status/.pid, rollback.log/.status/.pid, watchdog.log/.status/.pid
//	                 detached jobs: output, exit status, process
//	claim/by         who decided the host's fate after the switch: the
//	                 watchdog (it rolls back), "rollback" (deployctl rolls
//	                 back) or "keep" (deployctl disarmed the watchdog);
//	                 mkdir makes the first claimant the only one
//	checkin          deployctl's check-in: the seconds the watchdog waits
//	                 more, from now
//	release          deployctl's word that it no longer needs the lock
//	released         the keeper's word that it has let go
//
// The keeper is a detached process holding an exclusive flock on Dir/lock
// (whose content is the holder) for the deploy's lifetime: a second
// deploy finds it held and is refused with the holder; a deploy whose
// keeper is gone left only the content, which the next one takes over.

// Dir holds deployctl's state on a target (a tmpfs: a reboot clears it).
const Dir = "/run/deployctl"

// rollbackFn restores the recorded system: the profile back to the
// recorded path (switch, boot), then that system's own
// switch-to-configuration, and checks /run/current-system.
const rollbackFn = `rollback() {
  prev=$(cat "$w/previous" 2>/dev/null); prof=$(cat "$w/previous-profile" 2>/dev/null); action=$(cat "$w/action")
  case $action in
    switch|test) [ -n "$prev" ] || { echo "no system ran before this deploy: nothing to roll back to" >&2; return 3; } ;;
    boot) [ -n "$prof" ] || { echo "the system profile was empty before this deploy: nothing to roll back to" >&2; return 3; } ;;
  esac
  case $action in
    switch|boot) if [ -n "$prof" ]; then nix-env -p /nix/var/nix/profiles/system --set "$prof" || return 3; fi ;;
  esac
  case $action in
    switch) "$prev/bin/switch-to-configuration" switch ;;
    test) "$prev/bin/switch-to-configuration" test ;;
    boot) "$prof/bin/switch-to-configuration" boot ;;
  esac
  st=$?
  if [ "$action" != boot ] && [ "$(readlink /run/current-system)" != "$prev" ]; then
    echo "after the rollback /run/current-system is $(readlink /run/current-system), not $prev" >&2
    return 3
  fi
  return $st
}
`

// recordFn records in $w the system that runs and the system profile's,
// for rollbackFn.
const recordFn = `record() {
  readlink /run/current-system > "$w/previous"
  if [ -e /nix/var/nix/profiles/system ]; then readlink -f /nix/var/nix/profiles/system > "$w/previous-profile"; else : > "$w/previous-profile"; fi
}
`

// keeperScript ($1 = id, $2 = holder) takes the lock, records the system,
// then keeps the lock while a job runs, and after that until released, or
// until deployctl's session has been gone for 30 s. A job whose process
// is gone without a status counts as ended. Letting go, it sets the state
// to "released": a deployctl that comes back later holds nothing.
const keeperScript = `d=` + Dir + `; w=$d/$1
` + recordFn + `running() {
  for p in "$w"/*.pid; do
    [ -e "$p" ] && [ "$p" != "$w/lease.pid" ] || continue
    [ ! -e "${p%.pid}.status" ] && kill -0 "-$(cat "$p")" 2>/dev/null && return 0
  done
  return 1
}
exec 9>>"$d/lock" || { echo "cannot open $d/lock" > "$w/state.err"; exit 1; }
# -w: a deployctl status that tests the lock holds it for an instant.
if ! flock -w 2 9; then
  cat "$d/lock" > "$w/holder"; echo busy > "$w/state"; exit 0
fi
cat "$d/lock" > "$w/stale"
printf '%s\n' "$2" > "$d/lock"
printf '%s\n' "$2" > "$w/holder.json"
record
echo locked > "$w/state"
gone=0
while :; do
  if running; then
    gone=0
  elif [ -e "$w/release" ]; then
    break
  elif kill -0 "$(cat "$w/lease.pid" 2>/dev/null)" 2>/dev/null; then
    gone=0
  else
    gone=$((gone + 1))
    [ "$gone" -lt 150 ] || break
  fi
  sleep 0.2
done
# The jobs' units were kept for their waiters: gone now.
if [ -d /run/systemd/system ]; then
  for j in switch rollback watchdog; do systemctl stop --no-block "deployctl-$1-$j.service" 2>/dev/null; done
  systemctl reset-failed "deployctl-$1-*" 2>/dev/null
fi
echo released > "$w/state"
: > "$d/lock"
touch "$w/released"
`

// leaseScript ($1 = id, $2 = holder, $3 = action, $4 = toplevel) is
// deployctl's session on the host: it starts the keeper (detached as the
// jobs are: logind's cleanup of the session must not take the lock), or, given
// "resume" as $3, rejoins it), reports the lock and the recorded system,
// and lives until deployctl says "release" (and the keeper has let go) or
// "leave" (the keeper lets go once the jobs under way end), or goes.
const leaseScript = checkID + `d=` + Dir + `; w=$d/$1
` + detachFn + `if [ "$3" != resume ]; then
  case $3 in switch|boot|test) ;; *) echo "not an action: $3" >&2; exit 64 ;; esac
  case $2 in *'
'*) echo "not a holder: $2" >&2; exit 64 ;; esac
  store_path "$4"
  mkdir -p "$w" || exit 70
  printf '%s\n' "$3" > "$w/action"; printf '%s\n' "$4" > "$w/toplevel"
  echo $$ > "$w/lease.pid"
  detach collect "$1-keeper" "deployctl lock keeper of deploy $1" "$keeper" deployctl-keeper "$1" "$2" 2>"$w/keeper.log"
  i=0
  while [ ! -e "$w/state" ] && [ ! -e "$w/state.err" ] && [ "$i" -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
else
  [ -e "$w/state" ] || { echo "no deploy $1 on this host" >&2; exit 70; }
  [ "$(cat "$w/state")" = locked ] || { echo "the host's lock was let go while the connection was lost (no job ran and deployctl was gone for 30 s)" >&2; exit 70; }
  echo $$ > "$w/lease.pid"
fi
case $(cat "$w/state" 2>/dev/null) in
  locked) ;;
  busy) echo busy; cat "$w/holder"; exit 0 ;;
  *) echo "the lock keeper did not start: $(cat "$w/state.err" "$w/keeper.log" 2>/dev/null)" >&2; exit 70 ;;
esac
printf 'previous %s\n' "$(cat "$w/previous")"
printf 'profile %s\n' "$(cat "$w/previous-profile")"
[ ! -s "$w/stale" ] || printf 'stale %s\n' "$(cat "$w/stale")"
echo ready
while read -r word; do
  case $word in
    release) touch "$w/release" ;;
    leave) touch "$w/release"; exit 0 ;;
    *) continue ;;
  esac
  # Wait (a little) for the keeper to let go, so that a deploy right
  # after this one finds the host free.
  i=0
  while [ ! -e "$w/released" ] && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  exit 0
done
`

// startJobScript ($1 = id, $2 = job: switch, rollback or watchdog, $3 =
// a claim or "", $4 = the watchdog's confirm timeout in seconds) starts
// the job detached from the session (a systemd-run transient unit where
// systemd runs, a setsid child otherwise), in a subshell (an exit in the
// job ends only the job), with $w its deploy's directory, and its pid,
// output and exit status in files there. Given a claim, it first claims
// the host's fate and, when another claimant was first, prints "claimed"
// and starts nothing. The log exists before the job starts, so that a
// waiter can follow it at once. Each job runs once per deploy: a job
// started already (by a try whose connection dropped) is not started
// again.
const startJobScript = checkID + `w=` + Dir + `/$1
case $2 in
  switch) body=$job_switch ;;
  rollback) body=$job_rollback ;;
  watchdog)
    case ${4-} in ''|*[!0-9]*) echo "not a number of seconds: ${4-}" >&2; exit 64 ;; esac
    body="tmo=$4
$job_watchdog" ;;
  *) echo "no job $2" >&2; exit 64 ;;
esac
[ "$(cat "$w/state" 2>/dev/null)" = locked ] || { echo "this deploy does not hold the host's lock" >&2; exit 70; }
if [ -n "$3" ]; then ` + claimFn + `claim "$3" || { echo claimed; exit 0; }; fi
[ ! -e "$w/$2.started" ] || { echo started; exit 0; }
: > "$w/$2.started"
: > "$w/$2.log"
job='[ -z "$INVOCATION_ID" ] || echo "$INVOCATION_ID" > "$1/$2.unit"; echo $$ > "$1/$2.pid.tmp"; mv "$1/$2.pid.tmp" "$1/$2.pid"; w=$1; ( '"$body"'
) >> "$w/$2.log" 2>&1; st=$?; echo $st > "$w/$2.status.tmp"; mv "$w/$2.status.tmp" "$w/$2.status"; exit $st'
` + detachFn + `detach keep "$1-$2" "deployctl $2 job of deploy $1" "$job" deployctl-job "$w" "$2"
i=0
while [ ! -e "$w/$2.pid" ] && [ "$i" -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
echo started
`

// detachFn runs a command ($4, with $0 and arguments after it) detached
// from the SSH session: in a transient unit deployctl-$2 (described $3)
// where systemd runs, outside the session's cgroup, so that neither a lost
// connection nor logind's cleanup can touch it; as a setsid child
// otherwise, or when systemd-run fails. $1 is "collect" (the unit goes
// when it ends) or "keep" (the unit stays once it has ended, for its
// waiter to read how, and every exit status counts as the unit's success,
// so that a switch's 4 or 100 leaves no failed unit behind: the keeper
// stops it when it lets go).
const detachFn = `detach() {
  mode=$1 u=$2 d=$3; shift 3
  if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then
    ok=; i=1
    while [ "$i" -le 255 ]; do ok="$ok $i"; i=$((i + 1)); done
    if (
      # systemd expands $VAR in a unit's command line: $$ is a $.
      n=$#; i=0
      while [ "$i" -lt "$n" ]; do set -- "$@" "$(printf '%s' "$1" | sed 's/\$/$$/g')"; shift; i=$((i + 1)); done
      if [ "$mode" = keep ]; then
        exec systemd-run --unit="deployctl-$u" --description="$d" --property=RemainAfterExit=yes --property="SuccessExitStatus=$ok" --quiet --property=Type=exec -E PATH -- sh -c "$@"
      fi
      exec systemd-run --unit="deployctl-$u" --description="$d" --collect --quiet --property=Type=exec -E PATH -- sh -c "$@"
    ); then
      return 0
    fi
    # A unit the failed start left behind must not pass for the job's.
    systemctl reset-failed "deployctl-$u" 2>/dev/null
    echo "systemd-run failed: deployctl-$u runs as a setsid child" >&2
  fi
  setsid sh -c "$@" </dev/null >/dev/null 2>&1 &
}
`

// switchJob sets the profile (switch, boot) and runs
// switch-to-configuration, in one job: nothing comes between. It exits 90
// (profileFailed) when the profile could not be set.
const switchJob = `action=$(cat "$w/action"); top=$(cat "$w/toplevel")
run() {
  case $action in
    switch|boot) nix-env -p /nix/var/nix/profiles/system --set "$top" || return 90 ;;
  esac
  "$top/bin/switch-to-configuration" "$action"
}
run`

// rollbackJob runs rollbackFn.
const rollbackJob = rollbackFn + `rollback`

// RecordArgv records, in the directory dir on the host, what runs there
// now and the action about to run, for RollbackArgv: as an activation
// does, without its lock and jobs (for a person deploying by hand).
func RecordArgv(dir, action string) []string {
	return []string{"sh", "-c", recordFn + `w=$1; mkdir -p "$w" && printf '%s\n' "$2" > "$w/action" && record`, "deployctl-record", dir, action}
}

// RollbackArgv goes back to the system RecordArgv recorded in dir, as an
// activation's rollback does.
func RollbackArgv(dir string) []string {
	return []string{"sh", "-c", rollbackFn + `w=$1; rollback`, "deployctl-rollback", dir}
}

// waitJobScript ($1 = id, $2 = job) streams the job's output to standard
// error while it runs, then prints its exit status. A job the watchdog
// starts may not have its pid file yet.
const waitJobScript = checkID + checkJob + `w=` + Dir + `/$1
i=0
while [ ! -e "$w/$2.pid" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
tail -n +1 -s 0.1 -f --pid="$(cat "$w/$2.pid")" "$w/$2.log" >&2 2>/dev/null
` + awaitStatus + reportStatus

// resultScript ($1 = id, $2 = job) waits for the job to end and prints its
// exit status and the end of its output, for a caller that reconnected.
const resultScript = checkID + checkJob + `w=` + Dir + `/$1
` + awaitStatus + `tail -c 2000 "$w/$2.log" >&2
` + reportStatus

// awaitStatus waits for job $2 to end and sets st to its exit status, or
// stopped to how it ended without one. Where the job ran as a unit (the
// job recorded the unit's invocation), systemd says how it ended, as the
// unit stays once it has: its Result, ExecMainCode and ExecMainStatus,
// which tell an exit status from a kill (the job gone before it could
// write its status file). Elsewhere the status file is the answer. A job
// ends when nothing of its process group is left (a subshell of a killed
// job may run on).
const awaitStatus = `unit=deployctl-$1-$2.service st= stopped=
prop() { systemctl show -p "$1" --value "$unit" 2>/dev/null; }
pidfile=$w/$2.pid
alive() { p=$(cat "$pidfile" 2>/dev/null) && [ -n "$p" ] && kill -0 "-$p" 2>/dev/null; }
i=0
while [ ! -e "$w/$2.pid" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
while [ ! -e "$w/$2.status" ] && alive; do sleep 0.1; done
sleep 0.1
asUnit=
if [ -d /run/systemd/system ] && [ -s "$w/$2.unit" ] && [ "$(prop InvocationID)" = "$(cat "$w/$2.unit")" ]; then
  # Wait for systemd to see the end (a unit being stopped takes its time).
  i=0
  while [ "$i" -lt 1200 ]; do
    case $(prop ActiveState)/$(prop SubState) in
      failed/*|active/exited|inactive/*) asUnit=1; break ;;
    esac
    sleep 0.1; i=$((i + 1))
  done
fi
if [ -n "$asUnit" ]; then
  result=$(prop Result) code=$(prop ExecMainCode) ust=$(prop ExecMainStatus)
  if [ "$code" = 1 ] && { [ "$result" = success ] || [ "$result" = exit-code ]; }; then
    st=$ust
  elif [ "$code" = 2 ] || [ "$code" = 3 ]; then
    stopped="the $2 job was killed by signal $ust (systemd: $unit, Result=$result)"
  else
    stopped="the $2 job ended without an exit status (systemd: $unit, Result=$result)"
  fi
elif [ -e "$w/$2.status" ]; then
  st=$(cat "$w/$2.status")
else
  stopped="the $2 job's process is gone without an exit status (killed?)"
fi
`

// reportStatus prints awaitStatus's answer: the exit status, or how the
// job was stopped (on stderr, last) with exit status 71 (jobStopped).
const reportStatus = `if [ -n "$stopped" ]; then echo "$stopped" >&2; exit 71; fi
echo "$st"
`

// watchdogJob ($tmo = the confirm timeout in seconds) is the dead-man's
// switch, started before the switch: once the switch has ended, deployctl
// must check in (Dir/ID/checkin, written over a new connection) within
// $tmo seconds, which moves the deadline by the seconds it names, and then
// claim the host's fate before the deadline passes; otherwise the watchdog
// claims it and rolls back. It also goes when the switch never starts and
// deployctl is gone.
const watchdogJob = rollbackFn + claimFn + `gone=0
while [ ! -e "$w/switch.status" ]; do
  [ ! -d "$w/claim" ] || exit 0
  if [ ! -e "$w/switch.pid" ] && [ "$(cat "$w/state")" != locked ]; then
    echo "the deploy let go of the host before its switch started"; exit 0
  fi
  # Before the switch, deployctl gone for 30 s (or done) ends the watch:
  # the keeper waits for this job, so waiting for it would hold the lock.
  if [ ! -e "$w/switch.pid" ]; then
    if [ -e "$w/release" ]; then echo "the deploy ended before its switch started"; exit 0; fi
    if kill -0 "$(cat "$w/lease.pid" 2>/dev/null)" 2>/dev/null; then gone=0; else gone=$((gone + 1)); fi
    [ "$gone" -lt 150 ] || { echo "deployctl went away before the switch started"; exit 0; }
  fi
  if [ -e "$w/switch.pid" ] && [ ! -e "$w/switch.status" ] && ! kill -0 "-$(cat "$w/switch.pid")" 2>/dev/null; then
    sleep 0.3; [ -e "$w/switch.status" ] || break
  fi
  sleep 0.2
done
deadline=$(( $(date +%s) + tmo ))
exec 8>"$w/claim.lock"
while :; do
  while [ "$(date +%s)" -lt "$deadline" ]; do
    [ ! -d "$w/claim" ] || exit 0
    [ ! -e "$w/checkin" ] || break
    sleep 0.2
  done
  # Decide under claim.lock, so that a check-in is either seen here or
  # told that the watchdog has acted.
  flock 8
  if [ -e "$w/checkin" ]; then
    more=$(cat "$w/checkin"); rm -f "$w/checkin"
    flock -u 8
    echo "deployctl checked in: $more s more"
    deadline=$(( $(date +%s) + more ))
    continue
  fi
  if [ "$(date +%s)" -lt "$deadline" ]; then flock -u 8; continue; fi
  claim watchdog || exit 0
  flock -u 8
  break
done
echo "no word from deployctl before the deadline: rolling back"
: > "$w/rollback.log"
echo $$ > "$w/rollback.pid"
rollback >> "$w/rollback.log" 2>&1
st=$?
echo $st > "$w/rollback.status.tmp"; mv "$w/rollback.status.tmp" "$w/rollback.status"
` + watchdogJournal

// claimFn claims the host's fate for $1: mkdir lets only the first
// claimant through (and the same one again).
const claimFn = `claim() {
  if mkdir "$w/claim" 2>/dev/null; then echo "$1" > "$w/claim/by"; else [ "$(cat "$w/claim/by" 2>/dev/null)" = "$1" ]; fi
}
`

// claimScript ($1 = id, $2 = claimant) claims the host's fate: "ok", or
// "claimed" when the watchdog was first.
const claimScript = checkID + `w=` + Dir + `/$1
` + claimFn + `if claim "$2"; then echo ok; else echo claimed; fi
`

// checkinScript ($1 = id, $2 = seconds) is deployctl's check-in with the
// watchdog: "ok", or "claimed" when the watchdog has already acted.
const checkinScript = checkID + `case $2 in ''|*[!0-9]*) echo "not a number of seconds: $2" >&2; exit 64 ;; esac
w=` + Dir + `/$1
exec 8>"$w/claim.lock"; flock 8
[ ! -d "$w/claim" ] || { echo claimed; exit 0; }
echo "$2" > "$w/checkin.tmp" && mv "$w/checkin.tmp" "$w/checkin" && echo ok
`

// watchdogJournal appends the watchdog's rollback to the journal, as
// deployctl may not be there to: the line deployctl would write, from the
// deploy's files ($st is the rollback's status).
const watchdogJournal = `journal=` + Journal + `
holder() {
  v=$(sed -n 's/.*"'"$1"'":\("[^"\\]*"\).*/\1/p' "$w/holder.json" 2>/dev/null)
  echo "${v:-\"unknown\"}"
}
result="rolled back"; [ "$st" = 0 ] || result=failed
mkdir -p "${journal%/*}"
printf '{"time":"%s","id":"%s","user":%s,"machine":%s,"action":"%s","previous":"%s","previousProfile":"%s","new":"%s","result":"%s","status":%s,"rolledBack":%s,"byWatchdog":true,"error":"no new connection checked in before the watchdog deadline"}\n' \
  "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(basename "$w")" "$(holder user)" "$(holder machine)" "$(cat "$w/action")" \
  "$(cat "$w/previous")" "$(cat "$w/previous-profile")" "$(cat "$w/toplevel")" "$result" "$(cat "$w/switch.status" 2>/dev/null || echo 0)" \
  "$([ "$st" = 0 ] && echo true || echo false)" >> "$journal"
`
