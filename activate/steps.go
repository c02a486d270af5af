package activate

import (
	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/internal/shell"
	"github.com/deployctl/deployctl/push"
)

// checkID ends a step (exit 64) unless $1 is a deploy id: one name, for a
// directory under Dir.
const checkID = `case $1 in ''|.*|*[!A-Za-z0-9._-]*) echo "not a deploy id: $1" >&2; exit 64 ;; esac
`

// checkJob ends a step (exit 64) unless $2 is one of the jobs.
const checkJob = `case $2 in switch|rollback|watchdog) ;; *) echo "no job $2" >&2; exit 64 ;; esac
`

// The activation's steps on the target (see scripts.go). The jobs and the
// keeper are part of the steps that start them: chosen by name, never
// sent as code.
var (
	leaseStep = &remote.Step{Name: "lease", Body: remote.StorePathFn + "keeper=" + shell.Quote(keeperScript) + "\n" + leaseScript}
	jobStep   = &remote.Step{Name: "start-job", Body: "job_switch=" + shell.Quote(switchJob) + "\njob_rollback=" + shell.Quote(rollbackJob) +
		"\njob_watchdog=" + shell.Quote(watchdogJob) + "\n" + startJobScript}
	waitStep    = &remote.Step{Name: "wait-job", Body: waitJobScript}
	resultStep  = &remote.Step{Name: "job-result", Body: resultScript}
	claimStep   = &remote.Step{Name: "claim", Body: claimScript}
	checkinStep = &remote.Step{Name: "check-in", Body: checkinScript}
	statusStep  = &remote.Step{Name: "status", Body: statusScript}
	// dropRootStep removes the push's GC root when it points at $1.
	dropRootStep = &remote.Step{Name: "drop-push-root", Body: `[ "$(readlink ` + push.Root + `)" != "$1" ] || rm -f ` + push.Root}
	// journalStep appends $1, one line of JSON, to Journal.
	journalStep = &remote.Step{Name: "journal", Body: `nl='
'
case $1 in *"$nl"*) ;; "{"*"}") j=` + Journal + `; mkdir -p "${j%/*}" && printf '%s\n' "$1" >> "$j"; exit ;; esac
echo "not a journal line: $1" >&2; exit 64`}
	// realiseStep makes $1 valid in the store (RealiseCmd).
	realiseStep = &remote.Step{Name: "realise", Body: remote.StorePathFn + `store_path "$1"; exec nix-store --realise "$1"`,
		Direct: func(args []string) []string { return append([]string{"nix-store", "--realise"}, args...) }}
	// dryActivateStep runs $1's switch-to-configuration dry-activate.
	dryActivateStep = &remote.Step{Name: "dry-activate", Body: remote.StorePathFn + `store_path "$1"; exec "$1/bin/switch-to-configuration" dry-activate`,
		Direct: func(args []string) []string {
			return []string{args[0] + "/bin/switch-to-configuration", "dry-activate"}
		}}
)

// Steps are the activation's steps, for deployctl-remote.
func Steps() []*remote.Step {
	return []*remote.Step{leaseStep, jobStep, waitStep, resultStep, claimStep, checkinStep, statusStep, dropRootStep, journalStep, realiseStep, dryActivateStep}
}
