package contract

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite libvgpu/test/testdata/limits")

func TestLimitsRoundTrip(t *testing.T) {
	l := Limits{Region: "/var/run/vgpu/region", Devices: []DeviceLimits{
		{UUID: "GPU-53d3cc95-abf9-5e2e-bf83-201ef0cbe341", MemoryMiB: 20480, Cores: 50},
		{UUID: "GPU-71628091-1ca1-569f-af33-093d21b3c0ac", MemoryMiB: 4096, Cores: 0},
	}}
	b := FormatLimits(l)
	for _, line := range []string{"VGPU_LIMITS_VERSION=1", "VGPU_MEMORY_LIMITS_MIB=20480,4096", "VGPU_CORE_LIMITS=50,0",
		"NVIDIA_VISIBLE_DEVICES=GPU-53d3cc95-abf9-5e2e-bf83-201ef0cbe341,GPU-71628091-1ca1-569f-af33-093d21b3c0ac",
		"VGPU_REGION=/var/run/vgpu/region"} {
		if !strings.Contains(string(b), "\n"+line+"\n") {
			t.Errorf("limits file lacks the line %q:\n%s", line, b)
		}
	}
	got, err := ParseLimits(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, l) {
		t.Errorf("round trip: got %+v, want %+v", got, l)
	}
}

func TestParseLimitsRejectsDamage(t *testing.T) {
	for name, tc := range map[string]struct{ in, want string }{
		"no version": {"NVIDIA_VISIBLE_DEVICES=GPU-a\nVGPU_MEMORY_LIMITS_MIB=1\nVGPU_CORE_LIMITS=0\n", "VGPU_LIMITS_VERSION is \"\""},
		"bad memory": {"VGPU_LIMITS_VERSION=1\nNVIDIA_VISIBLE_DEVICES=GPU-a,GPU-b\nVGPU_MEMORY_LIMITS_MIB=1,lots\nVGPU_CORE_LIMITS=0,0\n", "VGPU_MEMORY_LIMITS_MIB entry 2 \"lots\""},
		"bad cores":  {"VGPU_LIMITS_VERSION=1\nNVIDIA_VISIBLE_DEVICES=GPU-a\nVGPU_MEMORY_LIMITS_MIB=1\nVGPU_CORE_LIMITS=101\n", "VGPU_CORE_LIMITS entry 1 \"101\" is not 0-100"},
		"short list": {"VGPU_LIMITS_VERSION=1\nNVIDIA_VISIBLE_DEVICES=GPU-a,GPU-b\nVGPU_MEMORY_LIMITS_MIB=1\nVGPU_CORE_LIMITS=0,0\n", "list 2, 1 and 2 devices"},
		"not a pair": {"VGPU_LIMITS_VERSION=1\ngarbage\n", "line \"garbage\" is not KEY=VALUE"},
	} {
		_, err := ParseLimits([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.want)
		}
	}
}

func TestHostLimitsPathIsBesideTheRegionDirectory(t *testing.T) {
	got := HostLimitsPath(HostContainersDir, "uid-1", "main")
	if got != "/var/lib/vgpu/containers/uid-1_main.limits" {
		t.Errorf("HostLimitsPath = %q", got)
	}
}

// libvgpu's suite (libvgpu/test/run.sh) runs against this file, so that
// what the device plugin writes is what libvgpu is proven to read.
func TestLimitsFileLibvgpuReads(t *testing.T) {
	got := FormatLimits(Limits{Region: ContainerRegionDir + "/" + RegionFileName, Devices: []DeviceLimits{
		{UUID: "GPU-00000000-0000-0000-0000-0000000000a0", MemoryMiB: 1024, Cores: 0},
	}})
	golden := filepath.Join("..", "..", "libvgpu", "test", "testdata", "limits")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("FormatLimits wrote\n%s\nlibvgpu's suite reads %s:\n%s\n(go test ./contract/ -update rewrites it)", got, golden, want)
	}
}
