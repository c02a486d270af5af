// Command bench measures deployctl's push on a local fleet against `nix
// copy` and a raw `tar | ssh` of the same paths, all in one run, and writes
// the results (medians) to a Markdown file. `make bench` runs it.
//
//	bench [-deployctl bin/deployctl] [-runs 3] [-out bench/RESULTS.md]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/deployctl/deployctl/integration/fixture"
	"github.com/deployctl/deployctl/integration/fleet"
)

func main() {
	os.Exit(run())
}

// bench is one benchmark run: the fleet, the flakes, the built systems.
type bench struct {
	deployctl string
	runs      int
	fleet     *fleet.Fleet
	dir       string
	env       []string
	// manifests by flake name ("large", "small", "slow").
	manifests map[string]string
	tops      map[string]map[string]string // flake → host → toplevel
	out       strings.Builder
	only      string
	failed    bool
}

// want reports whether the scenario is to run.
func (b *bench) want(scenario string) bool {
	return b.only == "" || slices.Contains(strings.Split(b.only, ","), scenario)
}

func run() int {
	deployctl := flag.String("deployctl", "bin/deployctl", "the deployctl binary to measure")
	runs := flag.Int("runs", 5, "runs of each measurement (the median is reported)")
	out := flag.String("out", "bench/RESULTS.md", "where to write the results")
	only := flag.String("only", "", "run only these scenarios (comma-separated: one, many, noop, slow)")
	flag.Parse()
	if err := fleet.Prerequisites(); err != nil {
		fmt.Fprintln(os.Stderr, "bench: this machine cannot run a fleet:", err)
		return 1
	}
	bin, err := filepath.Abs(*deployctl)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	b := &bench{deployctl: bin, runs: max(*runs, 1), manifests: map[string]string{}, tops: map[string]map[string]string{}, only: *only}
	if err := b.main(*out); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	return 0
}

var hosts = []string{"h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8"}

func (b *bench) main(outFile string) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "deployctl-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b.dir = dir
	f, err := fleet.Start(ctx, fleet.Options{Dir: filepath.Join(dir, "fleet"), Hosts: hosts, StoresInMemory: true})
	if err != nil {
		return err
	}
	defer f.Stop()
	b.fleet = f
	b.env = append(os.Environ(), "NIX_CONFIG=substituters =", "NIX_SSHOPTS=-F "+f.SSHConfig)

	// A relay adding 5 ms each way (10 ms round trip) in front of h1.
	relay, err := startRelay(f.Host("h1").Addr, 5*time.Millisecond)
	if err != nil {
		return err
	}
	defer relay.Close()
	if err := b.addSlowAlias(relay); err != nil {
		return err
	}

	large := func(h string) fixture.Host { return fixture.Host{Name: h, PayloadKiB: 200 << 10, PayloadPaths: 40} }
	small := func(h string) fixture.Host { return fixture.Host{Name: h, PayloadKiB: 300 * 4, PayloadPaths: 300} }
	var specs []fixture.Host
	for _, h := range hosts {
		specs = append(specs, large(h))
	}
	if err := b.flake("large", specs); err != nil {
		return err
	}
	if err := b.flake("small", []fixture.Host{small("h1")}); err != nil {
		return err
	}
	slow := small("h1")
	slow.Deployment = map[string]any{"targetHost": "h1-slow"}
	if err := b.flake("slow", []fixture.Host{slow}); err != nil {
		return err
	}

	fmt.Fprintf(&b.out, "# deployctl push benchmarks\n\nMeasured %s on this machine (%d cores, loopback fleet, Nix 2.8), by `make bench`: the median of %d runs each, every run into a target store emptied first (except the no-op). Each host's /nix is a tmpfs: this VM's disk takes from 0.05 to 0.8 ms to create one file, depending on the directory, and with the stores on it that noise, not the copying, decided the small-paths figure.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), nproc(), b.runs)
	largeClosure, largeSize := b.closureSize("large", "h1")
	smallClosure, smallSize := b.closureSize("small", "h1")

	// 1 host, the large closure.
	var one sample
	if b.want("one") {
		one = b.oneHost(largeClosure, largeSize)
	}
	if b.want("many") {
		b.manyHosts(one)
	}
	if b.want("noop") {
		if err := b.noop(); err != nil {
			return err
		}
	}
	if b.want("slow") {
		b.slow(smallClosure, smallSize)
	}

	fmt.Print(b.out.String())
	if b.failed {
		return errors.New("some measurements failed (see above); the results file is left as it was")
	}
	if err := os.MkdirAll(filepath.Dir(outFile), 0o755); err != nil {
		return err
	}
	return os.WriteFile(outFile, []byte(b.out.String()), 0o644)
}

