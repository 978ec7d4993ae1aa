// Package server serves the monitor's HTTP interface: metrics, health
// checks, the violations and rules API, and the web console at "/".
package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/invmon/invmon/internal/console"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/slo"
	"github.com/invmon/invmon/internal/violation"
)

// Sources are what the server reads; each is called per request. The data
// sources are the console's (the JSON API and the console read the same
// store, rules and metrics); the health checks are the server's own.
type Sources struct {
	console.Sources
	// Ready reports whether the monitor serves: /readyz answers 200 then.
	Ready func() bool
	// NotReady, when set, explains a false Ready in /readyz's answer; ""
	// keeps the default reason. Optional.
	NotReady func() string
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
	console.Register(mux, src.Sources)
	return mux
}

// ViolationList is the response of GET /api/v1/violations: one page, newest
// detection first.
type ViolationList struct {
	Violations []violation.Violation `json:"violations"`
	// Next, when set, is the cursor of the next page: pass it as ?next=.
	Next string `json:"next,omitempty"`
}

// maxQueryValue bounds every string parameter: names and ids are short.
const maxQueryValue = 512

// violations serves one page of violations. Every parameter is validated:
// a bad one is a 400 that says which and why, never a panic or a scan.
func (s Sources) violations(w http.ResponseWriter, r *http.Request) {
	values, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, "malformed query string: "+err.Error())
		return
	}
	q, err := parseViolationQuery(values)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if s.Minimize.Active() {
		q.IDMatch = s.Minimize.Matches
	}
	page, err := s.Store.ViolationPage(q)
	if errors.Is(err, joinstate.ErrBadCursor) {
		writeError(w, http.StatusBadRequest, "next: not a cursor returned by this API")
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	resp := ViolationList{Violations: s.Minimize.Violations(page.Violations), Next: page.Next}
	if resp.Violations == nil {
		resp.Violations = []violation.Violation{}
	}
	writeJSON(w, resp)
}

// parseViolationQuery reads rule, state, customer, key, since, until, limit
// and next. Unknown parameters are errors, so a typo is not a silent "all".
func parseViolationQuery(v url.Values) (joinstate.Query, error) {
	var q joinstate.Query
	for name, vals := range v {
		switch name {
		case "rule", "state", "customer", "key", "since", "until", "limit", "next":
		case "offset":
			return q, fmt.Errorf("offset is not supported: follow the next cursor of each page")
		default:
			return q, fmt.Errorf("unknown parameter %q (use rule, state, customer, key, since, until, limit, next)", name)
		}
		if len(vals) > 1 {
			return q, fmt.Errorf("%s: given %d times", name, len(vals))
		}
		if len(vals[0]) > maxQueryValue {
			return q, fmt.Errorf("%s: longer than %d bytes", name, maxQueryValue)
		}
	}
	q.Rule, q.Customer, q.Key, q.After = v.Get("rule"), v.Get("customer"), v.Get("key"), v.Get("next")
	switch st := v.Get("state"); st {
	case "", "all":
	case "open", "resolved":
		q.State = violation.State(st)
	default:
		return q, fmt.Errorf("state must be open, resolved or all")
	}
	var err error
	if q.Since, err = parseTime(v.Get("since")); err != nil {
		return q, fmt.Errorf("since: %w", err)
	}
	if q.Until, err = parseTime(v.Get("until")); err != nil {
		return q, fmt.Errorf("until: %w", err)
	}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n <= 0 || n > joinstate.MaxPageSize {
			return q, fmt.Errorf("limit must be an integer from 1 to %d", joinstate.MaxPageSize)
		}
		q.Limit = n
	}
	return q, nil
}

func (s Sources) violation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if len(id) > maxQueryValue {
		writeError(w, http.StatusBadRequest, "id: too long")
		return
	}
	v, err := s.Store.Violation(id)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if v == nil {
		writeError(w, http.StatusNotFound, "no violation with that id")
		return
	}
	writeJSON(w, s.Minimize.Violation(*v))
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
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return t, fmt.Errorf("not an RFC 3339 time")
	}
	if t.Year() < 1970 || t.Year() > 9999 {
		return t, fmt.Errorf("out of range")
	}
	return t, nil
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
