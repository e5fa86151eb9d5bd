package config

import (
	"maps"
	"strings"
	"testing"

	kubeschedulerv1 "k8s.io/kube-scheduler/config/v1"

	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/kubescore"
)

func TestEmbeddedConfiguration(t *testing.T) {
	cfg, err := Parse(YAML)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Profiles) != 1 || *cfg.Profiles[0].SchedulerName != contract.DefaultSchedulerName {
		t.Errorf("profiles %+v: want one named %s", cfg.Profiles, contract.DefaultSchedulerName)
	}
	if len(cfg.Extenders) != 1 {
		t.Fatalf("%d extenders", len(cfg.Extenders))
	}
	e := cfg.Extenders[0]
	if e.URLPrefix != DefaultURL || e.FilterVerb != "filter" || e.PrioritizeVerb != "prioritize" || e.BindVerb != "bind" ||
		!e.NodeCacheCapable || e.Ignorable || e.Weight < 1 {
		t.Errorf("extender %+v", e)
	}
	ignored := map[string]bool{}
	for _, r := range e.ManagedResources {
		ignored[r.Name] = r.IgnoredByScheduler
	}
	for _, r := range contract.Resources {
		got, ok := ignored[r]
		if !ok || got != (r != contract.ResourceGPU) {
			t.Errorf("%s: managed %v, ignoredByScheduler %v; want managed, ignored only for the shares", r, ok, got)
		}
	}
	if cfg.ClientConnection.QPS < 100 || cfg.ClientConnection.Burst < 100 {
		t.Errorf("client limits %v/%v are those of a controller, not a scheduler", cfg.ClientConnection.QPS, cfg.ClientConnection.Burst)
	}
}

func TestForLocal(t *testing.T) {
	b, err := ForLocal(Local{Kubeconfig: "/tmp/kc", URL: "http://127.0.0.1:1234", QPS: 7, Burst: 9})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(b)
	if err != nil {
		t.Fatalf("ForLocal's output does not decode strictly: %v\n%s", err, b)
	}
	if *cfg.LeaderElection.LeaderElect || cfg.ClientConnection.Kubeconfig != "/tmp/kc" || cfg.Extenders[0].URLPrefix != "http://127.0.0.1:1234" ||
		cfg.ClientConnection.QPS != 7 || cfg.ClientConnection.Burst != 9 {
		t.Errorf("ForLocal gave %s", b)
	}
	if !cfg.Extenders[0].NodeCacheCapable || len(cfg.Extenders[0].ManagedResources) != 4 {
		t.Errorf("ForLocal lost the extender wiring: %s", b)
	}
}

// TestScoreProfile: the shipped profile keeps kube-scheduler's default
// score plugins and weighs the extender at 10; a profile's own plugin sets
// change what the model adds up, and arguments it cannot follow are an
// error.
func TestScoreProfile(t *testing.T) {
	cfg, err := Parse(YAML)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ScoreProfile(cfg, contract.DefaultSchedulerName)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(p.Weights, kubescore.DefaultWeights()) || p.ExtenderWeight != 10 {
		t.Errorf("shipped profile: weights %v, extender %d; want the defaults and 10", p.Weights, p.ExtenderWeight)
	}
	if !p.Ignored[contract.ResourceMemory] || p.Ignored[contract.ResourceGPU] {
		t.Errorf("ignored resources %v: want the shares, not %s", p.Ignored, contract.ResourceGPU)
	}
	five := int32(5)
	cfg.Profiles[0].Plugins = &kubeschedulerv1.Plugins{Score: kubeschedulerv1.PluginSet{
		Disabled: []kubeschedulerv1.Plugin{{Name: "*"}},
		Enabled:  []kubeschedulerv1.Plugin{{Name: kubescore.NodeResourcesFit, Weight: &five}, {Name: kubescore.TaintToleration}},
	}}
	if p, err = ScoreProfile(cfg, contract.DefaultSchedulerName); err != nil {
		t.Fatal(err)
	}
	if want := map[string]int64{kubescore.NodeResourcesFit: 5, kubescore.TaintToleration: 1}; !maps.Equal(p.Weights, want) {
		t.Errorf("weights %v, want %v", p.Weights, want)
	}
	cfg.Profiles[0].PluginConfig = []kubeschedulerv1.PluginConfig{{Name: kubescore.NodeResourcesFit}}
	if _, err := ScoreProfile(cfg, contract.DefaultSchedulerName); err == nil || !strings.Contains(err.Error(), kubescore.NodeResourcesFit) {
		t.Errorf("pluginConfig for NodeResourcesFit: %v, want an error naming it", err)
	}
	if _, err := ScoreProfile(cfg, "other"); err == nil {
		t.Error("no error for a profile that is not there")
	}
}