// oneHost pushes the large closure to one host; it returns deployctl's
// figures.
func (b *bench) oneHost(largeClosure int, largeSize int64) sample {
	fmt.Fprintf(&b.out, "## One host, %d paths, %s\n\n| method | time | vs tar\\|ssh |\n|---|---|---|\n", largeClosure, mib(largeSize))
	push1 := b.measure([]string{"h1"}, func() (procStats, error) { return b.deployctlRun("large", "h1") })
	copy1 := b.measure([]string{"h1"}, plain(func() error { return b.nixCopy("large", "h1") }))
	raw1 := b.measure([]string{"h1"}, plain(func() error { return b.tarSSH("large", "h1", "h1") }))
	b.row("deployctl push", push1, raw1)
	b.row("nix copy --to ssh://", copy1, raw1)
	b.row("tar | ssh cat >/dev/null", raw1, raw1)
	fmt.Fprintf(&b.out, "\ndeployctl push / tar|ssh: **%s** (target ≤ 1.15). deployctl's peak memory: %s; its CPU time: %.2f s. (tar | ssh does none of the target's store work: it only shows what the link carries.)\n\n", ratio(push1, raw1), mib(push1.peak*1024), push1.cpu.Seconds())
	return push1
}

// manyHosts pushes the large closure to 3 and to 8 hosts.
func (b *bench) manyHosts(one sample) {
	for _, n := range []int{3, 8} {
		targets := hosts[:n]
		pushN := b.measure(targets, func() (procStats, error) { return b.deployctlRun("large", targets...) })
		seq := b.measure(targets, plain(func() error {
			for _, h := range targets {
				if err := b.nixCopy("large", h); err != nil {
					return err
				}
			}
			return nil
		}))
		par := b.measure(targets, func() (procStats, error) {
			errs := make([]error, n)
			cpu := make([]time.Duration, n)
			var wg sync.WaitGroup
			for i, h := range targets {
				wg.Go(func() { cpu[i], errs[i] = b.nixCopyCPU("large", h, h) })
			}
			wg.Wait()
			var st procStats
			for _, c := range cpu {
				st.cpu += c
			}
			return st, joinErrs(errs)
		})
		fmt.Fprintf(&b.out, "## %d hosts, the same closure\n\n| method | time | machine CPU time (share of all cores) |\n|---|---|---|\n", n)
		for _, r := range []struct {
			name string
			s    sample
		}{{"deployctl push", pushN}, {"nix copy, one host after another", seq}, {"nix copy, all hosts at once", par}} {
			fmt.Fprintf(&b.out, "| %s | %s | %.2f s (%s) |\n", r.name, secs(r.s), r.s.busy.Seconds(), saturation(r.s))
		}
		fmt.Fprintln(&b.out)
		cpuRatio := "n/a"
		if one.cpu > 0 {
			cpuRatio = fmt.Sprintf("%.2f", pushN.cpu.Seconds()/one.cpu.Seconds())
		}
		target := ""
		if n == 3 {
			target = " (target ≥ 1.5)"
		}
		fmt.Fprintf(&b.out, "The hosts here are this machine: their sshd and nix-store take their CPU time from the same %d cores as the deploying side (deployctl's run kept %s of them busy, parallel nix copy %s), which caps the time ratio. Across a network each target does that work on its own CPU, and the deploying side's CPU time is what limits a large fleet.\n\n", nproc(), saturation(pushN), saturation(par))
		fmt.Fprintf(&b.out, "Parallel nix copy / deployctl push: **%s**%s. CPU time on the deploying side: deployctl %.2f s, the %d nix copy processes with their ssh %.2f s (%.2f×). deployctl's CPU time for %d hosts / for 1 (%.2f s): %s (%d would be no sharing at all; each host's SSH encryption is its own). Peak memory: %s.\n\n",
			ratio(par, pushN), target, pushN.cpu.Seconds(), n, par.cpu.Seconds(), par.cpu.Seconds()/max(pushN.cpu.Seconds(), 0.001), n, one.cpu.Seconds(), cpuRatio, n, mib(pushN.peak*1024))
	}
}

