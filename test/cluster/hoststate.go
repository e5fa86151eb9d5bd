package cluster

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// HostState is what a real node changes on the host while it runs
// (docs/development.md#the-real-node): the kubelet, kube-proxy, containerd
// and the CNI plugins set sysctls, add iptables chains, mount, create
// cgroups and network devices. The journal keeps the state from before the
// node started, so that Stop, or the next start after the test was killed,
// puts it back.
type HostState struct {
	// Sysctls: every writable /proc/sys entry and its value.
	Sysctls map[string]string `json:"sysctls"`
	// IPTables: iptables-save and ip6tables-save output, normalised.
	IPTables map[string]string `json:"iptables"`
	// Links: the network devices.
	Links []string `json:"links"`
	// Cgroups: the kubelet's cgroup directories (kubepods, under every
	// controller). Others' cgroups come and go and are none of the node's.
	Cgroups []string `json:"cgroups"`
	// Paths: which of the node's own host paths existed.
	Paths map[string]bool `json:"paths"`
	// Mounts: the mount points under those paths.
	Mounts []string `json:"mounts"`
}

// volatileSysctls change on their own; they are neither restored nor
// compared.
var volatileSysctls = []string{"kernel/ns_last_pid", "kernel/random/", "fs/dentry-state", "kernel/pty/nr",
	"net/netfilter/nf_conntrack_count", "kernel/hung_task_detect_count", "vm/stat_refresh"}

// snapshotHost records the host state that a real node may change; paths
// are the host paths the node owns (kubelet root, netns, logs, …).
func snapshotHost(paths []string) (HostState, error) {
	s := HostState{Sysctls: map[string]string{}, IPTables: map[string]string{}, Paths: map[string]bool{}}
	err := filepath.WalkDir("/proc/sys", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		key := strings.TrimPrefix(p, "/proc/sys/")
		if volatile(key) {
			return nil
		}
		if fi, err := d.Info(); err != nil || fi.Mode().Perm()&0o200 == 0 {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		s.Sysctls[key] = string(b)
		return nil
	})
	if err != nil {
		return s, err
	}
	for _, tool := range []string{"iptables", "ip6tables"} {
		out, err := exec.Command(tool + "-save").Output()
		if err != nil {
			return s, fmt.Errorf("%s-save: %w", tool, err)
		}
		s.IPTables[tool] = normaliseIPTables(string(out))
	}
	if s.Links, err = links(); err != nil {
		return s, err
	}
	s.Cgroups = cgroupDirs()
	for _, p := range paths {
		_, err := os.Lstat(p)
		s.Paths[p] = err == nil
	}
	s.Mounts = mountsUnder(paths)
	return s, nil
}

func volatile(key string) bool {
	for _, v := range volatileSysctls {
		if strings.HasPrefix(key, v) {
			return true
		}
	}
	return false
}

// normaliseIPTables drops comments, counters and tables that hold nothing
// but built-in chains accepting everything (what a flushed table looks like,
// and what no table at all means).
func normaliseIPTables(save string) string {
	var out, table []string
	empty := true
	flush := func() {
		if len(table) > 0 && !empty {
			out = append(out, table...)
		}
		table, empty = nil, true
	}
	for _, line := range strings.Split(save, "\n") {
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "*"):
			flush()
			table = append(table, line)
		case strings.HasPrefix(line, ":"):
			f := strings.Fields(line)
			builtin := f[1] != "-"
			if !builtin || f[1] != "ACCEPT" {
				empty = false
			}
			table = append(table, f[0]+" "+f[1])
		case line == "COMMIT":
			table = append(table, line)
			flush()
		default:
			empty = false
			table = append(table, line)
		}
	}
	flush()
	return strings.Join(out, "\n")
}

func links() ([]string, error) {
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		return nil, fmt.Errorf("ip link: %w", err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			names = append(names, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
		}
	}
	sort.Strings(names)
	return names, nil
}

// kubeletCgroup is the cgroup root of the kubelet's pods (cgroupsPerQOS).
const kubeletCgroup = "kubepods"

