package admission

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	admissionv1 "k8s.io/api/admission/v1"
)

// maxBody is above the API server's own limit on a request object (3 MiB),
// so a legitimate review is never cut.
const maxBody = 4 << 20

// Metrics counts and times reviews.
type Metrics struct {
	reviews  *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewMetrics registers the webhook's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		reviews: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vgpu_webhook_reviews_total",
			Help: "Admission reviews by webhook (mutate, validate) and outcome (ignored, allowed, patched, denied, error).",
		}, []string{"webhook", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vgpu_webhook_review_duration_seconds",
			Help:    "Time to answer an admission review, by webhook.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"webhook"}),
	}
	reg.MustRegister(m.reviews, m.duration)
	return m
}

// Handler serves AdmissionReview v1 for the mutating (mutate=true) or the
// validating webhook.
func Handler(r *Reviewer, mutate bool, m *Metrics, log *zap.Logger) http.Handler {
	webhook := "validate"
	if mutate {
		webhook = "mutate"
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		start := time.Now()
		if req.Method != http.MethodPost {
			http.Error(w, "admission reviews are POSTed", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(io.LimitReader(req.Body, maxBody+1))
		if err != nil || len(body) > maxBody {
			m.reviews.WithLabelValues(webhook, string(Errored)).Inc()
			http.Error(w, fmt.Sprintf("reading the review: body unreadable or over %d bytes", maxBody), http.StatusBadRequest)
			return
		}
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
			m.reviews.WithLabelValues(webhook, string(Errored)).Inc()
			http.Error(w, "the body is not an admission.k8s.io/v1 AdmissionReview with a request", http.StatusBadRequest)
			return
		}
		resp, outcome := r.Review(review.Request, mutate)
		m.reviews.WithLabelValues(webhook, string(outcome)).Inc()
		switch outcome {
		case Denied, Errored:
			log.Info("pod denied", zap.String("webhook", webhook), zap.String("namespace", review.Request.Namespace),
				zap.String("name", review.Request.Name), zap.String("reason", resp.Result.Message))
		case Patched:
			log.Debug("pod patched", zap.String("namespace", review.Request.Namespace), zap.ByteString("patch", resp.Patch))
		}
		out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp}
		if out.APIVersion == "" {
			out.APIVersion, out.Kind = "admission.k8s.io/v1", "AdmissionReview"
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(&out); err != nil {
			log.Warn("writing admission response", zap.Error(err))
		}
		m.duration.WithLabelValues(webhook).Observe(time.Since(start).Seconds())
	})
}
