package audit

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vgpu-io/vgpu/cmd/monitor/internal/gpus"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/pods"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/procs"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/regions"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/region"
)

const (
	gpu0   = "GPU-a0000000-0000-4000-8000-000000000000"
	gpu1   = "GPU-a1000000-0000-4000-8000-000000000001"
	uidA   = "5f1c2a3b-1d2e-4f00-8a9b-0c1d2e3f4a5b"
	uidB   = "6a2b3c4d-1d2e-4f00-8a9b-0c1d2e3f4a5c"
	gib    = uint64(1) << 30
	mib    = uint64(1) << 20
	ctxMiB = 400 * mib // a CUDA context: NVML counts it, libvgpu does not
)

// cid makes a runtime container id (64 hex digits) from a short tag.
func cid(tag string) string { return fmt.Sprintf("%x", sha256.Sum256([]byte(tag))) }

// node is a fake GPU node: go-nvml's mock DGX A100 for NVML, a fake /proc,
// a containers directory with region files, and a pod list.
type node struct {
	t         testing.TB
	dir, proc string
	srv       *server.Server
	compute   map[int][]nvml.ProcessInfo // by GPU index
	graphics  map[int][]nvml.ProcessInfo
	pods      []pods.Pod
	now       time.Time
}

func newNode(t testing.TB) *node {
	n := &node{t: t, dir: t.TempDir(), proc: t.TempDir(), srv: dgxa100.New(),
		compute: map[int][]nvml.ProcessInfo{}, graphics: map[int][]nvml.ProcessInfo{}, now: time.Unix(1e6, 0)}
	gpus.Idle(n.srv)
	for i, d := range n.srv.Devices {
		dev, i := d.(*server.Device), i
		if i == 0 {
			dev.UUID = gpu0
		}
		if i == 1 {
			dev.UUID = gpu1
		}
		dev.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return n.compute[i], nvml.SUCCESS }
		dev.GetGraphicsRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return n.graphics[i], nvml.SUCCESS }
	}
	return n
}

func (n *node) write(path, content string) {
	n.t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		n.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// process puts host pid hostPID, pid nsPID in its container, into the pod's
// container ctr (systemd cgroup driver, containerd), started at tick start.
func (n *node) process(hostPID int, podUID, ctr string, nsPID int, start uint64) {
	d := filepath.Join(n.proc, fmt.Sprint(hostPID))
	n.write(filepath.Join(d, "cgroup"), "0::/kubepods.slice/kubepods-pod"+strings.ReplaceAll(podUID, "-", "_")+".slice/cri-containerd-"+cid(podUID+ctr)+".scope\n")
	n.write(filepath.Join(d, "status"), fmt.Sprintf("Name:\tx\nNSpid:\t%d\t%d\n", hostPID, nsPID))
	n.write(filepath.Join(d, "stat"), fmt.Sprintf("%d (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 %d 0 0\n", hostPID, start))
}

// slot is one process slot: container pid, start time, bytes per device.
type slot struct {
	pid   int32
	start uint64
	used  []uint64
}

// region writes the region libvgpu would keep for the container.
func (n *node) region(podUID, ctr string, limits map[string]uint64, uuids []string, slots ...slot) {
	n.regionIn(filepath.Join(n.dir, contract.ContainerDirName(podUID, ctr)), limits, uuids, slots...)
}

// regionIn writes a region into dir.
func (n *node) regionIn(dir string, limits map[string]uint64, uuids []string, slots ...slot) {
	r := region.Region{Header: region.Header{Magic: region.Magic, Version: region.Version, DeviceCount: uint32(len(uuids))}}
	for i, u := range uuids {
		r.Devices[i] = region.Device{UUID: u, MemLimit: limits[u]}
	}
	for i, s := range slots {
		p := region.Process{PID: s.pid, State: region.ProcActive, StartTime: s.start}
		copy(p.MemUsed[:], s.used)
		for d, u := range s.used {
			r.Devices[d].MemUsed += u
		}
		r.Processes[i] = p
	}
	n.write(filepath.Join(dir, contract.RegionFileName), string(r.Encode()))
}

// pod adds a running pod whose containers each got the given devices and
// started long ago.
func (n *node) pod(uid, name string, ctrs ...assign.Container) {
	p := pods.Pod{Ref: pods.Ref{Namespace: "team", Name: name, UID: types.UID(uid)}, Assignment: &assign.Pod{Node: "n", Containers: ctrs},
		Containers: map[string]pods.Container{}}
	for _, c := range ctrs {
		p.Containers[c.Name] = pods.Container{ID: cid(uid + c.Name), Running: true, StartedAt: n.now.Add(-time.Hour)}
	}
	n.pods = append(n.pods, p)
}

func (n *node) Synced() bool     { return true }
func (n *node) Pods() []pods.Pod { return n.pods }

func (n *node) auditor(confirm time.Duration) *Auditor {
	return &Auditor{Dir: n.dir, GPUs: gpus.New(n.srv), Pods: n, Regions: regions.NewReader(regions.Decode, zap.NewNop()),
		Owners: procs.Resolver{Root: n.proc}, Options: Options{Tolerance: gib, RegionGrace: time.Minute},
		ConfirmAfter: confirm, Log: zap.NewNop(), Now: func() time.Time { return n.now }}
}

func gb(g uint64) uint64 { return g * gib }

func one(uuid string, memMiB int64) []assign.Device {
	return []assign.Device{{UUID: uuid, MemoryMiB: memMiB}}
}

// summary is what a test compares: container/reason/gpu of each finding.
func summary(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Container+"/"+f.Reason+"/"+f.GPU)
	}
	return out
}

