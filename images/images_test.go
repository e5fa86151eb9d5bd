package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// The archives of `make images` against every overlay's manifests: each
// container's program (its command, else the image's entrypoint) exists in
// its image, is a regular file its user may execute, and, when dynamically
// linked, finds its loader and every library it needs there. A flag that
// names a file inside the image (--libvgpu) points at a file that exists.
func TestArchivesRunWhatTheManifestsRun(t *testing.T) {
	dir := os.Getenv("VGPU_IMAGES_DIR")
	if dir == "" {
		t.Skip("VGPU_IMAGES_DIR is not set: run through make test-images, which builds the archives first")
	}
	images := loadArchives(t, dir)
	repo := filepath.Join("..")
	overlays, err := filepath.Glob(filepath.Join(repo, "kustomize", "overlays", "*"))
	if err != nil || len(overlays) == 0 {
		t.Fatalf("no overlays under kustomize/overlays: %v", err)
	}
	checked := 0
	for _, overlay := range overlays {
		for _, c := range containersOf(t, overlay) {
			t.Run(filepath.Base(overlay)+"/"+c.where, func(t *testing.T) {
				img, ok := images[c.image]
				if !ok {
					t.Fatalf("runs image %s, which no archive in %s holds (have %v)", c.image, dir, keys(images))
				}
				checkContainer(t, img, c)
			})
			checked++
		}
	}
	if checked < 5 {
		t.Errorf("checked only %d containers: the overlays should deploy the scheduler, extender, webhook, device plugin and monitor", checked)
	}
}

// Every image of images.yaml is in the archives, under the reference the
// kustomization gives it.
func TestEveryDefinedImageIsBuilt(t *testing.T) {
	dir := os.Getenv("VGPU_IMAGES_DIR")
	if dir == "" {
		t.Skip("VGPU_IMAGES_DIR is not set: run through make test-images, which builds the archives first")
	}
	images := loadArchives(t, dir)
	defs, refs, err := load("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, def := range defs {
		ref, err := refs.Ref(def)
		if err != nil {
			t.Fatal(err)
		}
		img, ok := images[ref]
		if !ok {
			t.Errorf("%s (%s) is not in %s", def.Name, ref, dir)
			continue
		}
		checkContainer(t, img, container{where: def.Name, image: ref})
	}
}

// Every image the kustomization names (the one place where images are
// named) has a definition, so `make images` builds all that the manifests run.
func TestEveryKustomizationImageIsDefined(t *testing.T) {
	defs, refs, err := load("..")
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	for _, d := range defs {
		defined[d.Name] = true
	}
	for short := range refs {
		if !defined[short] {
			t.Errorf("kustomize/base/kustomization.yaml names image %s, which images/images.yaml does not define", short)
		}
	}
}

