// Package handler answers kube-scheduler's extender calls (filter,
// prioritize, bind; k8s.io/kube-scheduler/extender/v1 over HTTP) from the
// in-memory ledger. Filter and prioritize read memory only: no API call.
package handler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	jsoniter "github.com/json-iterator/go"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/vgpu-io/vgpu/cmd/extender/internal/metrics"
	"github.com/vgpu-io/vgpu/lib/ledger"
	"github.com/vgpu-io/vgpu/lib/placement"
	"github.com/vgpu-io/vgpu/lib/request"
	"github.com/vgpu-io/vgpu/lib/settings"
)

// Binder binds a pod and labels the result for metrics.
type Binder interface {
	Bind(ctx context.Context, args *extenderv1.ExtenderBindingArgs) (result string, err error)
}

// Handler serves the extender verbs.
type Handler struct {
	Ledger *ledger.Ledger
	// Mix is the learned mix of pod shapes the fragmentation policy
	// measures against (state.State.Mix); nil: it ranks as binpack.
	Mix *placement.Mix
	// Host tells the fragmentation policy a node's free CPU and memory
	// (hosts.Hosts.Free); nil: unknown.
	Host     func(node string) placement.HostFree
	Ready    func() bool
	Settings func() settings.Settings
	Binder   Binder
	// Rejected is told of a pod no node could take for lack of capacity.
	Rejected func(*corev1.Pod)
	Metrics  *metrics.Metrics
	Log      *zap.Logger

	ratings ratingCache
}

// errNotReady is what kube-scheduler sees before the ledger is built; it
// retries the pod with backoff.
var errNotReady = errors.New("vgpu extender is starting: its GPU ledger is not built from the API server yet")

// Routes registers /filter, /prioritize and /bind.
func (h *Handler) Routes(mux *http.ServeMux) {
	mux.HandleFunc("/filter", serve(h, metrics.VerbFilter, func(_ context.Context, a *extenderv1.ExtenderArgs) *extenderv1.ExtenderFilterResult {
		return h.Filter(a)
	}))
	mux.HandleFunc("/prioritize", serve(h, metrics.VerbPrioritize, func(_ context.Context, a *extenderv1.ExtenderArgs) *extenderv1.HostPriorityList {
		return h.Prioritize(a)
	}))
	mux.HandleFunc("/bind", serve(h, metrics.VerbBind, h.Bind))
}

// codec reads and writes the scheduler's JSON. Every cycle kube-scheduler
// waits on two calls that each carry the pod and a few hundred node names;
// json-iterator decodes them in about half the time of encoding/json (see
// BenchmarkCycle), with the same results: it follows encoding/json's rules,
// struct tags and Unmarshaler methods included.
var codec = jsoniter.ConfigCompatibleWithStandardLibrary

// serve decodes a request of type A, answers it and times it.
func serve[A, R any](h *Handler, verb string, fn func(context.Context, *A) *R) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if r.Method != http.MethodPost {
			http.Error(w, verb+" takes a POST", http.StatusMethodNotAllowed)
			return
		}
		var args A
		if err := codec.NewDecoder(io.LimitReader(r.Body, 64<<20)).Decode(&args); err != nil {
			http.Error(w, fmt.Sprintf("%s: decoding the request: %v", verb, err), http.StatusBadRequest)
			return
		}
		res := fn(r.Context(), &args)
		// Marshalled whole, with its Content-Length and no trailing
		// newline: kube-scheduler decodes one JSON value and closes the
		// body, and only a body read to its end lets it reuse the
		// connection. A chunked answer (anything over 4 KiB written as a
		// stream) would cost it a new TCP connection per call.
		body, err := codec.Marshal(res)
		if err != nil {
			http.Error(w, fmt.Sprintf("%s: encoding the answer: %v", verb, err), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if _, err := w.Write(body); err != nil {
			h.Log.Warn("writing response", zap.String("verb", verb), zap.Error(err))
		}
		h.Metrics.Latency.WithLabelValues(verb).Observe(time.Since(start).Seconds())
	}
}