// noop re-pushes what a host has, against ssh true.
func (b *bench) noop() error {
	if _, err := b.deployctlRun("large", "h1"); err != nil {
		return err
	}
	noop := b.measure(nil, func() (procStats, error) { return b.deployctlRun("large", "h1") })
	sshTrue := b.measure(nil, plain(func() error { return b.cmd("ssh", "-F", b.fleet.SSHConfig, "h1", "true").Run() }))
	fmt.Fprintf(&b.out, "## Nothing to send\n\n| method | time |\n|---|---|\n| deployctl push (no-op, from a manifest) | %s |\n| ssh h1 true | %s |\n\nRatio: **%s** (target ≤ 0.6).\n\n", secs(noop), secs(sshTrue), ratio(noop, sshTrue))
	return nil
}

// slow pushes many small paths over a longer round trip.
func (b *bench) slow(smallClosure int, smallSize int64) {
	slowPush := b.measure([]string{"h1"}, func() (procStats, error) { return b.deployctlRun("slow", "h1") })
	slowRaw := b.measure([]string{"h1"}, plain(func() error { return b.tarSSH("small", "h1", "h1-slow") }))
	copySlow := b.measure([]string{"h1"}, plain(func() error { return b.nixCopyTo("small", "h1", "h1-slow") }))
	fmt.Fprintf(&b.out, "## %d small paths (%s) through a relay adding 10 ms of round trip\n\n| method | time |\n|---|---|\n| deployctl push | %s |\n| nix copy --to ssh:// | %s |\n| tar \\| ssh (one stream) | %s |\n\ndeployctl push / one stream: **%s** (target ≤ 1.2). The same closure both ways (the flakes differ only in the host's targetHost). The target's Nix unpacks and registers each path on its own, which the one stream into cat does not do. deployctl's peak memory here: %s (compare the large closure's above: memory does not grow with the closure).\n",
		smallClosure, mib(smallSize), secs(slowPush), secs(copySlow), secs(slowRaw), ratio(slowPush, slowRaw), mib(slowPush.peak*1024))
}

// flake writes a fixture flake named name, builds it with deployctl and
// keeps its manifest.
func (b *bench) flake(name string, specs []fixture.Host) error {
	dir := filepath.Join(b.dir, name)
	if err := fixture.Write(dir, specs); err != nil {
		return err
	}
	m := filepath.Join(b.dir, name+".json")
	out, err := b.cmd(b.deployctl, "--flake", dir, "--ssh-config", b.fleet.SSHConfig, "build", "--all", "--manifest-out", m).CombinedOutput()
	if err != nil {
		return fmt.Errorf("build %s: %v\n%s", name, err, out)
	}
	b.manifests[name] = m
	data, err := os.ReadFile(m)
	if err != nil {
		return err
	}
	var doc struct {
		Hosts map[string]struct{ Toplevel string }
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return err
	}
	b.tops[name] = map[string]string{}
	for h, v := range doc.Hosts {
		b.tops[name][h] = v.Toplevel
	}
	return nil
}

func (b *bench) cmd(name string, args ...string) *exec.Cmd {
	c := exec.Command(name, args...)
	c.Env = b.env
	return c
}

