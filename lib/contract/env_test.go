package contract

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

var (
	cComment  = regexp.MustCompile(`(?s)/\*.*?\*/|//[^\n]*`)
	cString   = regexp.MustCompile(`"(?:[^"\\\n]|\\.)*"`)
	envToken  = regexp.MustCompile(`\b(?:VGPU|NVIDIA|CUDA)_[A-Z0-9_]*[A-Z0-9]\b`)
	envReader = regexp.MustCompile(`\b(?:getenv|secure_getenv|env_dup)\s*\(\s*(?:\d+\s*,\s*)?"([^"]+)"`)
)

// notReadByLibvgpu are the environment variables of the contract that
// something else reads: LD_PRELOAD is the dynamic loader's.
var notReadByLibvgpu = map[string]bool{"LD_PRELOAD": true}

// contractEnv returns the values of this package's Env* constants, read from
// its source so that a new one is covered without editing this test.
func contractEnv(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	files, _ := filepath.Glob("*.go")
	env := map[string]string{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, s := range g.Specs {
				vs := s.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if !strings.HasPrefix(n.Name, "Env") || i >= len(vs.Values) {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						v, _ := strconv.Unquote(lit.Value)
						env[v] = n.Name
					}
				}
			}
		}
	}
	if len(env) < 4 {
		t.Fatalf("found %d Env constants: the parse missed them", len(env))
	}
	return env
}

// libvgpu reads the environment variables the device plugin sets by the
// names lib/contract gives them (docs/contract.md): a name spelt otherwise
// in C, or a contract variable libvgpu no longer reads, fails here instead
// of leaving a container silently unlimited.
func TestLibvgpuReadsTheContractEnvironment(t *testing.T) {
	env := contractEnv(t)
	var files []string
	for _, dir := range []string{"../../libvgpu/src", "../../libvgpu/include"} {
		for _, pat := range []string{"*.c", "*.h"} {
			m, _ := filepath.Glob(filepath.Join(dir, pat))
			files = append(files, m...)
		}
	}
	if len(files) == 0 {
		t.Fatal("no libvgpu sources found")
	}
	read := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src := cComment.ReplaceAllString(string(b), "")
		for _, m := range envReader.FindAllStringSubmatch(src, -1) {
			read[m[1]] = true
			if _, ok := env[m[1]]; !ok {
				t.Errorf("%s reads $%s, which lib/contract does not define", filepath.Base(f), m[1])
			}
		}
		// Messages name the variables too; a stale name there misleads.
		for _, lit := range cString.FindAllString(src, -1) {
			for _, tok := range envToken.FindAllString(lit, -1) {
				if _, ok := env[tok]; !ok {
					t.Errorf("%s names %s in %s, which lib/contract does not define", filepath.Base(f), tok, lit)
				}
			}
		}
	}
	var unread []string
	for v, name := range env {
		if !read[v] && !notReadByLibvgpu[v] {
			unread = append(unread, name+"="+v)
		}
	}
	sort.Strings(unread)
	if len(unread) > 0 {
		t.Errorf("libvgpu reads none of %v: the device plugin sets them for nothing", unread)
	}
}
