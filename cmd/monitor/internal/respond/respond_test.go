package respond

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	"github.com/vgpu-io/vgpu/cmd/monitor/internal/audit"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/pods"
	vtest "github.com/vgpu-io/vgpu/internal/testutil"
	"github.com/vgpu-io/vgpu/lib/settings"
)

type fixture struct {
	client    *fake.Clientset
	events    *record.FakeRecorder
	evictions *prometheus.CounterVec
	r         *Responder
	action    settings.UnenforcedAction
	attempts  []*policyv1.Eviction
	refuse    int // evictions to refuse with 429 before accepting
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{action: settings.Report, events: record.NewFakeRecorder(100)}
	pod := vtest.Pod("a", vtest.Namespace("team"))
	f.client = fake.NewClientset(pod)
	// What the API server does with an eviction: 429 while a disruption
	// budget forbids it, else the pod is deleted.
	f.client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "eviction" {
			return false, nil, nil
		}
		ev := a.(k8stesting.CreateAction).GetObject().(*policyv1.Eviction)
		f.attempts = append(f.attempts, ev)
		if f.refuse > 0 {
			f.refuse--
			return true, nil, apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 10)
		}
		gvr := schema.GroupVersionResource{Version: "v1", Resource: "pods"}
		return true, nil, f.client.Tracker().Delete(gvr, ev.Namespace, ev.Name)
	})
	f.evictions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "evictions"}, []string{"result"})
	f.r = &Responder{Client: f.client, Recorder: f.events, Action: func() settings.UnenforcedAction { return f.action },
		Log: zap.NewNop(), Evictions: f.evictions}
	return f
}

func finding(reason string) audit.Finding {
	return audit.Finding{Key: audit.Key{PodUID: "uid-a", Container: "main"}, Ref: pods.Ref{Namespace: "team", Name: "a", UID: types.UID("uid-a")},
		GPU: "GPU-0", Reason: reason, Message: "pid 100 (7 in the container) holds 2048 MiB on GPU-0 and has no slot in the container's region"}
}

func (f *fixture) drainEvents() []string {
	var out []string
	for {
		select {
		case e := <-f.events.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func TestReportRecordsOneEventAndEvictsNothing(t *testing.T) {
	f := newFixture(t)
	fd := finding(audit.ReasonUnaccountedProcess)
	f.r.Confirmed(fd)
	f.r.Confirmed(fd) // confirmed again: same container, reason and message
	f.r.Unenforced([]audit.Finding{fd})
	evs := f.drainEvents()
	want := `Warning GPULimitsUnenforced GPU limits of container "main" are not enforced (unaccounted-process, the monitor found): pid 100`
	if len(evs) != 1 || !strings.HasPrefix(evs[0], want) {
		t.Fatalf("events %q, want one starting %q", evs, want)
	}
	if len(f.attempts) != 0 {
		t.Fatalf("report mode evicted: %+v", f.attempts)
	}
}

func TestEvictFailsClosed(t *testing.T) {
	f := newFixture(t)
	f.action = settings.Evict
	f.refuse = 1
	fd := finding(audit.ReasonAboveLedger)

	f.r.Unenforced([]audit.Finding{fd})
	if len(f.attempts) != 1 || testutil.ToFloat64(f.evictions.WithLabelValues("refused")) != 1 {
		t.Fatalf("first pass: %d attempts, refused %v", len(f.attempts), testutil.ToFloat64(f.evictions.WithLabelValues("refused")))
	}
	f.r.Unenforced([]audit.Finding{fd}) // the budget allows it now
	if len(f.attempts) != 2 || testutil.ToFloat64(f.evictions.WithLabelValues("evicted")) != 1 {
		t.Fatalf("second pass: %d attempts, evicted %v", len(f.attempts), testutil.ToFloat64(f.evictions.WithLabelValues("evicted")))
	}
	if uid := f.attempts[1].DeleteOptions.Preconditions.UID; uid == nil || *uid != "uid-a" {
		t.Fatalf("eviction without the pod's uid as precondition: %+v", f.attempts[1].DeleteOptions)
	}
	if _, err := f.client.CoreV1().Pods("team").Get(context.Background(), "a", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("pod still there: %v", err)
	}
	f.r.Unenforced([]audit.Finding{fd})
	if len(f.attempts) != 2 {
		t.Fatalf("evicted again: %d attempts", len(f.attempts))
	}
	evs := f.drainEvents()
	if len(evs) != 1 || !strings.Contains(evs[0], "GPULimitsUnenforcedEvicting evicting the pod: unenforcedAction is evict") {
		t.Fatalf("events %q", evs)
	}
}

// A container without a region may simply not have used its GPU yet, an
// unreadable region may be another version's layout, and a missing feed is
// the monitor's own absence: reported, never evicted for that alone.
func TestNoRegionIsNeverEvicted(t *testing.T) {
	f := newFixture(t)
	f.action = settings.Evict
	noFeed := finding("no-util-feed")
	noFeed.Libvgpu = true // the monitor's own absence, not the container's doing
	f.r.Unenforced([]audit.Finding{finding(audit.ReasonNoRegion), finding(audit.ReasonRegionUnreadable), noFeed})
	if len(f.attempts) != 0 {
		t.Fatalf("evicted for no-region, region-unreadable or a missing utilisation feed alone")
	}
	f.r.Unenforced([]audit.Finding{finding(audit.ReasonNoRegion), finding("bad-env")})
	if len(f.attempts) != 1 {
		t.Fatalf("libvgpu's own verdict did not evict: %d attempts", len(f.attempts))
	}
}
