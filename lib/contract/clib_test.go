package contract

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// libvgpu reads the contract's names from libvgpu/src/contract.h; they must
// be the names defined here, and spelled nowhere else in libvgpu's sources.
func TestLibvgpuContractHeaderMatches(t *testing.T) {
	src := filepath.Join("..", "..", "libvgpu", "src")
	b, err := os.ReadFile(filepath.Join(src, "contract.h"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"EnvVisibleDevices": EnvVisibleDevices,
		"EnvMemoryLimits":   EnvMemoryLimits,
		"EnvCoreLimits":     EnvCoreLimits,
		"EnvRegion":         EnvRegion,
		"EnvLogLevel":       EnvLogLevel,
		"LimitsVersionKey":  LimitsVersionKey,
		"LimitsVersion":     LimitsVersion,
		"LimitsFileName":    LimitsFileName,
	}
	def := regexp.MustCompile(`(?m)^#define (VGPU_\w+) "([^"]*)"\s*/\* (\w+) \*/`)
	seen := map[string]bool{}
	for _, m := range def.FindAllStringSubmatch(string(b), -1) {
		goName, cValue := m[3], m[2]
		w, ok := want[goName]
		if !ok {
			t.Errorf("contract.h: %s names %s, which lib/contract does not define", m[1], goName)
			continue
		}
		if cValue != w {
			t.Errorf("contract.h: %s is %q, lib/contract.%s is %q", m[1], cValue, goName, w)
		}
		seen[goName] = true
	}
	for goName := range want {
		if !seen[goName] {
			t.Errorf("contract.h does not define lib/contract.%s", goName)
		}
	}

	// A literal elsewhere would drift from this package unseen.
	files, _ := filepath.Glob(filepath.Join(src, "*.[ch]"))
	lit := regexp.MustCompile(`"(?:[^"\\\n]|\\.)*"`)
	for _, f := range files {
		if filepath.Base(f) == "contract.h" {
			continue
		}
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lit.FindAllString(string(text), -1) {
			for goName, v := range want {
				if len(v) > 8 && strings.Contains(l, v) {
					t.Errorf("%s: literal %s spells lib/contract.%s; use the macro of contract.h", filepath.Base(f), l, goName)
				}
			}
		}
	}
}
