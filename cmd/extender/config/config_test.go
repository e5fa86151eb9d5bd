package config

import (
	"testing"

	"github.com/vgpu-io/vgpu/lib/contract"
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