// cgroupDirs lists the kubelet's cgroup directories: kubepods and below,
// under every controller (cgroup v1) or the unified root (v2).
func cgroupDirs() []string {
	var dirs []string
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + kubeletCgroup)
	roots = append(roots, "/sys/fs/cgroup/"+kubeletCgroup)
	for _, root := range roots {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	sort.Strings(dirs)
	return dirs
}

// mountsUnder lists the mount points at or under any of paths, deepest last.
func mountsUnder(paths []string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 5 {
			continue
		}
		mp := unescapeMount(fl[4])
		for _, p := range paths {
			if mp == p || strings.HasPrefix(mp, p+"/") {
				out = append(out, mp)
				break
			}
		}
	}
	return out
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// restoreHost puts back what before recorded: it kills what runs in the
// cgroups created since, unmounts and removes the node's paths that did not
// exist, deletes new network devices and cgroups, restores iptables and
// the sysctls. Every step runs; the errors are joined.
func restoreHost(before HostState, paths []string) error {
	var errs []error
	oldCg := set(before.Cgroups)
	var newCg []string
	for _, d := range cgroupDirs() {
		if !oldCg[d] {
			newCg = append(newCg, d)
		}
	}
	for _, d := range newCg {
		killCgroup(d)
	}
	oldMounts := set(before.Mounts)
	mounts := mountsUnder(paths)
	for i := len(mounts) - 1; i >= 0; i-- {
		if !oldMounts[mounts[i]] {
			if err := syscall.Unmount(mounts[i], syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("unmount %s: %w", mounts[i], err))
			}
		}
	}
	for _, p := range paths {
		if !before.Paths[p] {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
			}
		}
	}
	oldLinks := set(before.Links)
	if now, err := links(); err == nil {
		for _, l := range now {
			if !oldLinks[l] {
				if out, err := exec.Command("ip", "link", "delete", l).CombinedOutput(); err != nil && !strings.Contains(string(out), "Cannot find device") {
					errs = append(errs, fmt.Errorf("ip link delete %s: %v: %s", l, err, out))
				}
			}
		}
	}
	// Deepest first; a cgroup empties a moment after its last process dies.
	for i := len(newCg) - 1; i >= 0; i-- {
		var err error
		for try := 0; try < 50; try++ {
			if err = syscall.Rmdir(newCg[i]); err == nil || errors.Is(err, syscall.ENOENT) {
				err = nil
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("rmdir cgroup %s: %w", newCg[i], err))
		}
	}
	for tool, save := range before.IPTables {
		if err := restoreIPTables(tool, save); err != nil {
			errs = append(errs, err)
		}
	}
	for key, val := range before.Sysctls {
		p := filepath.Join("/proc/sys", key)
		if cur, err := os.ReadFile(p); err == nil && string(cur) != val {
			if err := os.WriteFile(p, []byte(val), 0); err != nil {
				errs = append(errs, fmt.Errorf("sysctl %s: %w", key, err))
			}
		}
	}
	return errors.Join(errs...)
}

// restoreIPTables restores the saved tables and empties every other one, so
// that chains added to a table that held nothing go too.
func restoreIPTables(tool, save string) error {
	saved := map[string]bool{}
	for _, line := range strings.Split(save, "\n") {
		if strings.HasPrefix(line, "*") {
			saved[line[1:]] = true
		}
	}
	out, err := exec.Command(tool + "-save").Output()
	if err != nil {
		return fmt.Errorf("%s-save: %w", tool, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if t, ok := strings.CutPrefix(line, "*"); ok && !saved[t] {
			for _, args := range [][]string{{"-t", t, "-F"}, {"-t", t, "-X"}} {
				if out, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
					return fmt.Errorf("%s %v: %v: %s", tool, args, err, out)
				}
			}
		}
	}
	if save == "" {
		return nil
	}
	cmd := exec.Command(tool + "-restore")
	cmd.Stdin = strings.NewReader(save + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s-restore: %v: %s", tool, err, out)
	}
	return nil
}

