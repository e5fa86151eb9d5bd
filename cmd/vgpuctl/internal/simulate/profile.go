package simulate

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	schedconfig "github.com/vgpu-io/vgpu/cmd/extender/config"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/kubescore"
)

// SchedulerSelector finds the vgpu scheduler's Deployment, whatever
// namespace an overlay puts it in (kustomize/base/scheduler).
const SchedulerSelector = "app.kubernetes.io/name=vgpu-scheduler"

// Profile sources.
const (
	ProfileDeployed = "deployed"
	ProfileShipped  = "shipped default"
)

// ScoreProfile is the kube-scheduler profile the what-if models, and where
// it came from.
type ScoreProfile struct {
	// Source is ProfileDeployed or ProfileShipped.
	Source string `json:"source"`
	// ConfigMap is namespace/name of the deployed configuration read.
	ConfigMap string `json:"configMap,omitempty"`
	// Fallback says why the deployed configuration was not used.
	Fallback       string           `json:"fallback,omitempty"`
	Weights        map[string]int64 `json:"pluginWeights"`
	ExtenderWeight int64            `json:"extenderWeight"`
	// PercentageOfNodesToScore is the configuration's (nil: unset, the
	// adaptive default).
	PercentageOfNodesToScore *int32 `json:"percentageOfNodesToScore,omitempty"`

	prof kubescore.Profile
}

// LoadScoreProfile reads the score profile of the vgpu scheduler running
// in the cluster: the ConfigMap that its Deployment mounts at the path of
// kube-scheduler's --config. Where that cannot be read (no such
// Deployment, no permission, a configuration the model does not follow) it
// falls back to the configuration vgpu ships and says why.
func LoadScoreProfile(ctx context.Context, cs kubernetes.Interface) (ScoreProfile, error) {
	sp, err := deployedProfile(ctx, cs)
	if err == nil {
		return sp, nil
	}
	cfg, perr := schedconfig.At("")
	if perr != nil {
		return ScoreProfile{}, perr
	}
	prof, perr := schedconfig.ScoreProfile(cfg, contract.DefaultSchedulerName)
	if perr != nil {
		return ScoreProfile{}, fmt.Errorf("the shipped scheduler configuration: %v", perr)
	}
	return newScoreProfile(ProfileShipped, "", err.Error(), prof, cfg.PercentageOfNodesToScore), nil
}

func newScoreProfile(source, cm, fallback string, prof kubescore.Profile, pct *int32) ScoreProfile {
	return ScoreProfile{Source: source, ConfigMap: cm, Fallback: fallback, Weights: prof.Weights,
		ExtenderWeight: prof.ExtenderWeight, PercentageOfNodesToScore: pct, prof: prof}
}

func deployedProfile(ctx context.Context, cs kubernetes.Interface) (ScoreProfile, error) {
	list, err := cs.AppsV1().Deployments("").List(ctx, metav1.ListOptions{LabelSelector: SchedulerSelector})
	if err != nil {
		return ScoreProfile{}, fmt.Errorf("listing Deployments %s: %v", SchedulerSelector, err)
	}
	if len(list.Items) == 0 {
		return ScoreProfile{}, fmt.Errorf("no Deployment labelled %s", SchedulerSelector)
	}
	sort.Slice(list.Items, func(i, j int) bool {
		a, b := &list.Items[i], &list.Items[j]
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	if len(list.Items) > 1 {
		var names []string
		for _, d := range list.Items {
			names = append(names, d.Namespace+"/"+d.Name)
		}
		return ScoreProfile{}, fmt.Errorf("%d Deployments labelled %s (%s): cannot tell which schedules vgpu pods", len(names), SchedulerSelector, strings.Join(names, ", "))
	}
	d := &list.Items[0]
	cmName, key, err := configSource(d)
	if err != nil {
		return ScoreProfile{}, fmt.Errorf("deployment %s/%s: %v", d.Namespace, d.Name, err)
	}
	ref := d.Namespace + "/" + cmName
	cm, err := cs.CoreV1().ConfigMaps(d.Namespace).Get(ctx, cmName, metav1.GetOptions{})
	if err != nil {
		return ScoreProfile{}, fmt.Errorf("reading ConfigMap %s: %v", ref, err)
	}
	data, ok := cm.Data[key]
	if !ok {
		return ScoreProfile{}, fmt.Errorf("ConfigMap %s has no key %s", ref, key)
	}
	cfg, err := schedconfig.Parse([]byte(data))
	if err != nil {
		return ScoreProfile{}, fmt.Errorf("ConfigMap %s key %s: %v", ref, key, err)
	}
	prof, err := schedconfig.ScoreProfile(cfg, contract.DefaultSchedulerName)
	if err != nil {
		return ScoreProfile{}, fmt.Errorf("ConfigMap %s key %s: %v", ref, key, err)
	}
	return newScoreProfile(ProfileDeployed, ref, "", prof, cfg.PercentageOfNodesToScore), nil
}

// configSource finds, in the Deployment's pod template, the ConfigMap and
// key that kube-scheduler reads its --config from.
func configSource(d *appsv1.Deployment) (configMap, key string, err error) {
	spec := &d.Spec.Template.Spec
	for i := range spec.Containers {
		c := &spec.Containers[i]
		file := configFlag(append(append([]string{}, c.Command...), c.Args...))
		if file == "" {
			continue
		}
		for _, m := range c.VolumeMounts {
			dir := path.Clean(m.MountPath)
			rel := strings.TrimPrefix(path.Clean(file), dir+"/")
			if rel == path.Clean(file) || m.SubPath != "" {
				continue
			}
			for _, v := range spec.Volumes {
				if v.Name != m.Name {
					continue
				}
				if v.ConfigMap == nil {
					return "", "", fmt.Errorf("container %s: --config=%s is on volume %s, which is not a ConfigMap", c.Name, file, v.Name)
				}
				return v.ConfigMap.Name, itemKey(v.ConfigMap.Items, rel), nil
			}
		}
		return "", "", fmt.Errorf("container %s: --config=%s is on no volume of the pod", c.Name, file)
	}
	return "", "", errors.New("no container runs kube-scheduler with --config")
}

// configFlag is the value of --config in a command line, "" if none.
func configFlag(argv []string) string {
	for i, a := range argv {
		switch {
		case strings.HasPrefix(a, "--config="):
			return strings.TrimPrefix(a, "--config=")
		case a == "--config" && i+1 < len(argv):
			return argv[i+1]
		}
	}
	return ""
}

// itemKey is the ConfigMap key mounted at rel: the item that maps a key
// to that path, else the key of that name.
func itemKey(items []corev1.KeyToPath, rel string) string {
	for _, it := range items {
		if path.Clean(it.Path) == rel {
			return it.Key
		}
	}
	return rel
}

// describe is the profile in one line.
func (sp ScoreProfile) describe() string {
	names := make([]string, 0, len(sp.Weights))
	for n := range sp.Weights {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %d", n, sp.Weights[n]))
	}
	where := "the deployed configuration, ConfigMap " + sp.ConfigMap
	if sp.Source == ProfileShipped {
		where = "vgpu's shipped configuration (the deployed one was not read: " + sp.Fallback + ")"
	}
	return fmt.Sprintf("kube-scheduler as configured by %s: score plugins %s; vgpu's extender at weight %d",
		where, strings.Join(parts, ", "), sp.ExtenderWeight)
}
