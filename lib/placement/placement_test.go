package placement

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/ledger"
	"github.com/vgpu-io/vgpu/lib/request"
	"github.com/vgpu-io/vgpu/lib/settings"
)

// gpus builds an inventory from "model:MiB" specs, uuids GPU-<index>.
func gpus(split int, scaling float64, specs ...string) device.Inventory {
	inv := device.Inventory{SplitCount: split, MemoryScaling: scaling}
	for i, s := range specs {
		var model string
		var mem int64
		parts := strings.Split(s, ":")
		model = parts[0]
		fmt.Sscan(parts[1], &mem)
		inv.GPUs = append(inv.GPUs, device.GPU{UUID: fmt.Sprintf("GPU-%d", i), Index: i, Model: model, MemoryMiB: mem, Healthy: true})
	}
	return inv
}

func repeat(n int, s string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// held books a one-container pod on node's GPU uuid.
type held struct {
	node, uuid string
	mem        int64
	cores      int
}

func book(t *testing.T, l *ledger.Ledger, hs []held) {
	t.Helper()
	for i, h := range hs {
		a := assign.Pod{Node: h.node, Containers: []assign.Container{{Name: "c", Devices: []assign.Device{{UUID: h.uuid, MemoryMiB: h.mem, Cores: h.cores}}}}}
		if err := l.Reserve(fmt.Sprint("held-", i), a); err != nil {
			t.Fatalf("booking %+v: %v", h, err)
		}
	}
}

func share(name string, count int, mem int64, pct, cores int) request.Container {
	return request.Container{Name: name, Count: count, MemoryMiB: mem, MemoryPercent: pct, Cores: cores, Exclusive: cores == 100}
}

func whole(name string, count int) request.Container {
	return request.Container{Name: name, Count: count, Exclusive: true}
}

// sidecar marks c a restartable init container.
func sidecar(c request.Container) request.Container {
	c.Init, c.Sidecar = true, true
	return c
}

// dev is "uuid/memory/cores" for compact expectations.
func devs(a assign.Pod) map[string][]string {
	out := map[string][]string{}
	for _, c := range a.Containers {
		for _, d := range c.Devices {
			out[c.Name] = append(out[c.Name], fmt.Sprintf("%s/%d/%d", d.UUID, d.MemoryMiB, d.Cores))
		}
	}
	return out
}

func TestPlan(t *testing.T) {
	unhealthy := gpus(10, 1, "T4:16000", "T4:16000")
	unhealthy.GPUs[0].Healthy = false
	cases := []struct {
		name    string
		inv     device.Inventory
		held    []held
		pod     request.Pod
		gpuPol  settings.Policy
		want    map[string][]string
		wantErr string
		// wantUsed, when set, is GPU-0's booked memory after the bind.
		wantUsed int64
	}{
		{name: "N vGPUs land on different GPUs",
			inv: gpus(10, 1, repeat(3, "T4:16000")...), pod: request.Pod{Containers: []request.Container{share("a", 2, 1000, 0, 10)}},
			want: map[string][]string{"a": {"GPU-0/1000/10", "GPU-1/1000/10"}}},
		{name: "N vGPUs need N GPUs",
			inv: gpus(10, 1, "T4:16000"), pod: request.Pod{Containers: []request.Container{share("a", 2, 1000, 0, 10)}},
			wantErr: `container "a" needs 2 GPU(s), 1 of 1 fit`},
		{name: "later app container shares a GPU with an earlier one", gpuPol: settings.Binpack,
			inv:  gpus(10, 1, "T4:16000", "T4:16000"),
			pod:  request.Pod{Containers: []request.Container{share("a", 1, 6000, 0, 30), share("b", 1, 6000, 0, 30)}},
			want: map[string][]string{"a": {"GPU-0/6000/30"}, "b": {"GPU-0/6000/30"}}},
		{name: "app containers add up",
			inv:     gpus(10, 1, "T4:16000"),
			pod:     request.Pod{Containers: []request.Container{share("a", 1, 10000, 0, 30), share("b", 1, 10000, 0, 30)}},
			wantErr: `container "b" needs 1 GPU(s), 0 of 1 fit; insufficient GPU memory: 1 of 1 GPUs have < 10000 MiB free`},
		{name: "init containers count as their max, not their sum",
			inv: gpus(10, 1, "T4:16000"),
			pod: request.Pod{Containers: []request.Container{
				{Name: "i1", Init: true, Count: 1, MemoryMiB: 12000}, {Name: "i2", Init: true, Count: 1, MemoryMiB: 12000},
				share("app", 1, 10000, 0, 0)}},
			want: map[string][]string{"i1": {"GPU-0/12000/0"}, "i2": {"GPU-0/12000/0"}, "app": {"GPU-0/10000/0"}}},
		{name: "init container must fit beside other pods",
			inv: gpus(10, 1, "T4:16000"), held: []held{{"n", "GPU-0", 8000, 0}},
			pod:     request.Pod{Containers: []request.Container{{Name: "i1", Init: true, Count: 1, MemoryMiB: 9000}, share("app", 1, 1000, 0, 0)}},
			wantErr: `init container "i1" needs 1 GPU(s), 0 of 1 fit; insufficient GPU memory: 1 of 1 GPUs have < 9000 MiB free`},
		{name: "a sidecar runs beside the app: their shares add up",
			inv: gpus(10, 1, "T4:16000"), held: []held{{"n", "GPU-0", 9000, 0}},
			pod:  request.Pod{Containers: []request.Container{sidecar(share("side", 1, 3000, 0, 20)), share("app", 1, 4000, 0, 30)}},
			want: map[string][]string{"side": {"GPU-0/3000/20"}, "app": {"GPU-0/4000/30"}}, wantUsed: 16000},
		{name: "a sidecar and the app are refused when their sum exceeds the GPU",
			inv: gpus(10, 1, "T4:16000"), held: []held{{"n", "GPU-0", 9001, 0}},
			pod:     request.Pod{Containers: []request.Container{sidecar(share("side", 1, 3000, 0, 20)), share("app", 1, 4000, 0, 30)}},
			wantErr: `container "app" needs 1 GPU(s), 0 of 1 fit; insufficient GPU memory: 1 of 1 GPUs have < 4000 MiB free`},
		{name: "sidecar and app cores add up",
			inv:     gpus(10, 1, "T4:16000"),
			pod:     request.Pod{Containers: []request.Container{sidecar(share("side", 1, 1000, 0, 60)), share("app", 1, 1000, 0, 50)}},
			wantErr: `insufficient GPU cores: 1 of 1 GPUs have < 50 % of their cores free`},
		{name: "an init container after a sidecar runs beside it",
			inv: gpus(10, 1, "T4:16000"),
			pod: request.Pod{Containers: []request.Container{sidecar(share("side", 1, 6000, 0, 0)),
				{Name: "i", Init: true, Count: 1, MemoryMiB: 11000}, share("app", 1, 1000, 0, 0)}},
			wantErr: `init container "i" needs 1 GPU(s), 0 of 1 fit; insufficient GPU memory: 1 of 1 GPUs have < 11000 MiB free`},
		{name: "an init container before a sidecar runs without it",
			inv: gpus(10, 1, "T4:16000"),
			pod: request.Pod{Containers: []request.Container{{Name: "i", Init: true, Count: 1, MemoryMiB: 11000},
				sidecar(share("side", 1, 6000, 0, 0)), share("app", 1, 1000, 0, 0)}},
			want: map[string][]string{"i": {"GPU-0/11000/0"}, "side": {"GPU-0/6000/0"}, "app": {"GPU-0/1000/0"}}, wantUsed: 11000},
		{name: "init container and earlier sidecar book init+sidecar",
			inv: gpus(10, 1, "T4:16000"),
			pod: request.Pod{Containers: []request.Container{sidecar(share("side", 1, 6000, 0, 0)),
				{Name: "i", Init: true, Count: 1, MemoryMiB: 10000}, share("app", 1, 1000, 0, 0)}},
			want: map[string][]string{"i": {"GPU-0/10000/0"}, "side": {"GPU-0/6000/0"}, "app": {"GPU-0/1000/0"}}, wantUsed: 16000},
		{name: "a whole-GPU sidecar is not shared with the app",
			inv:     gpus(10, 1, "T4:16000"),
			pod:     request.Pod{Containers: []request.Container{sidecar(whole("side", 1)), share("app", 1, 1000, 0, 0)}},
			wantErr: `container "app" needs 1 GPU(s), 0 of 1 fit; 1 of 1 GPUs are held whole`},
		{name: "a whole-GPU sidecar and the app take different GPUs",
			inv:  gpus(10, 1, "T4:16000", "T4:16000"),
			pod:  request.Pod{Containers: []request.Container{sidecar(whole("side", 1)), share("app", 1, 1000, 0, 0)}},
			want: map[string][]string{"side": {"GPU-0/16000/100"}, "app": {"GPU-1/1000/0"}}},
		{name: "a whole-GPU init container does not share with an earlier sidecar",
			inv:     gpus(10, 1, "T4:16000"),
			pod:     request.Pod{Containers: []request.Container{sidecar(share("side", 1, 1000, 0, 0)), {Name: "i", Init: true, Count: 1, Exclusive: true}, share("app", 1, 1000, 0, 0)}},
			wantErr: `1 of 1 GPUs are in use, and the container needs whole GPUs`},
		{name: "whole GPU goes to an unused GPU",
			inv: gpus(10, 1, "T4:16000", "T4:16000"), held: []held{{"n", "GPU-0", 1000, 10}},
			pod:  request.Pod{Containers: []request.Container{whole("a", 1)}},
			want: map[string][]string{"a": {"GPU-1/16000/100"}}},
		{name: "whole GPU refuses shared GPUs",
			inv: gpus(10, 1, "T4:16000", "T4:16000"), held: []held{{"n", "GPU-0", 1000, 10}, {"n", "GPU-1", 1000, 10}},
			pod:     request.Pod{Containers: []request.Container{whole("a", 1)}},
			wantErr: `2 of 2 GPUs are in use, and the container needs whole GPUs`},
		{name: "gpucores 100 is whole too; a share avoids it",
			inv: gpus(10, 1, "T4:16000", "T4:16000"), held: []held{{"n", "GPU-0", 2000, 100}},
			pod:  request.Pod{Containers: []request.Container{share("a", 1, 1000, 0, 10)}},
			want: map[string][]string{"a": {"GPU-1/1000/10"}}},
		{name: "a GPU held whole is refused with a reason",
			inv: gpus(10, 1, "T4:16000"), held: []held{{"n", "GPU-0", 2000, 100}},
			pod:     request.Pod{Containers: []request.Container{share("a", 1, 1000, 0, 10)}},
			wantErr: `1 of 1 GPUs are held whole by another pod`},
		{name: "use-gputype",
			inv:  gpus(10, 1, "Tesla T4:16000", "NVIDIA A100-SXM4-80GB:81920"),
			pod:  request.Pod{Containers: []request.Container{share("a", 1, 1000, 0, 0)}, Selector: request.Selector{UseTypes: []string{"a100"}}},
			want: map[string][]string{"a": {"GPU-1/1000/0"}}},
		{name: "nouse-gputype",
			inv:     gpus(10, 1, "Tesla T4:16000"),
			pod:     request.Pod{Containers: []request.Container{share("a", 1, 1000, 0, 0)}, Selector: request.Selector{NoUseTypes: []string{"t4"}}},
			wantErr: `1 of 1 GPUs are excluded by the pod's use/nouse-gputype or gpuuuid annotations`},
		{name: "use-gpuuuid",
			inv:  gpus(10, 1, "T4:16000", "T4:16000", "T4:16000"),
			pod:  request.Pod{Containers: []request.Container{share("a", 1, 1000, 0, 0)}, Selector: request.Selector{UseUUIDs: []string{"GPU-2"}}},
			want: map[string][]string{"a": {"GPU-2/1000/0"}}},
		{name: "nouse-gpuuuid",
			inv:  gpus(10, 1, "T4:16000", "T4:16000"),
			pod:  request.Pod{Containers: []request.Container{share("a", 1, 1000, 0, 0)}, Selector: request.Selector{NoUseUUIDs: []string{"GPU-0"}}},
			want: map[string][]string{"a": {"GPU-1/1000/0"}}},
		{name: "split count",
			inv: gpus(2, 1, "T4:16000"), held: []held{{"n", "GPU-0", 1, 0}, {"n", "GPU-0", 1, 0}},
			pod:     request.Pod{Containers: []request.Container{share("a", 1, 1, 0, 0)}},
			wantErr: `no free vGPU slot: 1 of 1 GPUs already hold 2 vGPUs (split count)`},
		{name: "memory scaling lets memory be overcommitted",
			inv: gpus(10, 2, "T4:16000"), held: []held{{"n", "GPU-0", 16000, 0}},
			pod:  request.Pod{Containers: []request.Container{share("a", 1, 0, 0, 20)}},
			want: map[string][]string{"a": {"GPU-0/16000/20"}}},
		{name: "memory scaling 1 does not",
			inv: gpus(10, 1, "T4:16000"), held: []held{{"n", "GPU-0", 1, 0}},
			pod:     request.Pod{Containers: []request.Container{share("a", 1, 0, 0, 20)}},
			wantErr: `1 of 1 GPUs are partly in use, and the container takes all of a GPU's memory`},
		{name: "percentage resolves against each GPU's own memory",
			inv:  gpus(10, 1, "T4:16000", "A100:80000"),
			pod:  request.Pod{Containers: []request.Container{share("a", 2, 0, 25, 10)}},
			want: map[string][]string{"a": {"GPU-0/4000/10", "GPU-1/20000/10"}}},
		{name: "cores",
			inv: gpus(10, 1, "T4:16000"), held: []held{{"n", "GPU-0", 1, 80}},
			pod:     request.Pod{Containers: []request.Container{share("a", 1, 1, 0, 30)}},
			wantErr: `insufficient GPU cores: 1 of 1 GPUs have < 30 % of their cores free`},
		{name: "unhealthy GPUs are never used",
			inv:  unhealthy,
			pod:  request.Pod{Containers: []request.Container{share("a", 1, 1, 0, 0)}},
			want: map[string][]string{"a": {"GPU-1/1/0"}}},
		{name: "unhealthy GPUs are counted in the reason",
			inv:     unhealthy,
			pod:     request.Pod{Containers: []request.Container{share("a", 2, 1, 0, 0)}},
			wantErr: `container "a" needs 2 GPU(s), 1 of 2 fit; 1 of 2 GPUs are unhealthy`},
		{name: "reason counts GPUs short of memory",
			inv: gpus(10, 1, repeat(8, "A100:40000")...),
			held: []held{{"n", "GPU-0", 30000, 0}, {"n", "GPU-1", 30000, 0}, {"n", "GPU-2", 30000, 0},
				{"n", "GPU-3", 100, 100}, {"n", "GPU-4", 100, 100}, {"n", "GPU-5", 100, 100}, {"n", "GPU-6", 100, 100}, {"n", "GPU-7", 100, 100}},
			pod:     request.Pod{Containers: []request.Container{share("train", 1, 20000, 0, 0)}},
			wantErr: `container "train" needs 1 GPU(s), 0 of 8 fit; 5 of 8 GPUs are held whole by another pod; insufficient GPU memory: 3 of 8 GPUs have < 20000 MiB free`},
		{name: "gpu policy binpack takes the fullest GPU", gpuPol: settings.Binpack,
			inv: gpus(10, 1, repeat(3, "T4:16000")...), held: []held{{"n", "GPU-1", 4000, 0}, {"n", "GPU-2", 8000, 0}},
			pod:  request.Pod{Containers: []request.Container{share("a", 1, 4000, 0, 0)}},
			want: map[string][]string{"a": {"GPU-2/4000/0"}}},
		{name: "gpu policy spread takes the emptiest GPU", gpuPol: settings.Spread,
			inv: gpus(10, 1, repeat(3, "T4:16000")...), held: []held{{"n", "GPU-0", 4000, 0}, {"n", "GPU-2", 8000, 0}},
			pod:  request.Pod{Containers: []request.Container{share("a", 1, 4000, 0, 0)}},
			want: map[string][]string{"a": {"GPU-1/4000/0"}}},
		{name: "binpack skips a GPU the share no longer fits", gpuPol: settings.Binpack,
			inv: gpus(10, 1, repeat(3, "T4:16000")...), held: []held{{"n", "GPU-1", 4000, 0}, {"n", "GPU-2", 14000, 0}},
			pod:  request.Pod{Containers: []request.Container{share("a", 1, 4000, 0, 0)}},
			want: map[string][]string{"a": {"GPU-1/4000/0"}}},
		{name: "pod annotation overrides the gpu policy", gpuPol: settings.Spread,
			inv: gpus(10, 1, repeat(2, "T4:16000")...), held: []held{{"n", "GPU-1", 4000, 0}},
			pod:  request.Pod{Containers: []request.Container{share("a", 1, 4000, 0, 0)}, GPUPolicy: settings.Binpack},
			want: map[string][]string{"a": {"GPU-1/4000/0"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := ledger.New()
			l.SetInventory("n", tc.inv)
			book(t, l, tc.held)
			pol := Policies{Node: settings.Binpack, GPU: tc.gpuPol}
			if pol.GPU == "" {
				pol.GPU = settings.Spread
			}
			fits, failed := Filter(l, &tc.pod, []string{"n"}, pol)
			a, err := Plan(l, &tc.pod, "n", pol)
			if tc.wantErr != "" {
				var fe *FitError
				if !errors.As(err, &fe) || !strings.Contains(fe.Reason, tc.wantErr) {
					t.Fatalf("err = %v, want reason containing %q", err, tc.wantErr)
				}
				if len(fits) != 0 || failed["n"] != fe.Reason {
					t.Fatalf("Filter disagrees with Plan: fits %v, failed %v", fits, failed)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(fits) != 1 {
				t.Fatalf("Filter disagrees with Plan: %v", failed)
			}
			if got := devs(a); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %v\nwant %v", got, tc.want)
			}
			// The plan must book: placement and ledger agree on every rule.
			if b, err := Bind(l, "new", &tc.pod, "n", pol); err != nil || !reflect.DeepEqual(b, a) {
				t.Fatalf("Bind = %v, %v; want the plan", b, err)
			}
			if tc.wantUsed > 0 {
				l.Node("n").View(func(v ledger.View) {
					if v.Used[0].MemoryMiB != tc.wantUsed {
						t.Fatalf("GPU-0 books %d MiB, want %d", v.Used[0].MemoryMiB, tc.wantUsed)
					}
				})
			}
		})
	}
}

func TestScoreAndBest(t *testing.T) {
	l := ledger.New()
	l.SetInventory("a-big", gpus(10, 1, repeat(4, "T4:16000")...))
	l.SetInventory("b-half", gpus(10, 1, repeat(2, "T4:16000")...))
	l.SetInventory("c-empty", gpus(10, 1, repeat(2, "T4:16000")...))
	l.SetInventory("d-empty", gpus(10, 1, repeat(2, "T4:16000")...))
	book(t, l, []held{{"b-half", "GPU-0", 8000, 0}})
	pod := &request.Pod{Containers: []request.Container{share("x", 1, 8000, 0, 0)}}
	names := []string{"a-big", "b-half", "c-empty", "d-empty", "missing"}

	bin := Policies{Node: settings.Binpack, GPU: settings.Binpack}
	spr := Policies{Node: settings.Spread, GPU: settings.Spread}
	// Scores include the pod: b-half goes to 16000/32000 = 50 % with it on
	// GPU-0 (binpack), a-big to 8000/64000.
	if got, want := Prioritize(l, pod, names, bin), []int{13, 50, 25, 25, 0}; !reflect.DeepEqual(got, want) {
		t.Fatalf("binpack scores %v, want %v", got, want)
	}
	if got, want := Prioritize(l, pod, names, spr), []int{88, 50, 75, 75, 0}; !reflect.DeepEqual(got, want) {
		t.Fatalf("spread scores %v, want %v", got, want)
	}
	if s, err := Score(l, pod, "b-half", bin); err != nil || s != 50 {
		t.Fatalf("Score = %d, %v", s, err)
	}
	if _, err := Score(l, pod, "missing", bin); err == nil || !strings.Contains(err.Error(), "no vGPU inventory") {
		t.Fatalf("Score on unknown node: %v", err)
	}
	handles := l.Lookup(names, nil)
	if i := Best(pod, handles, bin, nil); names[i] != "b-half" {
		t.Fatalf("binpack best = %s", names[i])
	}
	if i := Best(pod, handles, spr, nil); names[i] != "a-big" {
		t.Fatalf("spread best = %s", names[i])
	}
	// Ties go to the name that sorts first, whatever the input order.
	rev := l.Lookup([]string{"d-empty", "c-empty"}, nil)
	if i := Best(pod, rev, spr, nil); rev[i].Name() != "c-empty" {
		t.Fatalf("tie went to %s", rev[i].Name())
	}
	if i := Best(pod, handles, bin, func(i int) bool { return names[i] == "b-half" }); names[i] != "c-empty" {
		t.Fatalf("skip ignored: %s", names[i])
	}
}

// TestScoreNoGPUPod: a pod that asks for no GPU (the simulator ranks
// CPU-only pods this way) scores each node by its GPUs as they stand, and a
// node without a GPU counts as full, so binpack sends the pod where it can
// strand no free GPU.
func TestScoreNoGPUPod(t *testing.T) {
	l := ledger.New()
	l.SetInventory("a-free", gpus(10, 1, repeat(2, "T4:16000")...))
	l.SetInventory("b-full", gpus(10, 1, "T4:16000", "T4:16000"))
	l.SetInventory("c-cpu", gpus(10, 1))
	l.SetInventory("d-quarter", gpus(10, 1, repeat(2, "T4:16000")...))
	book(t, l, []held{{"b-full", "GPU-0", 16000, 100}, {"b-full", "GPU-1", 8000, 50}, {"d-quarter", "GPU-0", 8000, 50}})
	cpuOnly := &request.Pod{}
	names := []string{"a-free", "b-full", "c-cpu", "d-quarter"}
	// b-full: (1 + 0.5) / 2 = 75 %; d-quarter: 0.5 / 2 = 25 %.
	if got, want := Prioritize(l, cpuOnly, names, Policies{Node: settings.Binpack, GPU: settings.Binpack}), []int{0, 75, 100, 25}; !reflect.DeepEqual(got, want) {
		t.Fatalf("binpack scores %v, want %v", got, want)
	}
	if got, want := Prioritize(l, cpuOnly, names, Policies{Node: settings.Spread, GPU: settings.Spread}), []int{100, 25, 0, 75}; !reflect.DeepEqual(got, want) {
		t.Fatalf("spread scores %v, want %v", got, want)
	}
}

func TestFilterReasons(t *testing.T) {
	l := ledger.New()
	l.SetInventory("ok", gpus(10, 1, "T4:16000"))
	l.SetInventory("full", gpus(10, 1, "T4:16000"))
	book(t, l, []held{{"full", "GPU-0", 16000, 0}})
	pod := &request.Pod{Containers: []request.Container{share("x", 1, 8000, 0, 0)}}
	fits, failed := Filter(l, pod, []string{"full", "ok", "ghost"}, Policies{Node: settings.Binpack, GPU: settings.Spread})
	if !reflect.DeepEqual(fits, []string{"ok"}) {
		t.Fatalf("fits %v", fits)
	}
	if !strings.Contains(failed["full"], "insufficient GPU memory: 1 of 1 GPUs have < 8000 MiB free") ||
		!strings.Contains(failed["ghost"], "no vGPU inventory") || len(failed) != 2 {
		t.Fatalf("failed %v", failed)
	}
}

// TestBindRace: many binds race for a node with room for three; exactly
// three win, the others get a FitError, and the books show three.
func TestBindRace(t *testing.T) {
	l := ledger.New()
	l.SetInventory("n", gpus(10, 1, "T4:16000"))
	pod := &request.Pod{Containers: []request.Container{share("x", 1, 5000, 0, 0)}}
	var wg sync.WaitGroup
	errs := make([]error, 32)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = Bind(l, fmt.Sprint("p", i), pod, "n", Policies{Node: settings.Binpack, GPU: settings.Spread})
		}(i)
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		var fe *FitError
		switch {
		case err == nil:
			won++
		case !errors.As(err, &fe):
			t.Fatalf("unexpected error %v", err)
		}
	}
	if won != 3 || l.State("n")[0].Used.MemoryMiB != 15000 {
		t.Fatalf("won %d, usage %+v", won, l.State("n")[0].Used)
	}
}
