// Package procs tells which pod a host process belongs to, and what its pid
// is inside the container, from the host's /proc. NVML reports host pids;
// libvgpu records container pids in the region; this is the bridge.
package procs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Owner is where a host process lives.
type Owner struct {
	PodUID string
	// NSPID is the pid in the innermost pid namespace (the container's).
	NSPID int32
	// ContainerID is the runtime's id of the container (64 hex digits, as
	// in the pod status's containerID after "<runtime>://"); empty when the
	// cgroup path does not name one.
	ContainerID string
	// StartTime is field 22 of /proc/<pid>/stat, as libvgpu records it in
	// the process's region slot; 0 when unreadable.
	StartTime uint64
}

// Resolver reads a proc filesystem mounted at Root (the host's /proc,
// e.g. /host/proc in a DaemonSet with hostPID or a hostPath mount).
type Resolver struct {
	Root string
}

// The kubelet names a pod's cgroup after its uid, with dashes (cgroupfs
// driver: .../pod<uid>/...) or underscores (systemd driver:
// ...-pod<uid_with_underscores>.slice).
var podCgroup = regexp.MustCompile(`pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})`)

// Below the pod's cgroup, the container's is named after its runtime id:
// ".../pod<uid>/<id>" (cgroupfs) or ".../cri-containerd-<id>.scope",
// "crio-<id>.scope", "docker-<id>.scope" (systemd).
var containerCgroup = regexp.MustCompile(`[/-]([0-9a-f]{64})(?:\.scope)?(?:/|$)`)

// Owner resolves a host pid. A process outside any pod is an error.
func (r Resolver) Owner(pid uint32) (Owner, error) {
	dir := filepath.Join(r.Root, strconv.FormatUint(uint64(pid), 10))
	cg, err := os.ReadFile(filepath.Join(dir, "cgroup"))
	if err != nil {
		return Owner{}, err
	}
	var o Owner
	for _, line := range strings.Split(string(cg), "\n") {
		m := podCgroup.FindStringSubmatchIndex(line)
		if m == nil {
			continue
		}
		o.PodUID = strings.ReplaceAll(line[m[2]:m[3]], "_", "-")
		if c := containerCgroup.FindStringSubmatch(line[m[1]:]); c != nil {
			o.ContainerID = c[1]
		}
		break
	}
	if o.PodUID == "" {
		return Owner{}, fmt.Errorf("pid %d: not in a pod's cgroup", pid)
	}
	o.StartTime = startTime(filepath.Join(dir, "stat"))
	nspid, err := innermostPID(filepath.Join(dir, "status"))
	if err != nil {
		return Owner{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	o.NSPID = nspid
	return o, nil
}

// startTime reads field 22 of a stat file. The command name (field 2) may
// hold spaces and parentheses, so fields are counted after its last ')'.
func startTime(stat string) uint64 {
	b, err := os.ReadFile(stat)
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	fs := strings.Fields(string(b[i+1:]))
	if len(fs) < 20 { // fields 3..22
		return 0
	}
	n, err := strconv.ParseUint(fs[19], 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// innermostPID reads the last field of NSpid: the pid as the container sees it.
func innermostPID(status string) (int32, error) {
	f, err := os.Open(status)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "NSpid:")
		if !ok {
			continue
		}
		fs := strings.Fields(rest)
		if len(fs) == 0 {
			break
		}
		n, err := strconv.ParseInt(fs[len(fs)-1], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("NSpid %q: %v", rest, err)
		}
		return int32(n), nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no NSpid line", status)
}
