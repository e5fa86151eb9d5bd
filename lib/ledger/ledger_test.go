package ledger

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/device"
)

func inv(n int, memMiB int64, split int, scaling float64) device.Inventory {
	v := device.Inventory{SplitCount: split, MemoryScaling: scaling}
	for i := 0; i < n; i++ {
		v.GPUs = append(v.GPUs, device.GPU{UUID: fmt.Sprintf("GPU-%d", i), Index: i, Model: "T4", MemoryMiB: memMiB, Healthy: true})
	}
	return v
}

func one(node, uuid string, mem int64, cores int) assign.Pod {
	return assign.Pod{Node: node, Containers: []assign.Container{{Name: "c", Devices: []assign.Device{{UUID: uuid, MemoryMiB: mem, Cores: cores}}}}}
}

func used(l *Ledger, node string, i int) Usage { return l.State(node)[i].Used }

func TestFootprint(t *testing.T) {
	a := assign.Pod{Node: "n", Containers: []assign.Container{
		{Name: "init1", Init: true, Devices: []assign.Device{{UUID: "A", MemoryMiB: 8000, Cores: 10}}},
		{Name: "init2", Init: true, Devices: []assign.Device{{UUID: "B", MemoryMiB: 100, Cores: 100}}},
		{Name: "app1", Devices: []assign.Device{{UUID: "A", MemoryMiB: 3000, Cores: 30}}},
		{Name: "app2", Devices: []assign.Device{{UUID: "A", MemoryMiB: 2000, Cores: 0}, {UUID: "C", MemoryMiB: 1000, Cores: 20}}},
	}}
	want := []Use{
		// app sum 2 slots, 5000 MiB, 30 cores; init1 raises memory to 8000.
		{UUID: "A", Slots: 2, MemoryMiB: 8000, Cores: 30},
		{UUID: "C", Slots: 1, MemoryMiB: 1000, Cores: 20},
		{UUID: "B", Slots: 1, MemoryMiB: 100, Cores: 100, Exclusive: true},
	}
	if got := Footprint(&a); !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
}

