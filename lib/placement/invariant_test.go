package placement

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"

	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/ledger"
	"github.com/vgpu-io/vgpu/lib/request"
	"github.com/vgpu-io/vgpu/lib/settings"
)

var models = []string{"Tesla T4", "A100-SXM4-40GB", "A100-SXM4-80GB", "H100"}

func genInventory(t *rapid.T, label string) device.Inventory {
	inv := device.Inventory{
		SplitCount:    rapid.IntRange(1, 10).Draw(t, label+"split"),
		MemoryScaling: rapid.SampledFrom([]float64{1, 1, 1.5, 2}).Draw(t, label+"scaling"),
	}
	n := rapid.IntRange(0, 8).Draw(t, label+"gpus")
	for i := 0; i < n; i++ {
		inv.GPUs = append(inv.GPUs, device.GPU{
			UUID:      fmt.Sprintf("%s-GPU-%d", label, i),
			Index:     i,
			Model:     rapid.SampledFrom(models).Draw(t, "model"),
			MemoryMiB: rapid.SampledFrom([]int64{15360, 40960, 81920}).Draw(t, "mem"),
			Healthy:   rapid.IntRange(0, 9).Draw(t, "healthy") > 0,
		})
	}
	return inv
}

func genContainer(t *rapid.T, name string, init bool) request.Container {
	c := request.Container{Name: name, Init: init, Count: rapid.IntRange(1, 3).Draw(t, "count")}
	switch rapid.IntRange(0, 3).Draw(t, "kind") {
	case 0:
		c.Exclusive = true
	case 1:
		c.MemoryMiB = rapid.Int64Range(1, 40000).Draw(t, "memMiB")
	case 2:
		c.MemoryPercent = rapid.IntRange(1, 100).Draw(t, "pct")
	}
	if !c.Exclusive {
		c.Cores = rapid.IntRange(0, 100).Draw(t, "cores")
		c.Exclusive = c.Cores == 100
	}
	return c
}

func genPod(t *rapid.T) *request.Pod {
	p := &request.Pod{}
	for i := rapid.IntRange(0, 2).Draw(t, "inits"); i > 0; i-- {
		c := genContainer(t, fmt.Sprint("init", i), true)
		c.Sidecar = rapid.Bool().Draw(t, "sidecar")
		p.Containers = append(p.Containers, c)
	}
	for i := rapid.IntRange(1, 3).Draw(t, "apps"); i > 0; i-- {
		p.Containers = append(p.Containers, genContainer(t, fmt.Sprint("app", i), false))
	}
	if rapid.IntRange(0, 4).Draw(t, "selector") == 0 {
		p.Selector.UseTypes = []string{rapid.SampledFrom([]string{"a100", "t4", "80GB"}).Draw(t, "use")}
	}
	return p
}

// checkBooks asserts that no GPU holds more than it has and that the books
// equal the sum of the footprints of the pods booked (the model).
func checkBooks(t *rapid.T, l *ledger.Ledger, nodes []string, invs map[string]device.Inventory, booked map[string]assign.Pod) {
	want := map[string]ledger.Usage{}
	for _, a := range booked {
		for _, u := range ledger.Footprint(&a) {
			w := want[u.UUID]
			w.Slots += u.Slots
			w.MemoryMiB += u.MemoryMiB
			w.Cores += u.Cores
			w.Pods++
			if u.Exclusive {
				w.Exclusive++
			}
			want[u.UUID] = w
		}
	}
	for _, name := range nodes {
		inv := invs[name]
		for _, st := range l.State(name) {
			u := st.Used
			if u != want[st.GPU.UUID] {
				t.Fatalf("%s %s: books %+v, pods hold %+v", name, st.GPU.UUID, u, want[st.GPU.UUID])
			}
			if u.Slots > inv.SplitCount || u.Cores > 100 || u.MemoryMiB > ledger.MemoryCapacity(st.GPU.MemoryMiB, inv.MemoryScaling) {
				t.Fatalf("%s %s overcommitted: %+v (split %d, memory %d × %g)", name, st.GPU.UUID, u, inv.SplitCount, st.GPU.MemoryMiB, inv.MemoryScaling)
			}
			if u.Exclusive > 1 || (u.Exclusive == 1 && u.Pods != 1) {
				t.Fatalf("%s %s held whole but shared: %+v", name, st.GPU.UUID, u)
			}
			if u.Slots > 0 && !st.GPU.Healthy {
				t.Fatalf("%s %s is unhealthy but holds %+v", name, st.GPU.UUID, u)
			}
		}
	}
}

// TestInvariants places random pods with the real Best and Bind, releases
// them in random order, and checks the books after every step.
func TestInvariants(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		l := ledger.New()
		invs := map[string]device.Inventory{}
		var nodes []string
		for i := rapid.IntRange(1, 4).Draw(t, "nodes"); i > 0; i-- {
			name := fmt.Sprint("node", i)
			invs[name] = genInventory(t, name)
			l.SetInventory(name, invs[name])
			nodes = append(nodes, name)
		}
		pol := Policies{
			Node: rapid.SampledFrom([]settings.Policy{settings.Binpack, settings.Spread}).Draw(t, "nodePolicy"),
			GPU:  rapid.SampledFrom([]settings.Policy{settings.Binpack, settings.Spread}).Draw(t, "gpuPolicy"),
		}
		booked := map[string]assign.Pod{}
		var keys []string
		steps := rapid.IntRange(1, 60).Draw(t, "steps")
		for s := 0; s < steps; s++ {
			if len(keys) > 0 && rapid.IntRange(0, 3).Draw(t, "release") == 0 {
				i := rapid.IntRange(0, len(keys)-1).Draw(t, "which")
				if !l.Release(keys[i]) {
					t.Fatalf("release of booked %s failed", keys[i])
				}
				delete(booked, keys[i])
				keys = append(keys[:i], keys[i+1:]...)
			} else {
				pod := genPod(t)
				best := Best(pod, l.Lookup(nodes, nil), pol, nil)
				fits, _ := Filter(l, pod, nodes, pol)
				if (best < 0) != (len(fits) == 0) {
					t.Fatalf("Best says %d, Filter says %v", best, fits)
				}
				if best >= 0 {
					key := fmt.Sprint("pod", s)
					a, err := Bind(l, key, pod, nodes[best], pol)
					if err != nil {
						t.Fatalf("Bind after a fit: %v", err)
					}
					booked[key] = a
					keys = append(keys, key)
				}
			}
			checkBooks(t, l, nodes, invs, booked)
		}
		for _, i := range rapid.Permutation(keys).Draw(t, "order") {
			l.Release(i)
			delete(booked, i)
			checkBooks(t, l, nodes, invs, booked)
		}
		if l.PodCount() != 0 {
			t.Fatalf("%d pods left", l.PodCount())
		}
		for _, name := range nodes {
			for _, st := range l.State(name) {
				if !st.Used.IsZero() || !st.Known {
					t.Fatalf("%s not empty after releasing everything: %+v", name, st)
				}
			}
		}
	})
}
