package containerspec

import (
	"syscall"
	"testing"
)

// allocatedBytes is what the filesystem really holds for path (st_blocks).
func allocatedBytes(t *testing.T, path string) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}