// closure lists a flake's host's closure in the local store.
func (b *bench) closure(flake, host string) []string {
	out, err := b.cmd("nix-store", "--query", "--requisites", b.tops[flake][host]).Output()
	if err != nil {
		return nil
	}
	return strings.Fields(string(out))
}

func (b *bench) closureSize(flake, host string) (int, int64) {
	paths := b.closure(flake, host)
	out, _ := b.cmd("du", append([]string{"-scb"}, paths...)...).Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var total int64
	fmt.Sscan(lines[len(lines)-1], &total)
	return len(paths), total
}

// clear empties a target's store of everything pushed to it.
func (b *bench) clear(host string) error {
	_, err := b.fleet.SSH(context.Background(), host, "rm -f /nix/var/nix/gcroots/deployctl/pushed && nix-store --gc >/dev/null 2>&1")
	return err
}

type procStats struct {
	cpu    time.Duration
	maxRSS int64 // KiB
}

// deployctlRun pushes a flake's manifest to hosts with deployctl.
func (b *bench) deployctlRun(flake string, hostNames ...string) (procStats, error) {
	c := b.cmd(b.deployctl, append([]string{"--ssh-config", b.fleet.SSHConfig, "push", "--manifest", b.manifests[flake]}, hostNames...)...)
	out, err := c.CombinedOutput()
	var st procStats
	if c.ProcessState != nil {
		st.cpu = c.ProcessState.UserTime() + c.ProcessState.SystemTime()
		if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
			st.maxRSS = ru.Maxrss
		}
	}
	if err != nil {
		return st, fmt.Errorf("deployctl push: %v\n%s", err, out)
	}
	return st, nil
}

func (b *bench) nixCopy(flake, host string) error { return b.nixCopyTo(flake, host, host) }

func (b *bench) nixCopyTo(flake, host, dest string) error {
	_, err := b.nixCopyCPU(flake, host, dest)
	return err
}

// nixCopyCPU is nixCopyTo, returning the CPU time nix copy and its ssh
// took on this machine.
func (b *bench) nixCopyCPU(flake, host, dest string) (time.Duration, error) {
	c := b.cmd("nix", "--extra-experimental-features", "nix-command flakes", "copy", "--to", "ssh://root@"+dest, b.tops[flake][host])
	out, err := c.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("nix copy to %s: %v\n%s", dest, err, out)
	}
	// (wait4's figures include the children nix waited for: its ssh.)
	return c.ProcessState.UserTime() + c.ProcessState.SystemTime(), nil
}

// tarSSH streams the closure's files as one tar stream into cat on dest.
func (b *bench) tarSSH(flake, host, dest string) error {
	tar := b.cmd("tar", append([]string{"-cf", "-"}, b.closure(flake, host)...)...)
	ssh := b.cmd("ssh", "-F", b.fleet.SSHConfig, dest, "cat >/dev/null")
	pipe, err := tar.StdoutPipe()
	if err != nil {
		return err
	}
	ssh.Stdin = pipe
	if err := tar.Start(); err != nil {
		return err
	}
	if err := ssh.Run(); err != nil {
		return fmt.Errorf("tar | ssh %s: %w", dest, err)
	}
	return tar.Wait()
}

// sample is one measurement: its median time, the deployctl figures of
// that median run, and the largest peak memory over all runs.
type sample struct {
	time time.Duration // -1: a run failed
	cpu  time.Duration
	peak int64 // KiB
	// busy is the CPU time the whole machine spent in that run (every
	// process: deployctl, nix, ssh, and the hosts' sshd and nix-store).
	busy time.Duration
}

// measure runs fn b.runs times, emptying the stores of clean first, and
// returns the median. A failed run (or a store that could not be emptied)
// fails the whole benchmark.
func (b *bench) measure(clean []string, fn func() (procStats, error)) sample {
	type run struct {
		d    time.Duration
		st   procStats
		busy time.Duration
	}
	var runs []run
	var peak int64
	for range b.runs {
		for _, h := range clean {
			if err := b.clear(h); err != nil {
				b.fail(fmt.Errorf("empty %s's store: %w", h, err))
				return sample{time: -1}
			}
		}
		busy0 := machineBusy()
		start := time.Now()
		st, err := fn()
		if err != nil {
			b.fail(err)
			return sample{time: -1}
		}
		runs = append(runs, run{time.Since(start), st, machineBusy() - busy0})
		peak = max(peak, st.maxRSS)
	}
	slices.SortFunc(runs, func(x, y run) int { return int(x.d - y.d) })
	m := runs[(len(runs)-1)/2]
	return sample{time: m.d, cpu: m.st.cpu, peak: peak, busy: m.busy}
}