// A static program's image holds no C library; a dynamically linked one gets
// the one of --libc-root, and without one the build says which program
// needs it.
func TestCLibraryOnlyForDynamicPrograms(t *testing.T) {
	host, err := exec.LookPath("true")
	if err != nil || Interpreter(mustRead(t, host)) == "" {
		t.Skip("no dynamically linked true(1) on this host")
	}
	repo := t.TempDir()
	if err := os.WriteFile(filepath.Join(repo, "static"), []byte("#!/not-elf\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	libc := t.TempDir()
	if err := os.MkdirAll(filepath.Join(libc, "lib64"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(libc, "lib64", "marker.so"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	static := Image{Name: "s", Files: []File{{From: "static", To: "/s"}}, Entrypoint: []string{"/s"}, User: "0:0"}
	dynamic := Image{Name: "d", Files: []File{{From: host, To: "/usr/local/bin/true"}}, Entrypoint: []string{"/usr/local/bin/true"}, User: "0:0"}
	dynamic.Files[0].From, _ = filepath.Rel(repo, host)

	img, err := Assemble(repo, static, libc)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := extract(t, img)["/lib64/marker.so"]; ok {
		t.Error("an image with only a static program got the C library")
	}
	img, err = Assemble(repo, dynamic, libc)
	if err != nil {
		t.Fatal(err)
	}
	fs := extract(t, img)
	if _, ok := fs["/lib64/marker.so"]; !ok {
		t.Error("an image with a dynamically linked program has no C library")
	}
	if e := fs["/usr/local/bin/true"]; e == nil || e.mode&0o111 == 0 {
		t.Errorf("/usr/local/bin/true is missing or not executable: %+v", e)
	}
	if _, err := Assemble(repo, dynamic, ""); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("a dynamic program without --libc-root: got %v, want an error naming the program", err)
	}
}

// Bad definitions are refused with the entry and field named.
func TestLoadImagesRefusesBadDefinitions(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"images: [{name: a, files: [{from: x, to: /x}], entrypoint: [x], user: '0:0'}]", "entrypoint must start with an absolute path"},
		{"images: [{name: a, files: [{from: x, to: x}], entrypoint: [/x], user: '0:0'}]", "files[0].to must be a clean absolute path"},
		{"images: [{name: a, files: [{from: x, to: /x}], entrypoint: [/x], user: root}]", "user: want numeric uid:gid"},
		{"images: [{name: a, files: [{from: x, to: /x, mode: rwx}], entrypoint: [/x], user: '0:0'}]", "files[0].mode"},
		{"images: [{name: a, files: [], entrypoint: [/x], user: '0:0'}]", "files is empty"},
		{"images: [{name: a, files: [{from: x, to: /x}], entrypoint: [/x], user: '0:0', base: debian}]", "unknown field"},
	} {
		f := filepath.Join(t.TempDir(), "images.yaml")
		if err := os.WriteFile(f, []byte(tc.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadImages(f); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.yaml, err, tc.want)
		}
	}
}

type container struct {
	where   string
	image   string
	command []string
	args    []string
	uid     *int64
}

type entry struct {
	typ      byte
	mode     int64
	uid, gid int
	link     string
	data     []byte
}

func checkContainer(t *testing.T, img v1.Image, c container) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	fs := extract(t, img)
	prog := cf.Config.Entrypoint
	if len(c.command) > 0 {
		prog = c.command
	}
	if len(prog) == 0 {
		t.Fatalf("%s: neither the manifest nor the image names a program", c.where)
	}
	uid := 0
	if u, _, err := parseUser(cf.Config.User); err == nil {
		uid = u
	}
	if c.uid != nil {
		uid = int(*c.uid)
	}
	file := prog[0]
	if !path.IsAbs(file) {
		file = lookPath(fs, file, cf.Config.Env)
		if file == "" {
			t.Fatalf("%s: runs %q, not found on the image's PATH (%v)", c.where, prog[0], cf.Config.Env)
		}
	}
	p, e := resolve(fs, file)
	if e == nil || e.typ != tar.TypeReg {
		t.Fatalf("%s: runs %s, which the image %s does not hold as a regular file", c.where, file, c.image)
	}
	if !executable(e, uid) {
		t.Errorf("%s: %s (mode %o, owner %d) is not executable by uid %d", c.where, p, e.mode, e.uid, uid)
	}
	checkLinking(t, fs, c.where, p, e.data)
	checkHome(t, fs, c.where, uid)
	for _, a := range c.args {
		if f, ok := strings.CutPrefix(a, "--libvgpu="); ok {
			if _, e := resolve(fs, f); e == nil || e.typ != tar.TypeReg {
				t.Errorf("%s: %s names %s, which the image does not hold", c.where, a, f)
			}
		}
	}
}

// checkHome: the user is in /etc/passwd and owns its home directory, where
// clients look for configuration (~/.kube/config): an unreadable home makes
// that lookup fail with "permission denied" instead of finding nothing.
func checkHome(t *testing.T, fs map[string]*entry, where string, uid int) {
	t.Helper()
	pw := fs["/etc/passwd"]
	if pw == nil {
		t.Errorf("%s: the image has no /etc/passwd", where)
		return
	}
	for _, line := range strings.Split(string(pw.data), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 6 && f[2] == strconv.Itoa(uid) {
			_, e := resolve(fs, f[5])
			if e == nil || e.typ != tar.TypeDir || (uid != 0 && e.uid != uid) {
				t.Errorf("%s: uid %d's home %s is missing or not its own: %+v", where, uid, f[5], e)
			}
			return
		}
	}
	t.Errorf("%s: uid %d is not in the image's /etc/passwd", where, uid)
}

// checkLinking: a dynamically linked program's loader and its DT_NEEDED
// libraries are in the image, where the loader looks by default.
func checkLinking(t *testing.T, fs map[string]*entry, where, p string, b []byte) {
	t.Helper()
	interp := Interpreter(b)
	if interp == "" {
		return
	}
	if _, e := resolve(fs, interp); e == nil || e.typ != tar.TypeReg {
		t.Errorf("%s: %s needs the loader %s, which the image does not hold: it would fail to start with \"no such file or directory\"", where, p, interp)
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	for _, lib := range libs {
		found := false
		for _, d := range []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"} {
			if _, e := resolve(fs, path.Join(d, lib)); e != nil && e.typ == tar.TypeReg {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("%s: %s needs %s, which the image does not hold", where, p, lib)
		}
	}
}

func executable(e *entry, uid int) bool {
	switch {
	case uid == 0:
		return e.mode&0o111 != 0
	case uid == e.uid:
		return e.mode&0o100 != 0
	default:
		return e.mode&0o001 != 0
	}
}

func lookPath(fs map[string]*entry, prog string, env []string) string {
	for _, kv := range env {
		if dirs, ok := strings.CutPrefix(kv, "PATH="); ok {
			for _, d := range strings.Split(dirs, ":") {
				if _, e := resolve(fs, path.Join(d, prog)); e != nil && e.typ == tar.TypeReg {
					return path.Join(d, prog)
				}
			}
		}
	}
	return ""
}

// resolve follows symbolic links, in every component of p, inside the
// image's filesystem.
func resolve(fs map[string]*entry, p string) (string, *entry) {
	for hops := 0; hops < 40; hops++ {
		parts := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
		cur, relinked := "/", false
		for i, part := range parts {
			next := path.Join(cur, part)
			e := fs[next]
			if e == nil {
				return next, nil
			}
			if e.typ == tar.TypeSymlink {
				target := e.link
				if !path.IsAbs(target) {
					target = path.Join(cur, target)
				}
				p = path.Join(append([]string{target}, parts[i+1:]...)...)
				relinked = true
				break
			}
			cur = next
		}
		if !relinked {
			return cur, fs[cur]
		}
	}
	return p, nil
}

// extracted caches extract: every overlay runs the same few images.
var extracted = map[v1.Image]map[string]*entry{}

// extract is the image's flattened filesystem; only executables keep their
// content.
func extract(t *testing.T, img v1.Image) map[string]*entry {
	t.Helper()
	if fs, ok := extracted[img]; ok {
		return fs
	}
	fs := extractUncached(t, img)
	extracted[img] = fs
	return fs
}

func extractUncached(t *testing.T, img v1.Image) map[string]*entry {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	fs := map[string]*entry{"/": {typ: tar.TypeDir, mode: 0o755}}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return fs
		}
		if err != nil {
			t.Fatal(err)
		}
		e := &entry{typ: h.Typeflag, mode: h.Mode, uid: h.Uid, gid: h.Gid, link: h.Linkname}
		if e.typ == tar.TypeReg && (e.mode&0o111 != 0 || h.Name == "etc/passwd") {
			if e.data, err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
		fs[path.Join("/", h.Name)] = e
	}
}

// loadArchives maps every reference in the archives of dir to its image.
var archives = map[string]map[string]v1.Image{}

func loadArchives(t *testing.T, dir string) map[string]v1.Image {
	t.Helper()
	if m, ok := archives[dir]; ok {
		return m
	}
	m := loadArchivesUncached(t, dir)
	archives[dir] = m
	return m
}

func loadArchivesUncached(t *testing.T, dir string) map[string]v1.Image {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.tar"))
	if len(files) == 0 {
		t.Fatalf("no archives in %s: run make images", dir)
	}
	out := map[string]v1.Image{}
	for _, f := range files {
		m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(f) })
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, d := range m {
			for _, ref := range d.RepoTags {
				tag, err := name.NewTag(ref)
				if err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				img, err := tarball.ImageFromPath(f, &tag)
				if err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				out[ref] = img
			}
		}
	}
	return out
}

