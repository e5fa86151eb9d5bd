// Command images builds vgpu's container images without a container engine:
// each image of images.yaml is assembled, layer by layer, from files this
// machine already has and written as a docker-archive tarball that
// `ctr images import` and `docker load` accept (docs/install.md#images).
//
//	go run . --repo .. --out DIR [--libc-root DIR]
//
// No base image can be pulled here, so an image gets a C library only when
// one of its programs is dynamically linked: then the unpacked libc6 package
// of --libc-root is added as a layer (a cgo binary without its loader would
// fail to start with a bare "no such file or directory").
package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// Image is one entry of images.yaml.
type Image struct {
	Name       string   `json:"name"`
	Files      []File   `json:"files"`
	Entrypoint []string `json:"entrypoint"`
	User       string   `json:"user"`
	// Ref is the full reference of an image the kustomization does not
	// name; the others take theirs from it.
	Ref string `json:"ref,omitempty"`
}

// File is one file copied into an image.
type File struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Mode is octal; executables (0755) when empty.
	Mode string `json:"mode,omitempty"`
}

// searchPath is the PATH of every image: where a manifest's bare command
// (the scheduler's `kube-scheduler`) is looked up.
const searchPath = "/usr/local/bin:/usr/bin:/bin"

// epoch is every file's and image's time, so that the same inputs give the
// same image digest.
var epoch = time.Unix(0, 0).UTC()

func main() {
	var repo, out, libcRoot string
	var only []string
	var list bool
	cmd := &cobra.Command{
		Use:          "images",
		Short:        "Build vgpu's images (images.yaml) as docker-archive tarballs, without a container engine",
		SilenceUsage: true,
		RunE: func(*cobra.Command, []string) error {
			if list {
				return printRefs(repo)
			}
			if out == "" {
				return errors.New("--out is required: the directory for the archives")
			}
			return build(repo, out, libcRoot, only)
		},
	}
	cmd.Flags().StringVar(&repo, "repo", "..", "repository root: images.yaml, kustomize/base and the files' relative paths")
	cmd.Flags().StringVar(&out, "out", "", "directory for the archives, one <name>.tar per image")
	cmd.Flags().BoolVar(&list, "list", false, "print the reference of every image and build nothing")
	cmd.Flags().StringVar(&libcRoot, "libc-root", "", "unpacked C library (dpkg -x of libc6) for images with a dynamically linked program")
	cmd.Flags().StringSliceVar(&only, "only", nil, "build only these images (names of images.yaml)")
	if err := cmd.Execute(); err != nil {
		os.Exit(1)
	}
}

func printRefs(repo string) error {
	defs, refs, err := load(repo)
	if err != nil {
		return err
	}
	for _, def := range defs {
		ref, err := refs.Ref(def)
		if err != nil {
			return err
		}
		fmt.Println(ref)
	}
	return nil
}

func load(repo string) ([]Image, Refs, error) {
	defs, err := LoadImages(filepath.Join(repo, "images", "images.yaml"))
	if err != nil {
		return nil, nil, err
	}
	refs, err := LoadRefs(filepath.Join(repo, "kustomize", "base", "kustomization.yaml"))
	return defs, refs, err
}

func build(repo, out, libcRoot string, only []string) error {
	defs, refs, err := load(repo)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	want := map[string]bool{}
	for _, o := range only {
		want[o] = true
	}
	for _, def := range defs {
		if len(want) > 0 && !want[def.Name] {
			continue
		}
		ref, err := refs.Ref(def)
		if err != nil {
			return err
		}
		img, err := Assemble(repo, def, libcRoot)
		if err != nil {
			return fmt.Errorf("image %s: %w", def.Name, err)
		}
		tag, err := name.NewTag(ref)
		if err != nil {
			return fmt.Errorf("image %s: reference %q: %w", def.Name, ref, err)
		}
		file := filepath.Join(out, def.Name+".tar")
		if err := tarball.WriteToFile(file+".tmp", tag, img); err != nil {
			return fmt.Errorf("image %s: %w", def.Name, err)
		}
		if err := os.Rename(file+".tmp", file); err != nil {
			return err
		}
		d, _ := img.Digest()
		fmt.Printf("%-22s %s  %s\n", def.Name, ref, d)
	}
	return nil
}

