package kafkatest

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// WebhookPayload is the body Alertmanager's webhook notifier POSTs (version
// "4"). It is defined here rather than imported so that the test harness does
// not pull in Alertmanager's module and its dependencies.
type WebhookPayload struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"` // "firing" or "resolved"
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []WebhookAlert    `json:"alerts"`
}

// WebhookAlert is one alert of a WebhookPayload.
type WebhookAlert struct {
	Status       string            `json:"status"` // "firing" or "resolved"
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`

	// ReceivedAt is when the receiver got the notification (not part of the
	// payload): outage and resend tests reason about arrival times.
	ReceivedAt time.Time `json:"-"`
}

// String renders the alert compactly for failure messages.
func (a WebhookAlert) String() string {
	keys := slices.Sorted(maps.Keys(a.Labels))
	var b strings.Builder
	b.WriteString(a.Status)
	b.WriteString("{")
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%q", k, a.Labels[k])
	}
	fmt.Fprintf(&b, "} startsAt=%s endsAt=%s", a.StartsAt.Format(time.RFC3339), a.EndsAt.Format(time.RFC3339))
	return b.String()
}

// WebhookReceiver is an HTTP server, on loopback, that records every
// notification Alertmanager sends to it.
type WebhookReceiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	payloads []WebhookPayload
	alerts   []WebhookAlert
	errs     []string      // bodies that did not decode, reported by WaitFor
	changed  chan struct{} // closed and replaced on every notification
}

// NewWebhookReceiver starts a receiver, closed when the test ends. Give its
// URL to StartAlertmanager.
func NewWebhookReceiver(t testing.TB) *WebhookReceiver {
	t.Helper()
	r := &WebhookReceiver{changed: make(chan struct{})}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *WebhookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	var p WebhookPayload
	err := json.NewDecoder(req.Body).Decode(&p)
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		// Recorded rather than t.Error'd: the handler may run after the test.
		r.errs = append(r.errs, fmt.Sprintf("%s %s: %v", req.Method, req.URL.Path, err))
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for i := range p.Alerts {
		p.Alerts[i].ReceivedAt = now
	}
	r.payloads = append(r.payloads, p)
	r.alerts = append(r.alerts, p.Alerts...)
	close(r.changed)
	r.changed = make(chan struct{})
	w.WriteHeader(http.StatusOK)
}

// URL returns the address to configure as the webhook.
func (r *WebhookReceiver) URL() string { return r.srv.URL + "/webhook" }

// Alerts returns a copy of every alert received so far, in arrival order; an
// alert notified twice (firing, then resolved) appears twice.
func (r *WebhookReceiver) Alerts() []WebhookAlert {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]WebhookAlert, len(r.alerts))
	for i, a := range r.alerts {
		a.Labels = maps.Clone(a.Labels)
		a.Annotations = maps.Clone(a.Annotations)
		out[i] = a
	}
	return out
}

// Payloads returns a copy of every notification received so far, in order.
func (r *WebhookReceiver) Payloads() []WebhookPayload {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.payloads)
}

// WaitFor returns the first alert received, before or during the call, that
// match accepts. If none arrives within timeout the test fails with every
// alert that did arrive.
func (r *WebhookReceiver) WaitFor(t testing.TB, timeout time.Duration, match func(WebhookAlert) bool) WebhookAlert {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for seen := 0; ; {
		r.mu.Lock()
		fresh := slices.Clone(r.alerts[seen:])
		seen = len(r.alerts)
		changed := r.changed
		r.mu.Unlock()
		for _, a := range fresh {
			if match(a) {
				return a
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("kafkatest: no matching alert within %s; received:\n%s", timeout, r.describe())
			return WebhookAlert{}
		}
	}
}

func (r *WebhookReceiver) describe() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	if len(r.alerts) == 0 {
		b.WriteString("  (nothing)\n")
	}
	for _, a := range r.alerts {
		fmt.Fprintf(&b, "  %s (at %s)\n", a, a.ReceivedAt.Format("15:04:05.000"))
	}
	for _, e := range r.errs {
		fmt.Fprintf(&b, "  undecodable request: %s\n", e)
	}
	return b.String()
}
