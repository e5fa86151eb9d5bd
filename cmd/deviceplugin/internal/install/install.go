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
// the containers that still mount it.
func Install(src, libDir, version string) (string, error) {
	lib, err := os.ReadFile(src)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w: %s", ErrSourceMissing, src)
	}
	if err != nil {
		return "", fmt.Errorf("read libvgpu: %w", err)
	}
	sum := sha256.Sum256(lib)
	name := unsafeChars.ReplaceAllString(version, "_") + "-" + hex.EncodeToString(sum[:6])
	final := filepath.Join(libDir, name)
	preload := []byte(contract.ContainerLibPath + "\n")

	if err := os.MkdirAll(libDir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", libDir, err)
	}
	if !complete(final, lib, preload) {
		tmp, err := os.MkdirTemp(libDir, ".install-")
		if err != nil {
			return "", fmt.Errorf("create temporary install dir: %w", err)
		}
		defer os.RemoveAll(tmp)
		if err := writeFile(filepath.Join(tmp, LibFileName()), lib, 0o755); err != nil {
			return "", err
		}
		if err := writeFile(filepath.Join(tmp, PreloadFileName), preload, 0o644); err != nil {
			return "", err
		}
		// Each container's limits file is mounted over this empty one
		// (docs/contract.md#where-limits-come-from); libvgpu reads an empty
		// file as none.
		if err := writeFile(filepath.Join(tmp, contract.LimitsFileName), nil, 0o444); err != nil {
			return "", err
		}
		if err := os.Chmod(tmp, 0o755); err != nil {
			return "", err
		}
		// A directory left incomplete by a crash is in the way of the rename.
		if err := os.RemoveAll(final); err != nil {
			return "", err
		}
		if err := os.Rename(tmp, final); err != nil {
			return "", fmt.Errorf("install %s: %w", final, err)
		}
	}
	link := filepath.Join(libDir, CurrentLink)
	tmpLink := link + ".tmp"
	_ = os.Remove(tmpLink)
	if err := os.Symlink(name, tmpLink); err != nil {
		return "", fmt.Errorf("link %s: %w", link, err)
	}
	if err := os.Rename(tmpLink, link); err != nil {
		return "", fmt.Errorf("link %s: %w", link, err)
	}
	return final, nil
}

func complete(dir string, lib, preload []byte) bool {
	got, err := os.ReadFile(filepath.Join(dir, LibFileName()))
	if err != nil || !bytes.Equal(got, lib) {
		return false
	}
	got, err = os.ReadFile(filepath.Join(dir, PreloadFileName))
	return err == nil && bytes.Equal(got, preload)
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