// containersOf renders an overlay and lists the containers of its workloads.
func containersOf(t *testing.T, overlay string) []container {
	t.Helper()
	abs, err := filepath.Abs(overlay)
	if err != nil {
		t.Fatal(err)
	}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), abs)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", overlay, err)
	}
	var out []container
	for _, r := range m.Resources() {
		obj, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		spec := dig(obj, "spec", "template", "spec")
		if r.GetKind() == "Pod" {
			spec = dig(obj, "spec")
		}
		if spec == nil {
			continue
		}
		podUID := int64Of(dig(spec, "securityContext"), "runAsUser")
		for _, field := range []string{"initContainers", "containers"} {
			list, _ := spec[field].([]any)
			for _, item := range list {
				c, _ := item.(map[string]any)
				ct := container{
					where:   r.GetKind() + "/" + r.GetName() + "/" + str(c["name"]),
					image:   str(c["image"]),
					command: strs(c["command"]),
					args:    strs(c["args"]),
					uid:     podUID,
				}
				if u := int64Of(dig(c, "securityContext"), "runAsUser"); u != nil {
					ct.uid = u
				}
				out = append(out, ct)
			}
		}
	}
	return out
}

func dig(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		next, ok := m[k].(map[string]any)
		if !ok {
			return nil
		}
		m = next
	}
	return m
}

func str(v any) string { s, _ := v.(string); return s }

func strs(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, s := range l {
		out = append(out, str(s))
	}
	return out
}

func int64Of(m map[string]any, k string) *int64 {
	if m == nil {
		return nil
	}
	switch v := m[k].(type) {
	case int:
		n := int64(v)
		return &n
	case int64:
		return &v
	case float64:
		n := int64(v)
		return &n
	case string:
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return &n
		}
	}
	return nil
}

func keys(m map[string]v1.Image) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func mustRead(t *testing.T, f string) []byte {
	t.Helper()
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
