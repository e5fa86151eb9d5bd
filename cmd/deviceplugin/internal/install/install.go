// Package install puts libvgpu on the host where Allocate can mount it into
// containers: a versioned directory holding the library and the
// ld.so.preload file that names it, replaced atomically, so a container never
// sees a half-written library and running containers keep the one they
// started with.
package install

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"

	"github.com/vgpu-io/vgpu/lib/contract"
)

// PreloadFileName is the name of the ld.so.preload file in a versioned dir.
const PreloadFileName = "ld.so.preload"

// CurrentLink is the symlink, in the library directory, to the latest install.
const CurrentLink = "current"

// ErrSourceMissing means the plugin image has no libvgpu at the source path.
var ErrSourceMissing = errors.New("libvgpu source file not found")

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]`)

// LibFileName is the library's file name, the same on the host and in the
// container, so that ld.so.preload's single line is right in both.
func LibFileName() string { return filepath.Base(contract.ContainerLibPath) }

// Install copies src into libDir/<version>-<content hash>/ with an
// ld.so.preload naming contract.ContainerLibPath, and points libDir/current at
// it. It returns the versioned directory. Installing the same build twice is
// a no-op; a different build gets a new directory and the old one stays for
// the containers that still mount it. Installing into a directory that is
// there but damaged mends it file by file, each file replaced whole: running
// containers bind mount the directory, so it is never removed or swapped
// under them. Concurrent installs of the same build all succeed.
func Install(src, libDir, version string) (string, error) {
	lib, err := os.ReadFile(src)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w: %s", ErrSourceMissing, src)
	}
	if err != nil {
		return "", fmt.Errorf("read libvgpu: %w", err)
	}
	sum := sha256.Sum256(lib)
	name := unsafeChars.ReplaceAllString(version, "_") + "-" + hex.EncodeToString(sum[:hashBytes])
	final := filepath.Join(libDir, name)
	files := contents(lib)

	if err := os.MkdirAll(libDir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", libDir, err)
	}
	if err := place(libDir, final, files); err != nil {
		return "", err
	}
	if err := mend(final, files); err != nil {
		return "", err
	}
	if err := pointCurrent(libDir, name); err != nil {
		return "", err
	}
	return final, nil
}

// hashBytes of the library's sha256 name its directory.
const hashBytes = 6

type file struct {
	name string
	data []byte
	mode os.FileMode
}

func contents(lib []byte) []file {
	return []file{
		{LibFileName(), lib, 0o755},
		{PreloadFileName, []byte(contract.ContainerLibPath + "\n"), 0o644},
		// Each container's limits file is mounted over this empty one
		// (docs/contract.md#where-limits-come-from); libvgpu reads an
		// empty file as none.
		{contract.LimitsFileName, nil, 0o444},
	}
}

// place creates final whole (built aside, renamed into place) when it is
// not a directory yet; one that is, is mended in place instead.
func place(libDir, final string, files []file) error {
	fi, err := os.Lstat(final)
	if err == nil && fi.IsDir() {
		return nil
	}
	if err == nil {
		// A file or link where the directory belongs mounts nothing.
		if err := os.Remove(final); err != nil {
			return fmt.Errorf("install %s: %w", final, err)
		}
	}
	tmp, err := os.MkdirTemp(libDir, ".install-")
	if err != nil {
		return fmt.Errorf("create temporary install dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	for _, f := range files {
		if err := writeFile(filepath.Join(tmp, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		if fi, serr := os.Lstat(final); serr == nil && fi.IsDir() {
			return nil // another installer was first; mend checks its work
		}
		return fmt.Errorf("install %s: %w", final, err)
	}
	return nil
}

// mend replaces each file of dir that is not what it should be, whole.
func mend(dir string, files []file) error {
	for _, f := range files {
		path := filepath.Join(dir, f.name)
		if intact(path, f.data) {
			continue
		}
		if fi, err := os.Lstat(path); err == nil && fi.IsDir() {
			// A runtime makes a missing mount source an empty directory.
			if err := os.RemoveAll(path); err != nil {
				return fmt.Errorf("install %s: %w", path, err)
			}
		}
		if err := replaceFile(path, f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// replaceFile writes data beside path and renames it over path.
func replaceFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".install-")
	if err != nil {
		return fmt.Errorf("install %s: %w", path, err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	if err := writeFile(tmp.Name(), data, mode); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("install %s: %w", path, err)
	}
	return nil
}

// intact: path is a regular file (not a link, which a container would
// resolve in its own filesystem) holding data.
func intact(path string, data []byte) bool {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != int64(len(data)) {
		return false
	}
	got, err := os.ReadFile(path)
	return err == nil && bytes.Equal(got, data)
}

// pointCurrent points libDir/current at name, through a link of its own
// name, so concurrent installers do not trip over each other's.
func pointCurrent(libDir, name string) error {
	link := filepath.Join(libDir, CurrentLink)
	tmp, err := os.MkdirTemp(libDir, ".link-")
	if err != nil {
		return fmt.Errorf("link %s: %w", link, err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Symlink(name, filepath.Join(tmp, CurrentLink)); err != nil {
		return fmt.Errorf("link %s: %w", link, err)
	}
	if err := os.Rename(filepath.Join(tmp, CurrentLink), link); err != nil {
		return fmt.Errorf("link %s: %w", link, err)
	}
	return nil
}

// Check says whether the installed libvgpu in dir is what a container that
// mounts it loads: libvgpu.so and ld.so.preload are regular files (a
// symbolic link in the mounted directory resolves inside the container),
// the library is the build the directory is named after (ld.so skips an
// empty or truncated library with a warning and runs the process without
// limits) and ld.so.preload names it. The error names the path.
func Check(dir string) error {
	for _, name := range []string{LibFileName(), PreloadFileName} {
		path := filepath.Join(dir, name)
		fi, err := os.Lstat(path)
		switch {
		case err != nil:
			return fmt.Errorf("%s: %v", path, errors.Unwrap(err))
		case fi.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("%s is a symbolic link, which the container would resolve in its own filesystem", path)
		case !fi.Mode().IsRegular():
			return fmt.Errorf("%s is a %s, not a file", path, kind(fi.Mode()))
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if name == PreloadFileName {
			if string(data) != contract.ContainerLibPath+"\n" {
				return fmt.Errorf("%s does not name %s (it holds %q)", path, contract.ContainerLibPath, truncate(data))
			}
			continue
		}
		sum := sha256.Sum256(data)
		got := hex.EncodeToString(sum[:hashBytes])
		base := filepath.Base(dir)
		if want := base[max(0, len(base)-2*hashBytes):]; got != want {
			return fmt.Errorf("%s is not the installed build (%d bytes, sha256 %s…; the directory's build is %s…)", path, len(data), got, want)
		}
	}
	return nil
}

func kind(m fs.FileMode) string {
	if m.IsDir() {
		return "directory"
	}
	return m.Type().String()
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}

func writeFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, bytes.NewReader(data)); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Chmod(path, mode)
}
