package kustomizetest

import (
	"fmt"
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/component-helpers/auth/rbac/validation"

	"github.com/vgpu-io/vgpu/lib/contract"
)

// grants is what the manifests give one ServiceAccount: rules by namespace
// ("" for cluster-wide), and the roles bound that the manifests do not define
// (Kubernetes' bootstrap roles).
type grants struct {
	rules    map[string][]rbacv1.PolicyRule
	external []string
}

func grantsOf(objs []object, sa string) grants {
	g := grants{rules: map[string][]rbacv1.PolicyRule{}}
	clusterRoles := map[string][]rbacv1.PolicyRule{}
	for _, r := range all[*rbacv1.ClusterRole](objs) {
		clusterRoles[r.Name] = r.Rules
	}
	roles := map[string][]rbacv1.PolicyRule{}
	for _, r := range all[*rbacv1.Role](objs) {
		roles[r.Namespace+"/"+r.Name] = r.Rules
	}
	isSubject := func(subjects []rbacv1.Subject) bool {
		return slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool {
			return s.Kind == rbacv1.ServiceAccountKind && s.Name == sa && s.Namespace == contract.DefaultNamespace
		})
	}
	bind := func(ns string, ref rbacv1.RoleRef) {
		var rules []rbacv1.PolicyRule
		var ok bool
		if ref.Kind == "ClusterRole" {
			rules, ok = clusterRoles[ref.Name]
		} else {
			rules, ok = roles[ns+"/"+ref.Name]
		}
		if !ok {
			g.external = append(g.external, fmt.Sprintf("%s %s in %q", ref.Kind, ref.Name, ns))
			return
		}
		g.rules[ns] = append(g.rules[ns], rules...)
	}
	for _, b := range all[*rbacv1.ClusterRoleBinding](objs) {
		if isSubject(b.Subjects) {
			bind("", b.RoleRef)
		}
	}
	for _, b := range all[*rbacv1.RoleBinding](objs) {
		if isSubject(b.Subjects) {
			bind(b.Namespace, b.RoleRef)
		}
	}
	slices.Sort(g.external)
	return g
}

func rule(groups, resources, verbs []string, names ...string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{APIGroups: groups, Resources: resources, Verbs: verbs, ResourceNames: names}
}

var (
	core   = []string{""}
	ro     = []string{"get", "list", "watch"}
	ns     = contract.DefaultNamespace
	hookCf = []string{"mutatingwebhookconfigurations", "validatingwebhookconfigurations"}
)

// Least privilege: each component gets exactly what its code needs, no
// more and no less. Rule sets are compared by what they allow, not by how
// they are written.
func TestRBACIsLeastPrivilege(t *testing.T) {
	objs := render(t, "overlays/binpack")
	for _, tc := range []struct {
		sa       string
		rules    map[string][]rbacv1.PolicyRule
		external []string
	}{
		{
			sa: "vgpu-scheduler",
			// kube-scheduler itself: Kubernetes' own roles for it.
			external: []string{
				`ClusterRole system:kube-scheduler in ""`,
				`ClusterRole system:volume-scheduler in ""`,
				`Role extension-apiserver-authentication-reader in "kube-system"`,
			},
			rules: map[string][]rbacv1.PolicyRule{
				// The extender: informers on nodes and pods, a fresh read
				// and the assignment patch at bind, the Binding.
				"": {
					rule(core, []string{"nodes"}, []string{"list", "watch"}),
					rule(core, []string{"pods"}, []string{"get", "list", "watch", "patch"}),
					rule(core, []string{"pods/binding"}, []string{"create"}),
				},
				// The leader election lease under vgpu's own name; the settings.
				ns: {
					rule([]string{"coordination.k8s.io"}, []string{"leases"}, []string{"create"}),
					rule([]string{"coordination.k8s.io"}, []string{"leases"}, []string{"get", "update"}, contract.DefaultSchedulerName),
					rule(core, []string{"configmaps"}, ro, contract.SettingsConfigMap),
				},
			},
		},
		{
			sa: "vgpu-webhook",
			rules: map[string][]rbacv1.PolicyRule{
				"": {
					rule(core, []string{"nodes"}, []string{"list", "watch"}),
					rule([]string{"admissionregistration.k8s.io"}, hookCf, []string{"patch"}, "vgpu-webhook"),
				},
				ns: {
					rule(core, []string{"secrets"}, []string{"create"}),
					rule(core, []string{"secrets"}, []string{"get"}, "vgpu-webhook-tls"),
				},
			},
		},
		{
			sa: "vgpu-device-plugin",
			rules: map[string][]rbacv1.PolicyRule{
				"": {
					rule(core, []string{"nodes"}, []string{"get", "list", "watch", "patch"}),
					rule(core, []string{"pods"}, []string{"get", "list", "watch", "patch"}),
					// A slice left from DRA mode is deleted at start.
					rule([]string{"resource.k8s.io"}, []string{"resourceslices"}, []string{"list", "delete"}),
				},
				ns: {rule(core, []string{"configmaps"}, ro, contract.SettingsConfigMap)},
			},
		},
		{
			sa: "vgpu-monitor",
			rules: map[string][]rbacv1.PolicyRule{
				// Informers; an Event and, when the settings say so, an
				// eviction for a pod whose limits are not enforced.
				"": {
					rule(core, []string{"pods", "nodes"}, []string{"list", "watch"}),
					rule(core, []string{"pods/eviction"}, []string{"create"}),
					rule(core, []string{"events"}, []string{"create", "patch"}),
				},
				ns: {rule(core, []string{"configmaps"}, ro, contract.SettingsConfigMap)},
			},
		},
	} {
		t.Run(tc.sa, func(t *testing.T) {
			g := grantsOf(objs, tc.sa)
			if !slices.Equal(g.external, tc.external) {
				t.Errorf("binds roles from outside the manifests %q, want %q", g.external, tc.external)
			}
			for _, scope := range []string{"", ns, "kube-system", "default"} {
				got, want := g.rules[scope], tc.rules[scope]
				if ok, extra := validation.Covers(want, got); !ok {
					t.Errorf("in %q it may do more than it needs: %v", scope, extra)
				}
				if ok, missing := validation.Covers(got, want); !ok {
					t.Errorf("in %q it lacks %v", scope, missing)
				}
			}
			for scope := range g.rules {
				if _, ok := tc.rules[scope]; !ok {
					t.Errorf("has rules in namespace %q: %v", scope, g.rules[scope])
				}
			}
		})
	}
}
