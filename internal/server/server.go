// Package server serves the monitor's HTTP interface: metrics, health
// checks, the violations and rules API, and the web console at "/".
package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/invmon/invmon/internal/console"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/privacy"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/slo"
	"github.com/invmon/invmon/internal/violation"
)

// Sources are what the server reads; each is called per request.
type Sources struct {
	Store *joinstate.Store
	Rules func() *rules.RuleSet
	Ready func() bool
	// NotReady, when set, explains a false Ready in /readyz's answer; ""
	// keeps the default reason. Optional.
	NotReady func() string
	Gatherer prometheus.Gatherer
	// Blind returns the streams reported blind now (for the console).
	Blind func() []string
	// Brokers are the seed brokers (the console's kcat command lines).
	Brokers []string
	// Minimize is applied to every violation served (privacy settings):
	// customer ids and keys redacted or hashed, impact banded. Lookups by
	// customer= and key= take the plain id (or its HMAC token). Nil serves
	// violations as stored.
	Minimize *privacy.Minimizer
	// SLO, when set, returns the error budget of every rule with an
	// objective, by rule name.
	SLO func(ctx context.Context) map[string]slo.Status
}

// New returns the monitor's HTTP handler.
func New(src Sources) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(src.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !src.Ready() {
			reason := "not ready: joining the group or restoring state"
			if src.NotReady != nil {
				if r := src.NotReady(); r != "" {
					reason = r
				}
			}
			http.Error(w, reason, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /api/v1/violations", src.violations)
	mux.HandleFunc("GET /api/v1/violations/{id}", src.violation)
	mux.HandleFunc("GET /api/v1/rules", src.rules)
	// The console for people, on the same mux: whatever wraps this handler
	// (TLS, authentication) covers both.
	console.Register(mux, console.Sources{Store: src.Store, Rules: src.Rules, Gatherer: src.Gatherer, Blind: src.Blind, Brokers: src.Brokers,
		Minimize: src.Minimize, SLO: src.SLO})
	return mux
}

// ViolationList is the response of GET /api/v1/violations.
type ViolationList struct {
	Violations []violation.Violation `json:"violations"`
	// Total counts every match; Violations holds at most limit of them.
	Total int `json:"total"`
	// NextOffset, when set, fetches the next page.
	NextOffset *int `json:"next_offset,omitempty"`
}

func (s Sources) violations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := joinstate.Filter{Rule: q.Get("rule"), Customer: q.Get("customer"), Key: q.Get("key"), IDMatch: s.Minimize.Matches}
	switch st := q.Get("state"); st {
	case "", "all":
	case "open", "resolved":
		f.State = violation.State(st)
	default:
		writeError(w, http.StatusBadRequest, "state must be open, resolved or all")
		return
	}
	var err error
	if f.Since, err = parseTime(q.Get("since")); err != nil {
		writeError(w, http.StatusBadRequest, "since: "+err.Error())
		return
	}
	if f.Until, err = parseTime(q.Get("until")); err != nil {
		writeError(w, http.StatusBadRequest, "until: "+err.Error())
		return
	}
	limit, offset := 1000, 0
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit <= 0 {
			writeError(w, http.StatusBadRequest, "limit must be a positive integer")
			return
		}
	}
	if v := q.Get("offset"); v != "" {
		if offset, err = strconv.Atoi(v); err != nil || offset < 0 {
			writeError(w, http.StatusBadRequest, "offset must be a non-negative integer")
			return
		}
	}
	all, err := s.Store.Violations(f)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	resp := ViolationList{Total: len(all), Violations: []violation.Violation{}}
	if offset < len(all) {
		end := min(len(all), offset+limit)
		resp.Violations = s.Minimize.Violations(all[offset:end])
		if end < len(all) {
			resp.NextOffset = &end
		}
	}
	writeJSON(w, resp)
}

func (s Sources) violation(w http.ResponseWriter, r *http.Request) {
	all, err := s.Store.Violations(joinstate.Filter{})
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	for _, v := range all {
		if v.ID == r.PathValue("id") {
			writeJSON(w, s.Minimize.Violation(v))
			return
		}
	}
	writeError(w, http.StatusNotFound, "no violation with that id")
}

// RuleInfo describes a loaded rule in GET /api/v1/rules.
type RuleInfo struct {
	Name        string            `json:"name"`
	Kind        string            `json:"kind"`
	Version     string            `json:"version"`
	Description string            `json:"description,omitempty"`
	Streams     []string          `json:"streams"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	File        string            `json:"file"`
	// SLO is the rule's objective and error budget; absent for a rule
	// without an objective.
	SLO *slo.Status `json:"slo,omitempty"`
}

func (s Sources) rules(w http.ResponseWriter, r *http.Request) {
	rs := s.Rules()
	out := struct {
		Version string     `json:"version"`
		Rules   []RuleInfo `json:"rules"`
	}{Version: rs.Version, Rules: []RuleInfo{}}
	var budgets map[string]slo.Status
	if s.SLO != nil {
		budgets = s.SLO(r.Context())
	}
	for _, r := range rs.Rules {
		info := RuleInfo{Name: r.Name, Kind: r.Kind, Version: r.Version, Description: r.Description,
			Labels: r.Labels, Annotations: r.Annotations, File: r.Pos.String()}
		for _, st := range r.Streams() {
			info.Streams = append(info.Streams, st.Name)
		}
		if b, ok := budgets[r.Name]; ok {
			info.SLO = &b
		}
		out.Rules = append(out.Rules, info)
	}
	writeJSON(w, out)
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