// LoadImages reads images.yaml and checks every entry.
func LoadImages(file string) ([]Image, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Images []Image `json:"images"`
	}
	if err := yaml.UnmarshalStrict(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	seen := map[string]bool{}
	for i, def := range doc.Images {
		where := fmt.Sprintf("%s: images[%d] (%s)", file, i, def.Name)
		switch {
		case def.Name == "":
			return nil, fmt.Errorf("%s: name is empty", where)
		case seen[def.Name]:
			return nil, fmt.Errorf("%s: name is defined twice", where)
		case len(def.Files) == 0:
			return nil, fmt.Errorf("%s: files is empty", where)
		case len(def.Entrypoint) == 0 || !path.IsAbs(def.Entrypoint[0]):
			return nil, fmt.Errorf("%s: entrypoint must start with an absolute path, got %q", where, def.Entrypoint)
		}
		if _, _, err := parseUser(def.User); err != nil {
			return nil, fmt.Errorf("%s: user: %w", where, err)
		}
		for j, f := range def.Files {
			if !path.IsAbs(f.To) || path.Clean(f.To) != f.To {
				return nil, fmt.Errorf("%s: files[%d].to must be a clean absolute path, got %q", where, j, f.To)
			}
			if _, err := f.mode(); err != nil {
				return nil, fmt.Errorf("%s: files[%d].mode: %w", where, j, err)
			}
		}
		seen[def.Name] = true
	}
	return doc.Images, nil
}

func (f File) mode() (int64, error) {
	if f.Mode == "" {
		return 0o755, nil
	}
	m, err := strconv.ParseInt(f.Mode, 8, 32)
	if err != nil || m&^0o777 != 0 {
		return 0, fmt.Errorf("want octal permissions such as \"0644\", got %q", f.Mode)
	}
	return m, nil
}

func parseUser(u string) (int, int, error) {
	uid, gid, ok := strings.Cut(u, ":")
	a, err1 := strconv.Atoi(uid)
	b, err2 := strconv.Atoi(gid)
	if !ok || err1 != nil || err2 != nil || a < 0 || b < 0 {
		return 0, 0, fmt.Errorf("want numeric uid:gid such as \"65532:65532\", got %q", u)
	}
	return a, b, nil
}

// Refs maps the manifests' short image names to full references, from the
// images: list of kustomize/base/kustomization.yaml, the one place where
// images are named.
type Refs map[string]string

