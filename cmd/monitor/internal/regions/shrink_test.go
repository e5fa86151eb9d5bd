package regions

import (
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vgpu-io/vgpu/lib/region"
)

// A process of the container can truncate its region at any time, also
// between the monitor's size check and its stores into the mapping: that
// must cost the monitor one sample, never the process (docs/contract.md#the-region-file).
func TestPublishSurvivesARegionTruncatedWhileMapped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "region")
	r := region.Region{}
	r.Header.DeviceCount = 1
	if err := os.WriteFile(path, r.Encode(), 0o666); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			_ = os.Truncate(path, 0)
			_ = os.Truncate(path, region.Size)
		}
	}()
	var ok, failed, faults int
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); {
		if err := (Publisher{}).Publish(path, 0, 500); err != nil {
			failed++
			if strings.Contains(err.Error(), "shrank while mapped") {
				faults++
			}
		} else {
			ok++
		}
	}
	stop.Store(true)
	<-done
	t.Logf("%d samples published, %d refused while the file was being truncated, %d of them by a fault on the mapping", ok, failed, faults)
}
