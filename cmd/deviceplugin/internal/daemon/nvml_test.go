package daemon

import (
	"strings"
	"testing"
)

func TestOpenNVMLSaysWhatToDo(t *testing.T) {
	for spec, want := range map[string]string{
		"mock:tpu":        `mock model "tpu" is unknown: the models are a100-40gb, a100-80gb, a30, b200, dgxa100, dgxb200, dgxh100, dgxh200, h100-80gb, h200-141gb, t4`,
		"mock:dgxa100:0":  `mock GPU count "0": must be an integer from 1 to 64`,
		"nvidia":          `--nvml="nvidia": must be empty or "real" (the driver's NVML), or mock:<model>[:<count>]`,
		"mock:dgxh100:2x": `mock GPU count "2x"`,
	} {
		if _, err := OpenNVML(spec, "n"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("OpenNVML(%q) = %v, want an error containing %q", spec, err, want)
		}
	}
	lib, err := OpenNVML("mock:a30:3", "n")
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := lib.DeviceGetCount(); n != 3 {
		t.Fatalf("mock:a30:3 has %d GPUs", n)
	}
	// The real library: where there is no driver, the error tells how to
	// simulate one instead.
	if lib, err := OpenNVML("", "n"); err != nil {
		if !strings.Contains(err.Error(), "this node has no NVIDIA GPU") || !strings.Contains(err.Error(), "--nvml=mock:<model>") {
			t.Fatalf("without a driver: %v", err)
		}
	} else {
		lib.Shutdown()
	}
}
