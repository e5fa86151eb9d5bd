package gpumock

import (
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Two binaries simulating the same node find the same GPUs; another node's
// GPUs differ.
func TestSameNodeSameGPUs(t *testing.T) {
	uuids := func(flag, node string) []string {
		lib, err := Library(flag, node)
		if err != nil {
			t.Fatal(err)
		}
		if ret := lib.Init(); ret != nvml.SUCCESS {
			t.Fatal(ret)
		}
		n, _ := lib.DeviceGetCount()
		var out []string
		for i := range n {
			d, _ := lib.DeviceGetHandleByIndex(i)
			u, ret := d.GetUUID()
			if ret != nvml.SUCCESS {
				t.Fatal(ret)
			}
			out = append(out, u)
		}
		return out
	}
	a, b := uuids("mock:t4:4", "node-a"), uuids("mock:T4:4", "node-a")
	if len(a) != 4 || strings.Join(a, ",") != strings.Join(b, ",") {
		t.Fatalf("same node, same mock: %v and %v", a, b)
	}
	for i, u := range a {
		if u != UUID("node-a", i) {
			t.Errorf("GPU %d: %s, want UUID(node-a, %d) = %s", i, u, i, UUID("node-a", i))
		}
	}
	if c := uuids("mock:t4:4", "node-b"); c[0] == a[0] {
		t.Errorf("node-a and node-b share uuid %s", c[0])
	}
}

func TestAliasesAndErrors(t *testing.T) {
	s, err := ParseSpec("A100")
	if err != nil || s.Model != "dgxa100" || s.Count != 8 {
		t.Errorf("ParseSpec(A100) = %+v, %v; want the monitor's former name for dgxa100", s, err)
	}
	for flag, want := range map[string]string{
		"mock:k80":   `mock model "k80" is unknown: the models are a100-40gb`,
		"mock:a30:0": `mock GPU count "0": must be an integer from 1 to 64`,
		"nvidia":     `--nvml="nvidia": must be empty or "real"`,
	} {
		if _, err := Library(flag, "n"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Library(%q) = %v, want %q", flag, err, want)
		}
	}
}

// The monitor reads utilisation and processes: an idle mock answers them.
func TestIdleByDefault(t *testing.T) {
	srv := New(Spec{Model: "a30", Count: 1}, "n")
	d, _ := srv.DeviceGetHandleByIndex(0)
	if u, ret := d.GetUtilizationRates(); ret != nvml.SUCCESS || u.Gpu != 0 {
		t.Errorf("utilisation = %+v, %v", u, ret)
	}
	for name, list := range map[string]func() ([]nvml.ProcessInfo, nvml.Return){
		"compute": d.GetComputeRunningProcesses, "graphics": d.GetGraphicsRunningProcesses, "MPS": d.GetMPSComputeRunningProcesses,
	} {
		if p, ret := list(); ret != nvml.SUCCESS || len(p) != 0 {
			t.Errorf("%s processes = %+v, %v", name, p, ret)
		}
	}
}
