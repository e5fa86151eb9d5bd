package contract

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Limits is the content of a container's limits file
// (docs/contract.md#where-limits-come-from).
type Limits struct {
	// Devices are the container's GPUs, in NVIDIA_VISIBLE_DEVICES order.
	Devices []DeviceLimits
	// Region is the shared region file inside the container.
	Region string
}

// DeviceLimits is one GPU's limits.
type DeviceLimits struct {
	UUID      string
	MemoryMiB int64
	// Cores is the SM share, 1–100; 0 = no compute limit.
	Cores int
}

// Env is l as the container's environment variables, which hold the same
// values as the limits file (docs/contract.md#environment).
func (l Limits) Env() map[string]string {
	uuids := make([]string, len(l.Devices))
	mem := make([]string, len(l.Devices))
	cores := make([]string, len(l.Devices))
	for i, d := range l.Devices {
		uuids[i] = d.UUID
		mem[i] = strconv.FormatInt(d.MemoryMiB, 10)
		cores[i] = strconv.Itoa(d.Cores)
	}
	return map[string]string{
		EnvVisibleDevices: strings.Join(uuids, ","),
		EnvMemoryLimits:   strings.Join(mem, ","),
		EnvCoreLimits:     strings.Join(cores, ","),
		EnvRegion:         l.Region,
	}
}

// limitsKeys is the order of the keys in a limits file.
var limitsKeys = []string{EnvVisibleDevices, EnvMemoryLimits, EnvCoreLimits, EnvRegion}

// FormatLimits renders l as the limits file libvgpu reads: KEY=VALUE lines
// whose keys are the names of the environment variables of the contract.
func FormatLimits(l Limits) []byte {
	env := l.Env()
	var b bytes.Buffer
	b.WriteString("# vgpu container limits (docs/contract.md); written by the node agent, read-only in the container\n")
	fmt.Fprintf(&b, "%s=%s\n", LimitsVersionKey, LimitsVersion)
	for _, k := range limitsKeys {
		fmt.Fprintf(&b, "%s=%s\n", k, env[k])
	}
	return b.Bytes()
}

// ParseLimits reads a limits file strictly, for the node's own components:
// unlike libvgpu, which keeps the valid entries of a damaged file, it
// rejects any damage with an error naming the key and the entry.
func ParseLimits(b []byte) (Limits, error) {
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return Limits{}, fmt.Errorf("limits file: line %q is not KEY=VALUE", line)
		}
		kv[k] = v
	}
	if v := kv[LimitsVersionKey]; v != LimitsVersion {
		return Limits{}, fmt.Errorf("limits file: %s is %q, want %q", LimitsVersionKey, v, LimitsVersion)
	}
	l := Limits{Region: kv[EnvRegion]}
	uuids := splitList(kv[EnvVisibleDevices])
	mem := splitList(kv[EnvMemoryLimits])
	cores := splitList(kv[EnvCoreLimits])
	if len(mem) != len(uuids) || len(cores) != len(uuids) {
		return Limits{}, fmt.Errorf("limits file: %s, %s and %s list %d, %d and %d devices, want the same number",
			EnvVisibleDevices, EnvMemoryLimits, EnvCoreLimits, len(uuids), len(mem), len(cores))
	}
	for i, u := range uuids {
		m, err := strconv.ParseInt(mem[i], 10, 64)
		if err != nil || m < 0 {
			return Limits{}, fmt.Errorf("limits file: %s entry %d %q is not a size in MiB", EnvMemoryLimits, i+1, mem[i])
		}
		c, err := strconv.Atoi(cores[i])
		if err != nil || c < 0 || c > 100 {
			return Limits{}, fmt.Errorf("limits file: %s entry %d %q is not 0-100", EnvCoreLimits, i+1, cores[i])
		}
		l.Devices = append(l.Devices, DeviceLimits{UUID: u, MemoryMiB: m, Cores: c})
	}
	return l, sc.Err()
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
