package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// spawner starts child processes from one OS thread that stays alive until
// the cluster stops. Pdeathsig fires when the *thread* that forked a child
// exits, so forking from arbitrary goroutines (whose threads the runtime may
// retire) could kill components early; a dedicated locked thread makes the
// signal mean "the harness process is gone".
type spawner struct {
	reqs chan spawnReq
	done chan struct{}
}

type spawnReq struct {
	cmd *exec.Cmd
	err chan error
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan spawnReq), done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		// Never unlocked: when this goroutine returns the thread exits with
		// it, which is what delivers Pdeathsig to anything still running.
		runtime.LockOSThread()
		close(ready)
		for {
			select {
			case r := <-s.reqs:
				r.err <- r.cmd.Start()
			case <-s.done:
				return
			}
		}
	}()
	<-ready
	return s
}

func (s *spawner) start(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	select {
	case s.reqs <- spawnReq{cmd: cmd, err: errc}:
		return <-errc
	case <-s.done:
		return errors.New("cluster is stopped")
	}
}

func (s *spawner) close() { close(s.done) }

// process is one running component.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	exited  chan struct{}
	waitErr error

	stopOnce sync.Once
}

func (s *spawner) run(name, bin string, args []string, logDir string, env ...string) (*process, error) {
	logPath := filepath.Join(logDir, name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = lf
	cmd.Stderr = lf
	cmd.Env = append(append(os.Environ(), "HOME="+logDir), env...) // kwok and kubectl read ~/.kube and ~/.kwok
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,
		Pdeathsig: syscall.SIGKILL,
	}
	if err := s.start(cmd); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, logFile: lf, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		lf.Close()
		close(p.exited)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// running reports whether the process has not exited yet.
func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after grace.
func (p *process) stop(grace time.Duration) {
	p.stopOnce.Do(func() {
		pgid := p.pid()
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(grace):
		}
		// Anything left in the group (the leader included) is killed now.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.exited
		// The leader is reaped, but other members of the group may still be
		// on their way out (a SIGKILLed process keeps running in the kernel
		// until its exit completes), or be stopped, or have forked since the
		// first signal. Return only when none is left alive.
		waitGroupGone(pgid)
	})
}

// groupGoneTimeout bounds waitGroupGone: a member stuck in uninterruptible
// sleep cannot be killed, and the harness must not hang on it.
const groupGoneTimeout = 30 * time.Second

// waitGroupGone sends SIGKILL to process group pgid until no live member is
// left. Zombies do not count: their parent (often init, after the leader
// died) reaps them on its own schedule, and they hold nothing.
func waitGroupGone(pgid int) {
	deadline := time.Now().Add(groupGoneTimeout)
	for len(groupMembers(pgid)) > 0 && time.Now().Before(deadline) {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		time.Sleep(5 * time.Millisecond)
	}
}

// groupMembers lists the live (non-zombie) processes of process group pgid.
func groupMembers(pgid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil || isZombie(stat) {
			continue
		}
		if f := statFields(stat); len(f) >= 3 && f[2] == strconv.Itoa(pgid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// exitError describes how the process ended, with the tail of its log.
func (p *process) exitError() error {
	return fmt.Errorf("%s exited (%v); last lines of %s:\n%s", p.name, p.waitErr, p.logPath, tail(p.logPath, 20))
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ProcessesUsing lists the live processes whose command line mentions dir,
// as "pid: cmdline". Every component is started with arguments under the
// cluster's data folder, so an empty result after Stop means nothing leaked.
// The caller and its ancestors (make, a shell, go test) are not counted:
// their command lines may name the folder too.
func ProcessesUsing(dir string) []string {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	skip := map[int]bool{}
	for pid := os.Getpid(); pid > 1 && !skip[pid]; pid = parentPID(pid) {
		skip[pid] = true
	}
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || skip[pid] {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue // gone, or a zombie/kernel thread
		}
		if state, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); isZombie(state) {
			continue
		}
		if bytes.Contains(raw, []byte(dir)) {
			out = append(out, fmt.Sprintf("%d: %s", pid, strings.ReplaceAll(strings.TrimRight(string(raw), "\x00"), "\x00", " ")))
		}
	}
	return out
}

func isZombie(stat []byte) bool {
	// /proc/<pid>/stat: "pid (comm) S ..."; comm may hold spaces or parens.
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// parentPID reads the parent of pid from /proc, 0 when unknown.
func parentPID(pid int) int {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	f := statFields(stat)
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// statFields splits /proc/<pid>/stat after "pid (comm) ": state, ppid, pgrp,
// … (comm may hold spaces and parentheses, hence the last ')').
func statFields(stat []byte) []string {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(stat[i+1:]))
}
