package kubeletplugin

import (
	"slices"
	"testing"
)

func TestPreferred(t *testing.T) {
	a0, a1, b0, b1, c0 := DeviceID("A", 0), DeviceID("A", 1), DeviceID("B", 0), DeviceID("B", 1), DeviceID("C", 0)
	avail := []string{a0, a1, b0, b1, c0}
	for _, tc := range []struct {
		name              string
		must, wanted, out []string
		size              int
	}{
		{"one id on each wanted GPU", nil, []string{"C", "B"}, []string{b0, c0}, 2},
		{"must-include first, then the other wanted GPU", []string{a1}, []string{"A", "B"}, []string{a1, b0}, 2},
		{"nothing wanted: spread over GPUs", nil, nil, []string{a0, b0, c0}, 3},
		{"wanted GPU with no free id: spread the rest", nil, []string{"Z"}, []string{a0}, 1},
		{"more than there are GPUs: fill", nil, []string{"A"}, []string{a0, b0, c0, a1}, 4},
	} {
		got := preferred(avail, tc.must, tc.wanted, tc.size)
		slices.Sort(got)
		want := slices.Clone(tc.out)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, want)
		}
	}
	if GPUOf(DeviceID("GPU-x", 7)) != "GPU-x" {
		t.Error("GPUOf does not invert DeviceID")
	}
}