// Filter returns every node the pod fits and, for every other node, why:
// short reasons that kube-scheduler can count across nodes; the detailed
// one (with GPU counts) is logged at debug level.
func (h *Handler) Filter(args *extenderv1.ExtenderArgs) *extenderv1.ExtenderFilterResult {
	if args.NodeNames == nil || args.Pod == nil {
		return &extenderv1.ExtenderFilterResult{Error: "vgpu extender: the request has no pod or no node names; configure the extender with nodeCacheCapable: true"}
	}
	if !h.Ready() {
		return &extenderv1.ExtenderFilterResult{Error: errNotReady.Error()}
	}
	nodes := *args.NodeNames
	req, err := request.FromPod(args.Pod)
	if errors.Is(err, request.ErrNoGPU) {
		return &extenderv1.ExtenderFilterResult{NodeNames: &nodes}
	}
	if err != nil {
		// The webhook denies such pods; one that got past it (created
		// while the webhook was opted out) fits nowhere, and says why.
		msg := "invalid vGPU request: " + oneLine(err)
		failed := make(extenderv1.FailedNodesMap, len(nodes))
		for _, n := range nodes {
			failed[n] = msg
		}
		h.Metrics.FailedFits.WithLabelValues(metrics.ReasonInvalid).Add(float64(len(nodes)))
		empty := []string{}
		return &extenderv1.ExtenderFilterResult{NodeNames: &empty, FailedAndUnresolvableNodes: failed}
	}
	fits, failed, ratings := h.rate(req, nodes)
	h.ratings.put(args.Pod.UID, ratings)
	capacity := false
	for node, why := range failed {
		labels := metrics.Reasons(why)
		for _, label := range labels {
			h.Metrics.FailedFits.WithLabelValues(label).Inc()
			capacity = capacity || metrics.Capacity(label)
		}
		failed[node] = metrics.Short(labels)
		if ce := h.Log.Check(zap.DebugLevel, "node does not fit"); ce != nil {
			ce.Write(zap.String("pod", args.Pod.Namespace+"/"+args.Pod.Name), zap.String("node", node), zap.String("reason", why))
		}
	}
	if len(fits) == 0 && capacity && h.Rejected != nil {
		h.Rejected(args.Pod)
	}
	return &extenderv1.ExtenderFilterResult{NodeNames: &fits, FailedNodes: failed}
}

// Prioritize scores each node 0..10 by the node policy (the pod's
// override annotation first) and lists the nodes that score above 0.
// lib/placement rates each node at full precision and
// placement.ExtenderPriorities normalises the ratings over the nodes of
// this call, so that the scheduler's choice follows the policy
// (docs/placement.md).
func (h *Handler) Prioritize(args *extenderv1.ExtenderArgs) *extenderv1.HostPriorityList {
	out := extenderv1.HostPriorityList{}
	if args.NodeNames == nil || args.Pod == nil || !h.Ready() {
		return &out
	}
	nodes := *args.NodeNames
	req, err := request.FromPod(args.Pod)
	if err != nil {
		return &out
	}
	// The filter of this scheduling cycle rated the nodes already.
	ratings, ok := h.ratings.take(args.Pod.UID)
	if !ok {
		_, _, ratings = h.rate(req, nodes)
	}
	fits := make([]string, 0, len(nodes))
	values := make([]float64, 0, len(nodes))
	for _, n := range nodes {
		if v, ok := ratings[n]; ok { // else the filter removed it
			fits, values = append(fits, n), append(values, v)
		}
	}
	for i, score := range placement.ExtenderPriorities(values) {
		// kube-scheduler adds nothing for a node the answer leaves out, the
		// same as a 0; leaving them out spares it decoding and adding up
		// hundreds of zeros per cycle (with binpack, every empty node).
		if score > 0 {
			out = append(out, extenderv1.HostPriority{Host: fits[i], Score: score})
		}
	}
	return &out
}

// rate fits the pod on each node and rates those it fits, in one pass of
// lib/placement's Scorer (the same fit as placement.Filter, plus the
// node's load), so that prioritize need not fit again.
func (h *Handler) rate(req *request.Pod, nodes []string) (fits []string, failed map[string]string, ratings map[string]float64) {
	pol := placement.DefaultPolicies(h.Settings())
	pol.Mix, pol.Host = h.Mix, h.Host
	s := placement.NewScorer(req, pol)
	handles := h.Ledger.Lookup(nodes, make([]*ledger.Node, 0, len(nodes)))
	fits = make([]string, 0, len(nodes))
	ratings = make(map[string]float64, len(nodes))
	for i, n := range nodes {
		v, reason := s.Score(handles[i])
		if reason != "" {
			if failed == nil {
				failed = map[string]string{}
			}
			failed[n] = reason
			continue
		}
		fits = append(fits, n)
		ratings[n] = v
	}
	return fits, failed, ratings
}

// ratingCache hands the ratings of a pod's filter to its prioritize.
// kube-scheduler calls prioritize right after filter in the same cycle
// (and not at all when one node fits), so entries are taken once and the
// cache is simply emptied when it grows past a bound.
type ratingCache struct {
	mu sync.Mutex
	m  map[types.UID]map[string]float64
}

const maxRatings = 4096

func (c *ratingCache) put(uid types.UID, r map[string]float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxRatings {
		c.m = map[types.UID]map[string]float64{}
	}
	c.m[uid] = r
}

func (c *ratingCache) take(uid types.UID) (map[string]float64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.m[uid]
	delete(c.m, uid)
	return r, ok
}

// Bind binds the pod to the node; an error goes back to kube-scheduler,
// which retries the pod.
func (h *Handler) Bind(ctx context.Context, args *extenderv1.ExtenderBindingArgs) *extenderv1.ExtenderBindingResult {
	if !h.Ready() {
		return &extenderv1.ExtenderBindingResult{Error: errNotReady.Error()}
	}
	result, err := h.Binder.Bind(ctx, args)
	h.Metrics.Binds.WithLabelValues(result).Inc()
	if err != nil {
		h.Log.Info("bind failed", zap.String("pod", args.PodNamespace+"/"+args.PodName), zap.String("node", args.Node),
			zap.String("result", result), zap.Error(err))
		return &extenderv1.ExtenderBindingResult{Error: err.Error()}
	}
	return &extenderv1.ExtenderBindingResult{}
}

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}