// plain adapts a measurement of something other than deployctl.
func plain(fn func() error) func() (procStats, error) {
	return func() (procStats, error) { return procStats{}, fn() }
}

func (b *bench) fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	b.failed = true
}

func (b *bench) row(name string, d, base sample) {
	fmt.Fprintf(&b.out, "| %s | %s | %s |\n", name, secs(d), ratio(d, base))
}

// addSlowAlias makes "h1-slow" reach h1 through the relay, with h1's key.
func (b *bench) addSlowAlias(r *relay) error {
	host, port, _ := net.SplitHostPort(r.Addr())
	cfg, err := os.ReadFile(b.fleet.SSHConfig)
	if err != nil {
		return err
	}
	alias := fmt.Sprintf("Host h1-slow\n  HostName %s\n  Port %s\n", host, port)
	if err := os.WriteFile(b.fleet.SSHConfig, append([]byte(alias), cfg...), 0o600); err != nil {
		return err
	}
	key := strings.SplitN(b.fleet.Host("h1").KnownHostsLine, " ", 2)[1]
	kh, err := os.OpenFile(b.fleet.KnownHosts, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer kh.Close()
	_, err = fmt.Fprintf(kh, "[%s]:%s %s\n", host, port, key)
	return err
}

func secs(s sample) string {
	if s.time < 0 {
		return "failed"
	}
	return fmt.Sprintf("%.3f s", s.time.Seconds())
}

// ratio is a's time over b's, or "n/a" when either failed.
func ratio(a, b sample) string {
	if a.time <= 0 || b.time <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", a.time.Seconds()/b.time.Seconds())
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// machineBusy is the CPU time all cores have spent not idle since boot,
// from /proc/stat (0 where it cannot be read).
func machineBusy() time.Duration {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	var busy int64
	for i, f := range fields[1:] {
		n, _ := strconv.ParseInt(f, 10, 64)
		// user nice system idle iowait irq softirq steal (guest time is
		// already in user)
		if i != 3 && i != 4 && i < 8 {
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / 100 // USER_HZ
}

// saturation is how much of the machine's CPU a sample used.
func saturation(s sample) string {
	if s.time <= 0 || s.busy <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f%%", 100*s.busy.Seconds()/(s.time.Seconds()*float64(nproc())))
}

func nproc() int { return runtime.NumCPU() }

func joinErrs(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// relay forwards TCP connections on a loopback port to target:22, holding
// every chunk for delay in each direction (a longer round trip at full
// throughput).
type relay struct {
	ln net.Listener
}

func startRelay(targetAddr string, delay time.Duration) (*relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &relay{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				t, err := net.Dial("tcp", net.JoinHostPort(targetAddr, "22"))
				if err != nil {
					return
				}
				defer t.Close()
				done := make(chan struct{}, 2)
				go func() { delayed(t, c, delay); done <- struct{}{} }()
				go func() { delayed(c, t, delay); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return r, nil
}

func (r *relay) Addr() string { return r.ln.Addr().String() }
func (r *relay) Close() error { return r.ln.Close() }

// delayed copies src to dst, each chunk written delay after it was read.
func delayed(dst io.WriteCloser, src io.Reader, delay time.Duration) {
	type chunk struct {
		data []byte
		at   time.Time
	}
	ch := make(chan chunk, 1024)
	go func() {
		defer close(ch)
		for {
			buf := make([]byte, 64<<10)
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{buf[:n], time.Now().Add(delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.data); err != nil {
			break
		}
	}
	dst.Close()
}
