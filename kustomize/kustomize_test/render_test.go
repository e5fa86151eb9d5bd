package kustomizetest

import (
	"fmt"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	k8sruntime "k8s.io/apimachinery/pkg/runtime"
)

// root is the kustomize/ directory, found from this file so that the tests
// run from any working directory.
func root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// Every kustomization a user may apply.
var (
	policyOverlays = []string{"overlays/binpack", "overlays/spread"}
	allOverlays    = []string{"overlays/binpack", "overlays/spread", "overlays/overcommit", "overlays/local", "overlays/local-spread", "overlays/dra"}
)

// object is one rendered object, decoded into its typed struct, with the
// YAML it came from.
type object struct {
	gvk  schema.GroupVersionKind
	obj  k8sruntime.Object
	yaml []byte
}

func (o object) key() string {
	m := o.obj.(interface {
		GetNamespace() string
		GetName() string
	})
	return fmt.Sprintf("%s %s/%s", o.gvk.Kind, m.GetNamespace(), m.GetName())
}

// strict decodes YAML into the typed structs of client-go's scheme, failing
// on unknown and duplicate fields, so that a misspelt field in a manifest is
// an error here rather than silently dropped by the API server.
var strict = json.NewSerializerWithOptions(json.DefaultMetaFactory, clientgoscheme.Scheme, clientgoscheme.Scheme,
	json.SerializerOptions{Yaml: true, Strict: true})

// decode decodes one object into its typed struct: from client-go's scheme,
// or, for the custom resources of the optional components, into the types
// of crds_test.go.
func decode(y []byte) (object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(y, &tm); err != nil {
		return object{}, err
	}
	gvk := tm.GroupVersionKind()
	if newCR, ok := customResources[gvk]; ok {
		cr := newCR()
		if err := yaml.UnmarshalStrict(y, cr); err != nil {
			return object{}, err
		}
		return object{gvk: gvk, obj: cr, yaml: y}, nil
	}
	obj, got, err := strict.Decode(y, nil, nil)
	if err != nil {
		return object{}, err
	}
	return object{gvk: *got, obj: obj, yaml: y}, nil
}

// render runs kustomize (the library kubectl apply -k uses) on a directory
// relative to kustomize/ and decodes every object it produces.
func render(t testing.TB, dir string) []object {
	t.Helper()
	return renderAbs(t, filepath.Join(root(), dir))
}

func renderAbs(t testing.TB, dir string) []object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var objs []object
	seen := map[string]bool{}
	for _, r := range rm.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatalf("%s: %s: %v", dir, r.CurId(), err)
		}
		o, err := decode(y)
		if err != nil {
			t.Fatalf("%s: %s: decoding into its Kubernetes type: %v", dir, r.CurId(), err)
		}
		if seen[o.key()] {
			t.Fatalf("%s: %s twice", dir, o.key())
		}
		seen[o.key()] = true
		objs = append(objs, o)
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].key() < objs[j].key() })
	return objs
}

// find returns the one object of a kind and name, failing if it is absent.
func find[T k8sruntime.Object](t testing.TB, objs []object, name string) T {
	t.Helper()
	var zero T
	for _, o := range objs {
		if v, ok := o.obj.(T); ok && o.obj.(interface{ GetName() string }).GetName() == name {
			return v
		}
	}
	t.Fatalf("no %T named %q in %s", zero, name, keys(objs))
	return zero
}

// all returns every object of one type.
func all[T k8sruntime.Object](objs []object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func keys(objs []object) string {
	var ks []string
	for _, o := range objs {
		ks = append(ks, o.key())
	}
	return strings.Join(ks, ", ")
}