func same(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }

// Every way a process can hold GPU memory that libvgpu does not count, each
// beside an honest container that must not be flagged.
func TestAuditFindsUnaccountedMemory(t *testing.T) {
	for _, tc := range []struct {
		name string
		// set builds the node; pod A's container "main" always has an
		// honest process (host 100, pid 7) on GPU 0 under a 4 GiB limit.
		set  func(n *node)
		want []string
	}{
		{name: "honest: NVML shows allocations plus the context", set: func(n *node) {}},
		{name: "a static program beside a libvgpu process (no slot)", set: func(n *node) {
			n.process(101, uidA, "main", 8, 5000)
			n.compute[0] = append(n.compute[0], nvml.ProcessInfo{Pid: 101, UsedGpuMemory: gb(6)})
		}, want: []string{"main/unaccounted-process/" + gpu0, "main/above-limit/" + gpu0}},
		{name: "a small static program, within every tolerance, is still unaccounted", set: func(n *node) {
			n.process(101, uidA, "main", 8, 5000)
			n.compute[0] = append(n.compute[0], nvml.ProcessInfo{Pid: 101, UsedGpuMemory: 300 * mib})
		}, want: []string{"main/unaccounted-process/" + gpu0}},
		{name: "a process whose slot was rewritten to zero", set: func(n *node) {
			n.region(uidA, "main", map[string]uint64{gpu0: gb(4)}, []string{gpu0}, slot{7, 1000, []uint64{0}})
			n.compute[0] = []nvml.ProcessInfo{{Pid: 100, UsedGpuMemory: gb(3)}}
		}, want: []string{"main/above-ledger/" + gpu0}},
		{name: "a slot inflated to cover a container above its limit", set: func(n *node) {
			n.region(uidA, "main", map[string]uint64{gpu0: 0}, []string{gpu0}, slot{7, 1000, []uint64{gb(9)}})
			n.compute[0] = []nvml.ProcessInfo{{Pid: 100, UsedGpuMemory: gb(9)}}
		}, want: []string{"main/above-limit/" + gpu0}},
		{name: "a copy of libvgpu with limits of its own books past the limit", set: func(n *node) {
			n.region(uidA, "main", map[string]uint64{gpu0: gb(16)}, []string{gpu0}, slot{7, 1000, []uint64{gb(6)}})
			n.compute[0] = nil // even where NVML shows nothing
		}, want: []string{"main/above-limit/" + gpu0}},
		{name: "Vulkan memory on NVML's graphics list", set: func(n *node) {
			n.process(102, uidA, "main", 9, 6000)
			n.graphics[0] = []nvml.ProcessInfo{{Pid: 102, UsedGpuMemory: gb(2)}}
		}, want: []string{"main/unaccounted-process/" + gpu0}},
		{name: "a GPU the container's region does not list", set: func(n *node) {
			n.compute[1] = []nvml.ProcessInfo{{Pid: 100, UsedGpuMemory: gb(1)}}
		}, want: []string{"main/unaccounted-process/" + gpu1}},
		{name: "a reused pid is not covered by the dead process's slot", set: func(n *node) {
			n.process(100, uidA, "main", 7, 9999) // same pid 7, another start time
		}, want: []string{"main/unaccounted-process/" + gpu0}},
		{name: "a container that never loaded libvgpu (no region at all)", set: func(n *node) {
			n.pod(uidB, "b", assign.Container{Name: "side", Devices: one(gpu1, 2048)})
			n.process(200, uidB, "side", 1, 100)
			n.compute[1] = []nvml.ProcessInfo{{Pid: 200, UsedGpuMemory: gb(1)}}
		}, want: []string{"side/no-region/" + gpu1, "side/unaccounted-process/" + gpu1}},
		{name: "a pod vgpu gave no GPU (privileged, or another runtime's devices)", set: func(n *node) {
			n.pods = append(n.pods, pods.Pod{Ref: pods.Ref{Namespace: "team", Name: "priv", UID: types.UID(uidB)},
				Containers: map[string]pods.Container{"tool": {ID: cid(uidB + "tool"), Running: true}}})
			n.process(200, uidB, "tool", 1, 100)
			n.compute[0] = append(n.compute[0], nvml.ProcessInfo{Pid: 200, UsedGpuMemory: gb(2)})
		}, want: []string{"tool/unaccounted-process/" + gpu0}},
		{name: "unknown usage (NVML may not say) without a slot", set: func(n *node) {
			n.process(101, uidA, "main", 8, 5000)
			n.compute[0] = append(n.compute[0], nvml.ProcessInfo{Pid: 101, UsedGpuMemory: ^uint64(0)})
		}, want: []string{"main/unaccounted-process/" + gpu0}},
		{name: "host processes and pods of other nodes are not vgpu's", set: func(n *node) {
			n.write(filepath.Join(n.proc, "300", "cgroup"), "0::/system.slice/xorg.service\n")
			n.process(301, uidB, "x", 1, 1) // its pod is not on this node's list
			n.compute[0] = append(n.compute[0], nvml.ProcessInfo{Pid: 300, UsedGpuMemory: gb(5)}, nvml.ProcessInfo{Pid: 301, UsedGpuMemory: gb(5)},
				nvml.ProcessInfo{Pid: 302, UsedGpuMemory: gb(5)}) // 302: exited, no /proc entry
		}},
		{name: "same container pid in two containers of a pod", set: func(n *node) {
			// side has its own pid namespace: its pid 7 is not main's pid 7
			n.pods[0].Assignment.Containers = append(n.pods[0].Assignment.Containers, assign.Container{Name: "side", Devices: one(gpu0, 1024)})
			n.pods[0].Containers["side"] = pods.Container{ID: cid(uidA + "side"), Running: true, StartedAt: n.now.Add(-time.Hour)}
			n.region(uidA, "side", map[string]uint64{gpu0: gb(1)}, []string{gpu0})
			n.process(110, uidA, "side", 7, 1000)
			n.compute[0] = append(n.compute[0], nvml.ProcessInfo{Pid: 110, UsedGpuMemory: gb(1)})
		}, want: []string{"side/unaccounted-process/" + gpu0}},
		{name: "a whole GPU (cores 100) has no limit to get around", set: func(n *node) {
			n.pod(uidB, "b", assign.Container{Name: "whole", Devices: []assign.Device{{UUID: gpu1, MemoryMiB: 40960, Cores: 100}}})
			n.process(200, uidB, "whole", 1, 100) // static, no region
			n.compute[1] = []nvml.ProcessInfo{{Pid: 200, UsedGpuMemory: gb(39)}}
		}},
		{name: "but the same program on a shared GPU is flagged", set: func(n *node) {
			n.pod(uidB, "b", assign.Container{Name: "whole", Devices: []assign.Device{{UUID: gpu1, MemoryMiB: 40960, Cores: 99}}})
			n.process(200, uidB, "whole", 1, 100)
			n.compute[1] = []nvml.ProcessInfo{{Pid: 200, UsedGpuMemory: gb(39)}}
		}, want: []string{"whole/no-region/" + gpu1, "whole/unaccounted-process/" + gpu1}},
		{name: "uuids compare without regard to case", set: func(n *node) {
			n.region(uidA, "main", map[string]uint64{strings.ToLower(gpu0): gb(4)}, []string{strings.ToLower(gpu0)}, slot{7, 1000, []uint64{gb(3)}})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			n.pod(uidA, "a", assign.Container{Name: "main", Devices: one(gpu0, 4096)})
			n.region(uidA, "main", map[string]uint64{gpu0: gb(4)}, []string{gpu0}, slot{7, 1000, []uint64{gb(3)}})
			n.process(100, uidA, "main", 7, 1000)
			n.compute[0] = []nvml.ProcessInfo{{Pid: 100, UsedGpuMemory: gb(3) + ctxMiB}}
			tc.set(n)
			got := summary(n.auditor(0).Pass())
			want := tc.want
			sortStrings(want)
			sortStrings(got)
			if !same(got, want) {
				t.Fatalf("findings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

func sortStrings(s []string) {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
}

// The message says what was seen, with the numbers a person needs.
func TestFindingMessages(t *testing.T) {
	n := newNode(t)
	n.pod(uidA, "a", assign.Container{Name: "main", Devices: one(gpu0, 1024)})
	n.region(uidA, "main", map[string]uint64{gpu0: gib}, []string{gpu0}, slot{7, 1000, []uint64{0}})
	n.process(100, uidA, "main", 7, 1000)
	n.process(101, uidA, "main", 8, 1000)
	n.compute[0] = []nvml.ProcessInfo{{Pid: 100, UsedGpuMemory: 3 * gib}, {Pid: 101, UsedGpuMemory: 2 * gib}}
	got := map[string]string{}
	for _, f := range n.auditor(0).Pass() {
		got[f.Reason] = f.Message
	}
	for reason, want := range map[string]string{
		ReasonAboveLedger:        "pid 100 (7 in the container) holds 3072 MiB on " + gpu0 + "; libvgpu counts 0 MiB for it and 0 MiB shared by the container (tolerance 1024 MiB)",
		ReasonUnaccountedProcess: "pid 101 (8 in the container) holds 2048 MiB on " + gpu0 + " and has no slot in the container's region",
		ReasonAboveLimit:         "its 2 processes hold 5120 MiB on " + gpu0 + ", above its limit of 1024 MiB (tolerance 1024 MiB per process)",
	} {
		if !strings.Contains(got[reason], want) {
			t.Errorf("%s: %q, want it to contain %q", reason, got[reason], want)
		}
	}
}

// A discrepancy counts only once it has lasted: a process that is exiting
// still shows in NVML for a moment after libvgpu gave its slot back. Once
// confirmed it stays for the pod's life; it goes with the pod.
func TestConfirmationAndStickiness(t *testing.T) {
	n := newNode(t)
	n.pod(uidA, "a", assign.Container{Name: "main", Devices: one(gpu0, 4096)})
	n.region(uidA, "main", map[string]uint64{gpu0: gb(4)}, []string{gpu0})
	n.process(100, uidA, "main", 7, 1000)
	a := n.auditor(10 * time.Second)

	n.compute[0] = []nvml.ProcessInfo{{Pid: 100, UsedGpuMemory: gib}}
	if got := a.Pass(); len(got) != 0 {
		t.Fatalf("confirmed at first sight: %v", summary(got))
	}
	n.now = n.now.Add(5 * time.Second)
	n.compute[0] = nil // it exited: the discrepancy was transient
	a.Pass()
	n.now = n.now.Add(6 * time.Second)
	n.compute[0] = []nvml.ProcessInfo{{Pid: 100, UsedGpuMemory: gib}}
	if got := a.Pass(); len(got) != 0 {
		t.Fatalf("an interrupted discrepancy confirmed: %v", summary(got))
	}
	n.now = n.now.Add(10 * time.Second)
	got := a.Pass()
	if !same(summary(got), []string{"main/unaccounted-process/" + gpu0}) {
		t.Fatalf("after 10 s: %v", summary(got))
	}
	n.now = n.now.Add(5 * time.Second)
	n.compute[0] = nil
	if again := a.Pass(); len(again) != 0 {
		t.Fatalf("confirmed twice: %v", summary(again))
	}
	if u := a.Unenforced(); len(u) != 1 {
		t.Fatalf("the finding did not outlive the process: %v", summary(u))
	}
	n.pods = nil
	a.Pass()
	if u := a.Unenforced(); len(u) != 0 {
		t.Fatalf("a deleted pod is still reported: %v", summary(u))
	}
}

// A container with limits and no region: reported after the grace period,
// withdrawn when the region appears (an idle container has none either).
func TestNoRegion(t *testing.T) {
	n := newNode(t)
	n.pod(uidA, "a", assign.Container{Name: "main", Devices: []assign.Device{{UUID: gpu0, MemoryMiB: 1024}, {UUID: gpu1, MemoryMiB: 1024}}})
	st := n.pods[0].Containers["main"]
	st.StartedAt = n.now.Add(-30 * time.Second)
	n.pods[0].Containers["main"] = st
	// a pod without vgpu and a container still waiting to start: no finding
	n.pods = append(n.pods, pods.Pod{Ref: pods.Ref{Name: "plain", UID: types.UID(uidB)}})
	n.pods[0].Assignment.Containers = append(n.pods[0].Assignment.Containers, assign.Container{Name: "waiting", Devices: one(gpu1, 10)})
	a := n.auditor(0)
	if got := a.Pass(); len(got) != 0 {
		t.Fatalf("within the grace period: %v", summary(got))
	}
	n.now = n.now.Add(31 * time.Second)
	got := a.Pass()
	if !same(summary(got), []string{"main/no-region/" + gpu0, "main/no-region/" + gpu1}) {
		t.Fatalf("after the grace period: %v", summary(got))
	}
	if !strings.Contains(got[0].Message, "no readable region 1m0s after the container started") {
		t.Errorf("message %q", got[0].Message)
	}
	n.region(uidA, "main", nil, []string{gpu0, gpu1})
	a.Pass()
	if u := a.Unenforced(); len(u) != 0 {
		t.Fatalf("still reported once the region exists: %v", summary(u))
	}
}

// On the DRA path a container's region is its claim's (one per claim and
// request, shared by every container that uses the request): the audit
// judges each such container by it, as on the extender path by its own.
func TestClaimRegionsAreTheirContainers(t *testing.T) {
	const claimUID = "9c8b7a6d-1d2e-4f00-8a9b-0c1d2e3f4a5d"
	n := newNode(t)
	claims := t.TempDir()
	// The pod's assignment as the monitor reads it from the claim: both
	// containers run under the claim's 4 GiB on GPU 0.
	n.pod(uidA, "a", assign.Container{Name: "main", Devices: one(gpu0, 4096)}, assign.Container{Name: "side", Devices: one(gpu0, 4096)})
	users := func(claim, request string) []regions.Holder {
		if claim == claimUID && request == "gpu" {
			return []regions.Holder{{PodUID: uidA, Containers: []string{"main", "side"}}}
		}
		return nil
	}
	a := n.auditor(0)
	a.Claims = regions.Claims{Dir: claims, Users: users}
	if got := summary(a.Pass()); !same(got, []string{"main/no-region/" + gpu0, "side/no-region/" + gpu0}) {
		t.Fatalf("before libvgpu wrote the claim's region: %v", got)
	}

	// libvgpu in main books its process; side runs a static program.
	claimDir := filepath.Join(claims, contract.ClaimDirName(claimUID, "gpu"))
	n.regionIn(claimDir, map[string]uint64{gpu0: gb(4)}, []string{gpu0}, slot{7, 1000, []uint64{gb(2)}})
	// A claim no pod of the node holds is left alone.
	n.regionIn(filepath.Join(claims, contract.ClaimDirName(uidB, "gpu")), nil, []string{gpu1})
	n.process(100, uidA, "main", 7, 1000)
	n.process(101, uidA, "side", 3, 2000)
	n.compute[0] = []nvml.ProcessInfo{{Pid: 100, UsedGpuMemory: gb(2) + ctxMiB}, {Pid: 101, UsedGpuMemory: gb(1)}}
	a = n.auditor(0)
	a.Claims = regions.Claims{Dir: claims, Users: users}
	if got := summary(a.Pass()); !same(got, []string{"side/unaccounted-process/" + gpu0}) {
		t.Fatalf("with the claim's region: %v, want side's static program alone", got)
	}

	// libvgpu's verdict in the claim's region marks both containers.
	r := region.Region{Header: region.Header{Magic: region.Magic, Version: region.Version, Flags: region.FlagUnenforced,
		Reason: region.ReasonBadEnv, ReasonText: "VGPU_MEMORY_LIMITS_MIB: not a number"}}
	n.write(filepath.Join(claimDir, contract.RegionFileName), string(r.Encode()))
	n.compute[0] = nil
	got := a.Pass()
	if !same(summary(got), []string{"main/bad-env/", "side/bad-env/"}) || !got[0].Libvgpu {
		t.Fatalf("libvgpu's verdict in the claim's region: %+v", got)
	}
}

// libvgpu's own verdict (the region's flag) is a finding too, so that it
// gets the same Event and, when the settings say so, eviction.
func TestLibvgpuVerdictIsAFinding(t *testing.T) {
	n := newNode(t)
	n.pod(uidA, "a", assign.Container{Name: "main", Devices: one(gpu0, 4096)})
	r := region.Region{Header: region.Header{Magic: region.Magic, Version: region.Version, Flags: region.FlagUnenforced,
		Reason: region.ReasonBadEnv, ReasonText: "VGPU_MEMORY_LIMITS_MIB: not a number"}}
	n.write(filepath.Join(n.dir, contract.ContainerDirName(uidA, "main"), contract.RegionFileName), string(r.Encode()))
	got := n.auditor(0).Pass()
	if len(got) != 1 || !got[0].Libvgpu || got[0].Reason != "bad-env" || got[0].Message != "VGPU_MEMORY_LIMITS_MIB: not a number" {
		t.Fatalf("findings %+v", got)
	}
}

// A driver that lists only the processes of the caller's pid namespace
// shows a monitor outside the host's none of the pods' processes: every
// check above would pass vacuously. The monitor notices that a region counts
// memory NVML attributes to nobody of that pod, and says it is blind.
func TestBlindWhenNVMLShowsNoProcessOfAContainerHoldingMemory(t *testing.T) {
	n := newNode(t)
	n.pod(uidA, "a", assign.Container{Name: "main", Devices: one(gpu0, 4096)})
	n.region(uidA, "main", map[string]uint64{gpu0: gb(4)}, []string{gpu0}, slot{7, 1000, []uint64{gb(3)}})
	n.process(100, uidA, "main", 7, 1000)
	a := n.auditor(10 * time.Second)
	a.Pass()
	n.now = n.now.Add(10 * time.Second)
	a.Pass()
	if !a.Blind() {
		t.Fatal("not blind while NVML lists no process of a container holding 3 GiB")
	}
	n.compute[0] = []nvml.ProcessInfo{{Pid: 100, UsedGpuMemory: gb(3)}}
	a.Pass()
	if a.Blind() {
		t.Fatal("still blind once NVML lists the container's process")
	}
	n.compute[0] = nil
	n.region(uidA, "main", map[string]uint64{gpu0: gb(4)}, []string{gpu0}) // freed everything
	n.now = n.now.Add(time.Minute)
	a.Pass()
	if a.Blind() {
		t.Fatal("blind although no container holds memory")
	}
}

// libvgpu counts processes past its slot table, and exported memory, for the
// container rather than for a process (the region's mem_unslotted and
// mem_shared): those are compared as libvgpu counts them, not flagged for
// lacking a slot.
func TestOverflowAndSharedMemory(t *testing.T) {
	for _, tc := range []struct {
		name              string
		unslotted, shared uint64
		want              []string
	}{
		{"counted as libvgpu counts them", gb(4), gb(3), nil},
		{"no overflow recorded: slotless processes are unaccounted", 0, gb(3),
			[]string{"main/unaccounted-process/" + gpu0}}, // one finding per container, reason and GPU
		{"slotless processes above what libvgpu counts for them", gib / 2, gb(3),
			[]string{"main/unaccounted-process/" + gpu0}},
		{"mapped memory nobody exported", gb(4), 0, []string{"main/above-ledger/" + gpu0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			n.pod(uidA, "a", assign.Container{Name: "main", Devices: one(gpu0, 8192)})
			n.process(100, uidA, "main", 7, 1000) // slot: 1 GiB, maps 3 GiB exported by another
			n.process(101, uidA, "main", 8, 1000) // past the slot table
			n.process(102, uidA, "main", 9, 1000) // past the slot table
			r := region.Region{Header: region.Header{Magic: region.Magic, Version: region.Version, DeviceCount: 1}}
			r.Devices[0] = region.Device{UUID: gpu0, MemLimit: gb(8), MemUsed: gib + tc.unslotted + tc.shared,
				MemUnslotted: tc.unslotted, MemShared: tc.shared}
			r.Processes[0] = region.Process{PID: 7, State: region.ProcActive, StartTime: 1000}
			r.Processes[0].MemUsed[0] = gib
			n.write(filepath.Join(n.dir, contract.ContainerDirName(uidA, "main"), contract.RegionFileName), string(r.Encode()))
			n.compute[0] = []nvml.ProcessInfo{{Pid: 100, UsedGpuMemory: gb(4) + ctxMiB}, {Pid: 101, UsedGpuMemory: gb(2)}, {Pid: 102, UsedGpuMemory: gb(2)}}
			if got := summary(n.auditor(0).Pass()); !same(got, tc.want) {
				t.Fatalf("findings %v, want %v", got, tc.want)
			}
		})
	}
}

// A region that cannot be read (truncated by a process of the container, or
// a layout of another version) hides the slots: it is reported as such, the
// processes are not each called unaccounted, and the container's total is
// still held against its limit.
func TestUnreadableRegion(t *testing.T) {
	n := newNode(t)
	n.pod(uidA, "a", assign.Container{Name: "main", Devices: one(gpu0, 4096)})
	n.write(filepath.Join(n.dir, contract.ContainerDirName(uidA, "main"), contract.RegionFileName), "VGPU truncated")
	n.process(100, uidA, "main", 7, 1000)
	n.compute[0] = []nvml.ProcessInfo{{Pid: 100, UsedGpuMemory: gb(3)}}
	a := n.auditor(0)
	got := a.Pass()
	if !same(summary(got), []string{"main/region-unreadable/" + gpu0}) {
		t.Fatalf("findings %v", summary(got))
	}
	if !strings.Contains(got[0].Message, "cannot be read (region: ") {
		t.Errorf("message %q does not say why", got[0].Message)
	}
	n.compute[0] = []nvml.ProcessInfo{{Pid: 100, UsedGpuMemory: gb(6)}}
	if got := a.Pass(); !same(summary(got), []string{"main/above-limit/" + gpu0}) {
		t.Fatalf("above its limit with an unreadable region: %v", summary(got))
	}
	// Repaired: the unreadable finding goes, the evidence stays.
	n.region(uidA, "main", map[string]uint64{gpu0: gb(4)}, []string{gpu0}, slot{7, 1000, []uint64{gb(6)}})
	a.Pass()
	if u := a.Unenforced(); !same(summary(u), []string{"main/above-limit/" + gpu0}) {
		t.Fatalf("after repair: %v", summary(u))
	}
}