// LoadRefs reads the images: list of a kustomization.
func LoadRefs(file string) (Refs, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var k struct {
		Images []struct {
			Name    string `json:"name"`
			NewName string `json:"newName"`
			NewTag  string `json:"newTag"`
		} `json:"images"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	refs := Refs{}
	for _, i := range k.Images {
		if i.NewName == "" || i.NewTag == "" {
			return nil, fmt.Errorf("%s: images entry %q needs newName and newTag", file, i.Name)
		}
		refs[i.Name] = i.NewName + ":" + i.NewTag
	}
	return refs, nil
}

// Ref is the full reference of an image: its own ref, its kustomization
// entry, or, for an image the manifests do not deploy (vgpuctl),
// vgpu-extender's registry and tag with its own name.
func (r Refs) Ref(def Image) (string, error) {
	short := def.Name
	if def.Ref != "" {
		return def.Ref, nil
	}
	if ref, ok := r[short]; ok {
		return ref, nil
	}
	ext, ok := r["vgpu-extender"]
	if !ok {
		return "", fmt.Errorf("image %s is not in the kustomization's images: list, and neither is vgpu-extender to name it after", short)
	}
	i := strings.LastIndex(ext, ":")
	return path.Dir(ext[:i]) + "/" + short + ext[i:], nil
}

// Assemble builds one image: a base layer (users, /tmp), the C library when a
// program needs one, and the image's files.
func Assemble(repo string, def Image, libcRoot string) (v1.Image, error) {
	files := newLayer()
	dynamic := ""
	for _, f := range def.Files {
		src, err := expand(repo, f.From)
		if err != nil {
			return nil, err
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return nil, fmt.Errorf("files %s: %w (run make build, make build-libvgpu and make tools first)", f.From, err)
		}
		if interp := Interpreter(b); interp != "" && dynamic == "" {
			dynamic = src + " (loader " + interp + ")"
		}
		mode, _ := f.mode()
		files.file(f.To, mode, b)
	}
	base := newLayer()
	base.file("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"))
	base.file("/etc/group", 0o644, []byte("root:x:0:\nnonroot:x:65532:\n"))
	base.dir("/tmp", 0o1777)
	base.dir("/root", 0o700)
	// The home of the non-root user is its own: clients look for
	// ~/.kube/config there, and an unreadable one is an error, not absent.
	base.dirOwned("/home/nonroot", 0o700, 65532, 65532)
	layers := []*layer{base}
	if dynamic != "" {
		if libcRoot == "" {
			return nil, fmt.Errorf("%s is dynamically linked and no --libc-root was given", dynamic)
		}
		libc, err := dirLayer(libcRoot)
		if err != nil {
			return nil, fmt.Errorf("C library for %s: %w", dynamic, err)
		}
		layers = append(layers, libc)
	}
	layers = append(layers, files)

	img := empty.Image
	for _, l := range layers {
		tl, err := l.layer()
		if err != nil {
			return nil, err
		}
		if img, err = mutate.AppendLayers(img, tl); err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint = def.Entrypoint
	cf.Config.User = def.User
	cf.Config.WorkingDir = "/"
	cf.Config.Env = []string{"PATH=" + searchPath}
	cf.Config.Labels = map[string]string{"org.opencontainers.image.source": "https://github.com/vgpu-io/vgpu"}
	return mutate.ConfigFile(img, cf)
}

// expand resolves a files.from: $VAR/rest from the environment, else
// relative to the repository.
func expand(repo, from string) (string, error) {
	if strings.HasPrefix(from, "$") {
		v, rest, _ := strings.Cut(from[1:], "/")
		val := os.Getenv(v)
		if val == "" {
			return "", fmt.Errorf("files %s: $%s is not set", from, v)
		}
		return filepath.Join(val, rest), nil
	}
	return filepath.Join(repo, from), nil
}

// Interpreter returns the program loader an ELF file asks for (PT_INTERP),
// or "" for a static program or a file that is not ELF.
func Interpreter(b []byte) string {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return ""
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			s, err := io.ReadAll(p.Open())
			if err != nil {
				return ""
			}
			return strings.TrimRight(string(s), "\x00")
		}
	}
	return ""
}

// layer is an uncompressed tar being written, with the directories above
// each entry added once, owned by root.
type layer struct {
	buf  bytes.Buffer
	tw   *tar.Writer
	dirs map[string]bool
	err  error
}

func newLayer() *layer {
	l := &layer{dirs: map[string]bool{"/": true}}
	l.tw = tar.NewWriter(&l.buf)
	return l
}

func (l *layer) header(h *tar.Header, data []byte) {
	if l.err != nil {
		return
	}
	l.parents(path.Dir("/" + h.Name))
	h.Name = strings.TrimPrefix(h.Name, "/")
	h.ModTime, h.Format = epoch, tar.FormatPAX
	if l.err = l.tw.WriteHeader(h); l.err == nil && len(data) > 0 {
		_, l.err = l.tw.Write(data)
	}
}

func (l *layer) parents(dir string) {
	if l.dirs[dir] {
		return
	}
	l.parents(path.Dir(dir))
	l.dirs[dir] = true
	l.header(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(dir, "/") + "/", Mode: 0o755}, nil)
}

func (l *layer) dir(p string, mode int64) { l.dirOwned(p, mode, 0, 0) }

func (l *layer) dirOwned(p string, mode int64, uid, gid int) {
	l.parents(path.Dir(p))
	l.dirs[p] = true
	l.header(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: mode, Uid: uid, Gid: gid}, nil)
}

func (l *layer) file(p string, mode int64, data []byte) {
	l.header(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(data))}, data)
}

func (l *layer) symlink(p, target string) {
	l.header(&tar.Header{Typeflag: tar.TypeSymlink, Name: p, Linkname: target, Mode: 0o777}, nil)
}

func (l *layer) layer() (v1.Layer, error) {
	if l.err == nil {
		l.err = l.tw.Close()
	}
	if l.err != nil {
		return nil, l.err
	}
	b := l.buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
}

// dirLayer is a layer holding a directory tree (the unpacked C library), with
// its symbolic links and permissions, owned by root.
func dirLayer(root string) (*layer, error) {
	l := newLayer()
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	for _, p := range paths[1:] {
		rel, _ := filepath.Rel(root, p)
		in := "/" + filepath.ToSlash(rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return nil, err
		}
		perm := int64(fi.Mode().Perm())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return nil, err
			}
			l.symlink(in, t)
		case fi.IsDir():
			l.dir(in, perm)
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, err
			}
			l.file(in, perm, b)
		}
	}
	if len(paths) == 1 {
		return nil, errors.New(root + " is empty")
	}
	return l, l.err
}
