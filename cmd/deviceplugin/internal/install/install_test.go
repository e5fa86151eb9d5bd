package install

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/vgpu-io/vgpu/lib/contract"
)

func TestInstallVersionedAndAtomic(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "src.so")
	libDir := filepath.Join(root, "lib")
	if err := os.WriteFile(src, []byte("build one"), 0o644); err != nil {
		t.Fatal(err)
	}
	first, err := Install(src, libDir, "v1.0+dirty")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(first) != libDir || filepath.Base(first)[:10] != "v1.0_dirty" {
		t.Fatalf("versioned dir %s: want libDir/v1.0_dirty-<hash>", first)
	}
	got, err := os.ReadFile(filepath.Join(first, LibFileName()))
	if err != nil || string(got) != "build one" {
		t.Fatalf("installed library = %q, %v", got, err)
	}
	preload, err := os.ReadFile(filepath.Join(first, PreloadFileName))
	if err != nil || string(preload) != contract.ContainerLibPath+"\n" {
		t.Fatalf("ld.so.preload = %q, %v; want the container path of the library", preload, err)
	}
	if st, err := os.Stat(filepath.Join(first, contract.LimitsFileName)); err != nil || st.Size() != 0 {
		t.Fatalf("limits placeholder: %v, %v; want an empty file for the containers' limits to be mounted over", st, err)
	}
	if st, _ := os.Stat(filepath.Join(first, LibFileName())); st.Mode().Perm()&0o005 != 0o005 {
		t.Fatalf("library mode %v: containers running as any user must read it", st.Mode())
	}

	again, err := Install(src, libDir, "v1.0+dirty")
	if err != nil || again != first {
		t.Fatalf("reinstalling the same build: %s, %v; want %s", again, err, first)
	}

	if err := os.WriteFile(src, []byte("build two"), 0o644); err != nil {
		t.Fatal(err)
	}
	second, err := Install(src, libDir, "v1.0+dirty")
	if err != nil {
		t.Fatal(err)
	}
	if second == first {
		t.Fatal("a different build must get a different directory")
	}
	if got, _ := os.ReadFile(filepath.Join(first, LibFileName())); string(got) != "build one" {
		t.Fatal("the old build was changed in place; running containers mount it")
	}
	target, err := os.Readlink(filepath.Join(libDir, CurrentLink))
	if err != nil || target != filepath.Base(second) {
		t.Fatalf("current -> %q, %v; want %s", target, err, filepath.Base(second))
	}
	entries, _ := os.ReadDir(libDir)
	for _, e := range entries {
		if e.Name()[0] == '.' || filepath.Ext(e.Name()) == ".tmp" {
			t.Fatalf("temporary %s left behind", e.Name())
		}
	}
}

func TestInstallMissingSource(t *testing.T) {
	root := t.TempDir()
	_, err := Install(filepath.Join(root, "absent.so"), filepath.Join(root, "lib"), "v1")
	if !errors.Is(err, ErrSourceMissing) {
		t.Fatalf("err = %v, want ErrSourceMissing", err)
	}
}
