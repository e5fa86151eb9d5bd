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

// Owner resolves a host pid. A process outside any pod is an error.
func (r Resolver) Owner(pid uint32) (Owner, error) {
	dir := filepath.Join(r.Root, strconv.FormatUint(uint64(pid), 10))
	cg, err := os.ReadFile(filepath.Join(dir, "cgroup"))
	if err != nil {
		return Owner{}, err
	}
	m := podCgroup.FindSubmatch(cg)
	if m == nil {
		return Owner{}, fmt.Errorf("pid %d: not in a pod's cgroup", pid)
	}
	o := Owner{PodUID: strings.ReplaceAll(string(m[1]), "_", "-")}
	nspid, err := innermostPID(filepath.Join(dir, "status"))
	if err != nil {
		return Owner{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	o.NSPID = nspid
	return o, nil
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