// killCgroup SIGKILLs every process of a cgroup directory.
func killCgroup(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// HostDiff lists what differs between two snapshots, one line per change.
func HostDiff(a, b HostState) []string {
	var d []string
	keys := map[string]bool{}
	for k := range a.Sysctls {
		keys[k] = true
	}
	for k := range b.Sysctls {
		keys[k] = true
	}
	for k := range keys {
		va, oka := a.Sysctls[k]
		vb, okb := b.Sysctls[k]
		if oka && okb && va != vb {
			d = append(d, fmt.Sprintf("sysctl %s: %q -> %q", k, strings.TrimSpace(va), strings.TrimSpace(vb)))
		}
	}
	for tool := range a.IPTables {
		if a.IPTables[tool] != b.IPTables[tool] {
			d = append(d, fmt.Sprintf("%s rules differ:\n--- before\n%s\n--- after\n%s", tool, a.IPTables[tool], b.IPTables[tool]))
		}
	}
	d = append(d, setDiff("network device", a.Links, b.Links)...)
	d = append(d, setDiff("cgroup", a.Cgroups, b.Cgroups)...)
	d = append(d, setDiff("mount", a.Mounts, b.Mounts)...)
	for p, ea := range a.Paths {
		if eb, ok := b.Paths[p]; ok && ea != eb {
			d = append(d, fmt.Sprintf("path %s: existed %v -> %v", p, ea, eb))
		}
	}
	sort.Strings(d)
	return d
}

func setDiff(what string, a, b []string) []string {
	var d []string
	sa, sb := set(a), set(b)
	for _, x := range a {
		if !sb[x] {
			d = append(d, what+" gone: "+x)
		}
	}
	for _, x := range b {
		if !sa[x] {
			d = append(d, what+" added: "+x)
		}
	}
	return d
}

func set(l []string) map[string]bool {
	m := make(map[string]bool, len(l))
	for _, x := range l {
		m[x] = true
	}
	return m
}

// journal is the file that survives a killed test: the host state from
// before the node started and the paths it owns.
type journal struct {
	Before HostState `json:"before"`
	Paths  []string  `json:"paths"`
	// Shims: the containerd socket whose shims must be killed.
	Socket string `json:"socket"`
}

func writeJournal(file string, j journal) error {
	b, err := json.MarshalIndent(j, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(file+".tmp", b, 0o600); err != nil {
		return err
	}
	return os.Rename(file+".tmp", file)
}

// recoverJournal restores the host from a journal left by a node that did
// not stop (a panic, a SIGKILL of the test), then removes it.
func recoverJournal(file string) (bool, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var j journal
	if err := json.Unmarshal(b, &j); err != nil {
		return false, fmt.Errorf("journal %s: %w", file, err)
	}
	killShims(j.Socket)
	if err := restoreHost(j.Before, j.Paths); err != nil {
		return true, fmt.Errorf("restoring the host from %s: %w", file, err)
	}
	return true, os.Remove(file)
}

// killShims kills the containerd shims of one containerd (by its socket):
// they detach from containerd and would outlive it.
func killShims(socket string) {
	if socket == "" {
		return
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(cmdline, []byte("containerd-shim")) && bytes.Contains(cmdline, []byte(socket)) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// SnapshotHost records the host state a real node may change, for a test
// that compares the host before and after one ran. It holds the machine
// lock while it reads, waiting for a real node of another checkout to stop
// first: a snapshot taken while one runs holds that node's pods and cgroups,
// which are gone once it stops. A node that takes the lock after it
// restores the host before it lets go.
func SnapshotHost() (HostState, error) {
	lf, err := openLock()
	if err != nil {
		return HostState{}, err
	}
	defer lf.Close()
	if err := waitForLock(lf, func(f string, a ...any) { fmt.Printf("host snapshot: "+f+"\n", a...) }); err != nil {
		return HostState{}, err
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN) //nolint:errcheck // Close releases it too
	return snapshotHost(HostPaths)
}
