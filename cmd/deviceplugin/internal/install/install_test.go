package install

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

func installed(t *testing.T) (src, libDir, dir string) {
	t.Helper()
	root := t.TempDir()
	src = filepath.Join(root, "src.so")
	libDir = filepath.Join(root, "lib")
	if err := os.WriteFile(src, []byte("a build of libvgpu"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir, err := Install(src, libDir, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(dir); err != nil {
		t.Fatalf("a fresh install does not pass the check: %v", err)
	}
	return src, libDir, dir
}

// What the check passes is what a container loads: the directory is bind
// mounted, so a symbolic link in it resolves in the container's own
// filesystem, and ld.so skips an empty or foreign library and an empty
// ld.so.preload with a warning, running the process without limits.
func TestCheckRefusesWhatAContainerWouldNotLoad(t *testing.T) {
	cases := map[string]struct {
		file   string
		break_ func(t *testing.T, path string)
		say    string
	}{
		"library is a symlink to an identical copy": {LibFileName(), func(t *testing.T, path string) {
			cp := path + ".elsewhere"
			b, _ := os.ReadFile(path)
			must(t, os.WriteFile(cp, b, 0o755))
			must(t, os.Remove(path))
			must(t, os.Symlink(cp, path))
		}, "is a symbolic link"},
		"library truncated to nothing": {LibFileName(), func(t *testing.T, path string) {
			must(t, os.Truncate(path, 0))
		}, "is not the installed build"},
		"library half copied": {LibFileName(), func(t *testing.T, path string) {
			must(t, os.Truncate(path, 5))
		}, "is not the installed build"},
		"ld.so.preload emptied": {PreloadFileName, func(t *testing.T, path string) {
			must(t, os.Truncate(path, 0))
		}, "does not name " + contract.ContainerLibPath},
		"ld.so.preload is a symlink": {PreloadFileName, func(t *testing.T, path string) {
			cp := path + ".elsewhere"
			must(t, os.Rename(path, cp))
			must(t, os.Symlink(cp, path))
		}, "is a symbolic link"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			src, libDir, dir := installed(t)
			path := filepath.Join(dir, c.file)
			c.break_(t, path)
			err := Check(dir)
			if err == nil || !strings.Contains(err.Error(), path+" ") || !strings.Contains(err.Error(), c.say) {
				t.Fatalf("Check = %v; want an error naming %s that says %q", err, path, c.say)
			}
			again, err := Install(src, libDir, "v1")
			if err != nil || again != dir {
				t.Fatalf("reinstall: %s, %v", again, err)
			}
			if err := Check(dir); err != nil {
				t.Fatalf("after the reinstall: %v", err)
			}
		})
	}
}

// A reinstall mends the directory in place: running containers bind mount
// it, and a file that is still right must stay under them (removing the
// directory and renaming a new one into place would empty theirs).
func TestReinstallKeepsTheFilesRunningContainersUse(t *testing.T) {
	src, libDir, dir := installed(t)
	lib := filepath.Join(dir, LibFileName())
	before, err := os.Stat(lib)
	must(t, err)
	must(t, os.Remove(filepath.Join(dir, PreloadFileName)))
	if _, err := Install(src, libDir, "v1"); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(lib)
	must(t, err)
	if !os.SameFile(before, after) {
		t.Error("the reinstall replaced a library that was intact; running containers lost it")
	}
	must(t, Check(dir))
}

// Two installers at once (the plugin's start and an Allocate's reinstall,
// or an old and a new plugin pod during a rolling update) both succeed and
// leave one whole directory.
func TestConcurrentInstallsAllSucceed(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "src.so")
	libDir := filepath.Join(root, "lib")
	must(t, os.WriteFile(src, bytes.Repeat([]byte("libvgpu"), 1<<16), 0o644))
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dir, err := Install(src, libDir, "v1")
			if err == nil {
				err = Check(dir)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkCheck is what every Allocate and prepare pays to check the
// installed library: a build of libvgpu is about 256 KiB.
func BenchmarkCheck(b *testing.B) {
	root := b.TempDir()
	src := filepath.Join(root, "src.so")
	if err := os.WriteFile(src, bytes.Repeat([]byte{0x7f}, 256<<10), 0o644); err != nil {
		b.Fatal(err)
	}
	dir, err := Install(src, filepath.Join(root, "lib"), "v1")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := Check(dir); err != nil {
			b.Fatal(err)
		}
	}
}
