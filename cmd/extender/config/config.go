// Package config is the KubeSchedulerConfiguration that wires kube-scheduler
// to vgpu's extender: scheduler-config.yaml, embedded, for the manifests,
// and ForLocal, the same wiring for a scheduler run outside the cluster by
// tests and the local harness.
package config

import (
	_ "embed"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	kubeschedulerv1 "k8s.io/kube-scheduler/config/v1"
	"sigs.k8s.io/yaml"

	"github.com/vgpu-io/vgpu/lib/kubescore"
)

// YAML is scheduler-config.yaml.
//
//go:embed scheduler-config.yaml
var YAML []byte

// DefaultURL is where the extender listens by default (its --listen flag)
// and where the configuration sends the scheduler.
const DefaultURL = "http://127.0.0.1:8888"

var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := kubeschedulerv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()

// Parse decodes a KubeSchedulerConfiguration strictly, as kube-scheduler
// does: an unknown field is an error.
func Parse(data []byte) (*kubeschedulerv1.KubeSchedulerConfiguration, error) {
	dec := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme, json.SerializerOptions{Yaml: true, Strict: true})
	obj, _, err := dec.Decode(data, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("KubeSchedulerConfiguration: %w", err)
	}
	cfg, ok := obj.(*kubeschedulerv1.KubeSchedulerConfiguration)
	if !ok {
		return nil, fmt.Errorf("KubeSchedulerConfiguration: decoded a %T", obj)
	}
	return cfg, nil
}

// At returns scheduler-config.yaml with the extender at url (DefaultURL
// when empty): the one place the shipped configuration is read, by the
// local harness, the tests and the benchmark alike.
func At(url string) (*kubeschedulerv1.KubeSchedulerConfiguration, error) {
	cfg, err := Parse(YAML)
	if err != nil {
		return nil, err
	}
	if url != "" {
		cfg.Extenders[0].URLPrefix = url
	}
	return cfg, nil
}

// Local adjusts the configuration for a kube-scheduler outside the cluster.
type Local struct {
	// Kubeconfig is the scheduler's kubeconfig file.
	Kubeconfig string
	// URL of the extender; DefaultURL when empty.
	URL string
	// QPS and Burst override the client limits when not zero.
	QPS   float32
	Burst int32
}

// ForLocal returns scheduler-config.yaml with a kubeconfig, the extender's
// URL and, since a lone scheduler has nobody to elect, no leader election.
func ForLocal(l Local) ([]byte, error) {
	cfg, err := At(l.URL)
	if err != nil {
		return nil, err
	}
	return l.Render(cfg)
}

// Render returns a copy of cfg (nil: an empty configuration) as YAML for a
// kube-scheduler outside the cluster: l's kubeconfig and client limits, no
// leader election; and l's URL for the extender when both are set.
func (l Local) Render(in *kubeschedulerv1.KubeSchedulerConfiguration) ([]byte, error) {
	cfg := &kubeschedulerv1.KubeSchedulerConfiguration{}
	if in != nil {
		cfg = in.DeepCopy()
	}
	if l.URL != "" && len(cfg.Extenders) > 0 {
		cfg.Extenders[0].URLPrefix = l.URL
	}
	no := false
	cfg.LeaderElection.LeaderElect = &no
	cfg.LeaderElection.ResourceName, cfg.LeaderElection.ResourceNamespace = "", ""
	cfg.ClientConnection.Kubeconfig = l.Kubeconfig
	if l.QPS != 0 {
		cfg.ClientConnection.QPS = l.QPS
	}
	if l.Burst != 0 {
		cfg.ClientConnection.Burst = l.Burst
	}
	cfg.APIVersion, cfg.Kind = kubeschedulerv1.SchemeGroupVersion.String(), "KubeSchedulerConfiguration"
	return yaml.Marshal(cfg)
}

// ScoreProfile is what the simulator's model of kube-scheduler
// (lib/kubescore) needs of cfg: the score plugins that the profile of
// schedulerName enables on top of kube-scheduler's defaults, with their
// weights, and the extender's weight and ignored resources. Plugin
// arguments the model does not follow are an error.
func ScoreProfile(cfg *kubeschedulerv1.KubeSchedulerConfiguration, schedulerName string) (kubescore.Profile, error) {
	var prof *kubeschedulerv1.KubeSchedulerProfile
	for i := range cfg.Profiles {
		if p := &cfg.Profiles[i]; p.SchedulerName != nil && *p.SchedulerName == schedulerName {
			prof = p
		}
	}
	if prof == nil {
		return kubescore.Profile{}, fmt.Errorf("KubeSchedulerConfiguration: no profile with schedulerName %q", schedulerName)
	}
	out := kubescore.Profile{Weights: kubescore.DefaultWeights(), Ignored: map[corev1.ResourceName]bool{}}
	apply := func(set kubeschedulerv1.PluginSet) {
		for _, d := range set.Disabled {
			if d.Name == "*" {
				clear(out.Weights)
			}
			delete(out.Weights, d.Name)
		}
		for _, e := range set.Enabled {
			w := int64(1) // kube-scheduler's weight for a score plugin that names none
			if e.Weight != nil && *e.Weight > 0 {
				w = int64(*e.Weight)
			}
			out.Weights[e.Name] = w
		}
	}
	if prof.Plugins != nil {
		apply(prof.Plugins.MultiPoint)
		apply(prof.Plugins.Score)
	}
	for _, pc := range prof.PluginConfig {
		if _, scores := kubescore.DefaultWeights()[pc.Name]; scores {
			return kubescore.Profile{}, fmt.Errorf("KubeSchedulerConfiguration: profiles[%s].pluginConfig[%s]: the model of kube-scheduler follows only the default arguments", schedulerName, pc.Name)
		}
	}
	var prioritizing []kubeschedulerv1.Extender
	for _, e := range cfg.Extenders {
		if e.PrioritizeVerb != "" {
			prioritizing = append(prioritizing, e)
		}
	}
	if len(prioritizing) != 1 {
		return kubescore.Profile{}, fmt.Errorf("KubeSchedulerConfiguration: %d extenders prioritize; the model of kube-scheduler takes exactly one, vgpu's", len(prioritizing))
	}
	out.ExtenderWeight = prioritizing[0].Weight
	for _, r := range prioritizing[0].ManagedResources {
		if r.IgnoredByScheduler {
			out.Ignored[corev1.ResourceName(r.Name)] = true
		}
	}
	return out, nil
}
