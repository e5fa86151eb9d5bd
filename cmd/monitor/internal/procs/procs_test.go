package procs

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func fakeProc(t *testing.T, root string, pid int, cgroup, status string) {
	t.Helper()
	d := filepath.Join(root, strconv.Itoa(pid))
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "cgroup"), []byte(cgroup), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "status"), []byte(status), 0o644); err != nil {
		t.Fatal(err)
	}
}

const cid = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"

func TestOwner(t *testing.T) {
	root := t.TempDir()
	// cgroup v2, systemd driver: underscores in the uid.
	fakeProc(t, root, 4001, "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5f1c2a3b_1d2e_4f00_8a9b_0c1d2e3f4a5b.slice/cri-containerd-abc.scope\n",
		"Name:\tpython\nNSpid:\t4001\t7\n")
	// cgroup v1, cgroupfs driver: dashes.
	fakeProc(t, root, 4002, "12:memory:/kubepods/besteffort/pod5f1c2a3b-1d2e-4f00-8a9b-0c1d2e3f4a5c/0123abcd\n",
		"Name:\ttorchrun\nNSpid:\t4002\t1\n")
	// not in a pod
	fakeProc(t, root, 4003, "0::/system.slice/sshd.service\n", "NSpid:\t4003\n")

	// containerd, systemd driver, with the stat libvgpu reads the start time from
	fakeProc(t, root, 4004, "0::/kubepods.slice/kubepods-pod5f1c2a3b_1d2e_4f00_8a9b_0c1d2e3f4a5b.slice/cri-containerd-"+cid+".scope\n",
		"NSpid:\t4004\t9\n")
	if err := os.WriteFile(filepath.Join(root, "4004", "stat"), []byte("4004 (a (b) c) S 1 4004 4004 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10 18446744073709551615\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// cgroup v1, cgroupfs driver, one line per hierarchy
	fakeProc(t, root, 4005, "12:pids:/kubepods/pod5f1c2a3b-1d2e-4f00-8a9b-0c1d2e3f4a5c/"+cid+"\n11:memory:/kubepods/pod5f1c2a3b-1d2e-4f00-8a9b-0c1d2e3f4a5c/"+cid+"\n",
		"NSpid:\t4005\t1\n")

	r := Resolver{Root: root}
	o, err := r.Owner(4004)
	if err != nil || o.ContainerID != cid || o.NSPID != 9 || o.StartTime != 987654 {
		t.Fatalf("containerd scope: %+v, %v", o, err)
	}
	if o, err = r.Owner(4005); err != nil || o.ContainerID != cid || o.PodUID != "5f1c2a3b-1d2e-4f00-8a9b-0c1d2e3f4a5c" {
		t.Fatalf("cgroupfs container: %+v, %v", o, err)
	}
	o, err = r.Owner(4001)
	if err != nil || o.PodUID != "5f1c2a3b-1d2e-4f00-8a9b-0c1d2e3f4a5b" || o.NSPID != 7 || o.ContainerID != "" {
		t.Fatalf("systemd cgroup: %+v, %v", o, err)
	}
	o, err = r.Owner(4002)
	if err != nil || o.PodUID != "5f1c2a3b-1d2e-4f00-8a9b-0c1d2e3f4a5c" || o.NSPID != 1 {
		t.Fatalf("cgroupfs: %+v, %v", o, err)
	}
	if _, err := r.Owner(4003); err == nil {
		t.Fatal("a host process resolved to a pod")
	}
	if _, err := r.Owner(4999); err == nil {
		t.Fatal("a missing pid resolved")
	}
}