func TestFootprintSidecars(t *testing.T) {
	dev := func(uuid string, mem int64, cores int) []assign.Device {
		return []assign.Device{{UUID: uuid, MemoryMiB: mem, Cores: cores}}
	}
	cases := []struct {
		name string
		ctrs []assign.Container
		want []Use
	}{
		{name: "a sidecar adds to the app containers",
			ctrs: []assign.Container{
				{Name: "side", Init: true, Sidecar: true, Devices: dev("A", 3000, 20)},
				{Name: "app", Devices: dev("A", 4000, 30)}},
			want: []Use{{UUID: "A", Slots: 2, MemoryMiB: 7000, Cores: 50}}},
		{name: "an init container after a sidecar runs beside it",
			ctrs: []assign.Container{
				{Name: "side", Init: true, Sidecar: true, Devices: dev("A", 3000, 20)},
				{Name: "init", Init: true, Devices: dev("A", 9000, 40)},
				{Name: "app", Devices: dev("A", 4000, 30)}},
			want: []Use{{UUID: "A", Slots: 2, MemoryMiB: 12000, Cores: 60}}},
		{name: "an init container before a sidecar runs without it",
			ctrs: []assign.Container{
				{Name: "init", Init: true, Devices: dev("A", 9000, 40)},
				{Name: "side", Init: true, Sidecar: true, Devices: dev("A", 3000, 20)},
				{Name: "app", Devices: dev("A", 4000, 30)}},
			want: []Use{{UUID: "A", Slots: 2, MemoryMiB: 9000, Cores: 50}}},
		{name: "a sidecar on another GPU does not add",
			ctrs: []assign.Container{
				{Name: "side", Init: true, Sidecar: true, Devices: dev("B", 3000, 20)},
				{Name: "init", Init: true, Devices: dev("A", 9000, 40)}},
			want: []Use{{UUID: "B", Slots: 1, MemoryMiB: 3000, Cores: 20}, {UUID: "A", Slots: 1, MemoryMiB: 9000, Cores: 40}}},
		{name: "a whole-GPU sidecar holds its GPU",
			ctrs: []assign.Container{
				{Name: "side", Init: true, Sidecar: true, Devices: dev("A", 16000, 100)},
				{Name: "app", Devices: dev("B", 4000, 30)}},
			want: []Use{{UUID: "A", Slots: 1, MemoryMiB: 16000, Cores: 100, Exclusive: true}, {UUID: "B", Slots: 1, MemoryMiB: 4000, Cores: 30}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := assign.Pod{Node: "n", Containers: tc.ctrs}
			if got := Footprint(&a); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestReserveGuards(t *testing.T) {
	unhealthy := inv(2, 16000, 2, 1)
	unhealthy.GPUs[1].Healthy = false
	cases := []struct {
		name    string
		inv     device.Inventory
		first   []assign.Pod
		next    assign.Pod
		wantErr string
	}{
		{name: "fits", inv: inv(1, 16000, 4, 1), first: []assign.Pod{one("n", "GPU-0", 8000, 50)}, next: one("n", "GPU-0", 8000, 50)},
		{name: "memory", inv: inv(1, 16000, 4, 1), first: []assign.Pod{one("n", "GPU-0", 8000, 0)}, next: one("n", "GPU-0", 8001, 0), wantErr: "8000+8001 MiB exceed 16000 MiB"},
		{name: "memory scaling allows overcommit", inv: inv(1, 16000, 4, 1.5), first: []assign.Pod{one("n", "GPU-0", 16000, 0)}, next: one("n", "GPU-0", 8000, 0)},
		{name: "cores", inv: inv(1, 16000, 4, 1), first: []assign.Pod{one("n", "GPU-0", 1, 60)}, next: one("n", "GPU-0", 1, 41), wantErr: "60+41 cores exceed 100"},
		{name: "slots", inv: inv(1, 16000, 2, 1), first: []assign.Pod{one("n", "GPU-0", 1, 0), one("n", "GPU-0", 1, 0)}, next: one("n", "GPU-0", 1, 0), wantErr: "2+1 vGPUs exceed the split count 2"},
		{name: "exclusive holder", inv: inv(1, 16000, 4, 1), first: []assign.Pod{one("n", "GPU-0", 16000, 100)}, next: one("n", "GPU-0", 1, 0), wantErr: "held whole by another pod"},
		{name: "exclusive on shared", inv: inv(1, 16000, 4, 1), first: []assign.Pod{one("n", "GPU-0", 1, 0)}, next: one("n", "GPU-0", 1000, 100), wantErr: "cannot be taken whole"},
		{name: "unhealthy", inv: unhealthy, next: one("n", "GPU-1", 1, 0), wantErr: "GPU-1 is unhealthy"},
		{name: "unknown GPU", inv: inv(1, 16000, 4, 1), next: one("n", "GPU-9", 1, 0), wantErr: "GPU-9 is not in the node's inventory"},
		{name: "unknown node", inv: inv(1, 16000, 4, 1), next: one("other", "GPU-0", 1, 0), wantErr: "node has no known GPU inventory"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := New()
			l.SetInventory("n", tc.inv)
			for i, a := range tc.first {
				if err := l.Reserve(fmt.Sprint("first", i), a); err != nil {
					t.Fatal(err)
				}
			}
			before := l.State("n")
			err := l.Reserve("next", tc.next)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if !reflect.DeepEqual(before, l.State("n")) {
				t.Fatal("a refused reservation changed the books")
			}
			if _, ok := l.Holds("next"); ok {
				t.Fatal("a refused reservation was recorded")
			}
		})
	}
}

func TestReserveIdempotentAndConflict(t *testing.T) {
	l := New()
	l.SetInventory("n", inv(2, 16000, 4, 1))
	a := one("n", "GPU-0", 4000, 20)
	if err := l.Reserve("p", a); err != nil {
		t.Fatal(err)
	}
	if err := l.Reserve("p", a); err != nil {
		t.Fatalf("same reservation again: %v", err)
	}
	if u := used(l, "n", 0); u.Slots != 1 || u.MemoryMiB != 4000 {
		t.Fatalf("reserved twice: %+v", u)
	}
	if err := l.Reserve("p", one("n", "GPU-1", 4000, 20)); !errors.Is(err, ErrConflict) {
		t.Fatalf("err = %v, want ErrConflict", err)
	}
	if !l.Release("p") || l.Release("p") {
		t.Fatal("release should succeed once")
	}
	if u := used(l, "n", 0); !u.IsZero() {
		t.Fatalf("not empty after release: %+v", u)
	}
}

func TestAddRebuildAndInventoryChanges(t *testing.T) {
	l := New()
	// Pods arrive before their node's inventory, as informers may deliver.
	if err := l.Add("a", one("n", "GPU-0", 10000, 0)); err != nil {
		t.Fatal(err)
	}
	l.SetInventory("n", inv(2, 16000, 4, 1))
	if u := used(l, "n", 0); u.MemoryMiB != 10000 || u.Pods != 1 {
		t.Fatalf("usage lost when inventory arrived: %+v", u)
	}
	// Add books running pods even when they overcommit, and says so.
	if err := l.Add("b", one("n", "GPU-0", 10000, 0)); !errors.Is(err, ErrOvercommit) {
		t.Fatalf("err = %v, want ErrOvercommit", err)
	}
	if u := used(l, "n", 0); u.MemoryMiB != 20000 {
		t.Fatalf("overcommitting pod not booked: %+v", u)
	}
	// Shrinking the inventory keeps the usage aside; releasing stays exact.
	l.SetInventory("n", inv(1, 16000, 4, 1))
	if err := l.Add("c", one("n", "GPU-1", 1, 0)); err == nil {
		t.Fatal("GPU-1 is gone: want an overcommit report")
	}
	st := l.State("n")
	if len(st) != 2 || st[1].Known || st[1].Used.Slots != 1 {
		t.Fatalf("orphan usage not kept: %+v", st)
	}
	l.Release("c")
	if st := l.State("n"); len(st) != 1 {
		t.Fatalf("orphan not dropped after release: %+v", st)
	}
	// Rebuild replaces everything.
	err := l.Rebuild(map[string]assign.Pod{"x": one("n", "GPU-0", 5000, 50)})
	if err != nil {
		t.Fatal(err)
	}
	if l.PodCount() != 1 {
		t.Fatalf("pods = %d, want 1", l.PodCount())
	}
	if u := used(l, "n", 0); u != (Usage{Slots: 1, MemoryMiB: 5000, Cores: 50, Pods: 1}) {
		t.Fatalf("after rebuild: %+v", u)
	}
	// A node removed keeps usage until its pods go, then is forgotten.
	l.RemoveInventory("n")
	if l.Node("n") == nil || len(l.NodeNames()) != 0 {
		t.Fatal("removed node should keep its usage but not be listed")
	}
	l.Release("x")
	if l.Node("n") != nil {
		t.Fatal("empty removed node not forgotten")
	}
}

// TestConcurrentReserve races many reservations for one GPU: exactly as
// many as the split count may win.
func TestConcurrentReserve(t *testing.T) {
	l := New()
	l.SetInventory("n", inv(1, 16000, 5, 1))
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if l.Reserve(fmt.Sprint("p", i), one("n", "GPU-0", 100, 10)) == nil {
				mu.Lock()
				won++
				mu.Unlock()
			}
			l.State("n")
		}(i)
	}
	wg.Wait()
	if won != 5 {
		t.Fatalf("%d reservations won, want 5", won)
	}
	if u := used(l, "n", 0); u.Slots != 5 || u.Cores != 50 {
		t.Fatalf("usage %+v", u)
	}
}
