package server

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/invmon/invmon/internal/console"
	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/statekey"
	"github.com/invmon/invmon/internal/violation"
)

// fixture serves a store holding the given violations, committed the way
// the engine records them, with the example captured-payment rule loaded.
func fixture(t *testing.T, ready *bool, vs ...violation.Violation) *httptest.Server {
	t.Helper()
	store, err := joinstate.Open(t.TempDir(), joinstate.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	d := &engine.Delta{Ops: map[string]engine.Op{}, Changed: vs}
	for _, v := range vs {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		d.Ops["v/"+v.ID] = engine.Op{Value: b}
		for _, k := range statekey.IndexKeys(&v) {
			d.Ops[k] = engine.Op{Value: []byte{}}
		}
	}
	if err := store.Commit(joinstate.PartitionDelta{Partition: 0, Delta: d}); err != nil {
		t.Fatal(err)
	}
	rs, err := rules.LoadFiles("../../rules/captured_payment_has_ledger_entry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "invmon_test_total", Help: "A counter the test scrapes."}))
	srv := httptest.NewServer(New(Sources{
		Sources: console.Sources{
			Store:    store,
			Rules:    func() *rules.RuleSet { return rs },
			Gatherer: reg,
			Blind:    func() []string { return nil },
		},
		Ready:    func() bool { return *ready },
		NotReady: func() string { return "restoring partition 3" },
	}))
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func list(t *testing.T, url string) ViolationList {
	t.Helper()
	code, body := get(t, url)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, code, body)
	}
	var l ViolationList
	if err := json.Unmarshal([]byte(body), &l); err != nil {
		t.Fatalf("GET %s: %v in %s", url, err, body)
	}
	return l
}

func ids(l ViolationList) string {
	var out []string
	for _, v := range l.Violations {
		out = append(out, v.ID)
	}
	return strings.Join(out, ",")
}

func at(min int) time.Time { return time.Date(2026, 11, 20, 9, min, 0, 0, time.UTC) }

func sample() []violation.Violation {
	resolved := at(30)
	return []violation.Violation{
		{ID: "a", Rule: "captured_payment_has_ledger_entry", Key: "pay-1", Customer: "acct-1", State: violation.Open, DetectedAt: at(1)},
		{ID: "b", Rule: "captured_payment_has_ledger_entry", Key: "pay-2", Customer: "acct-2", State: violation.Resolved, DetectedAt: at(2), ResolvedAt: &resolved},
		{ID: "c", Rule: "other_rule", Key: "pay-3", Customer: "acct-1", State: violation.Open, DetectedAt: at(3)},
	}
}

func TestViolationsFilterNewestFirstAndPaginate(t *testing.T) {
	ready := true
	srv := fixture(t, &ready, sample()...)
	for _, c := range []struct{ query, want string }{
		{"", "c,b,a"},
		{"?state=open", "c,a"},
		{"?state=resolved", "b"},
		{"?state=all&rule=captured_payment_has_ledger_entry", "b,a"},
		{"?customer=acct-1", "c,a"},
		{"?key=pay-2", "b"},
		{"?since=" + at(2).Format(time.RFC3339), "c,b"},
		{"?until=" + at(2).Format(time.RFC3339), "a"}, // until is exclusive
	} {
		if got := ids(list(t, srv.URL+"/api/v1/violations"+c.query)); got != c.want {
			t.Errorf("violations%s: %s, want %s", c.query, got, c.want)
		}
	}
	page := list(t, srv.URL+"/api/v1/violations?limit=2")
	if ids(page) != "c,b" || page.Next == "" {
		t.Fatalf("first page %s next %q", ids(page), page.Next)
	}
	page = list(t, srv.URL+"/api/v1/violations?limit=2&next="+page.Next)
	if ids(page) != "a" || page.Next != "" {
		t.Fatalf("second page %s next %q", ids(page), page.Next)
	}
	// Nothing matches: an empty list, not null.
	if code, body := get(t, srv.URL+"/api/v1/violations?rule=none"); code != 200 || !strings.Contains(body, `"violations": []`) {
		t.Fatalf("no match: %d %s", code, body)
	}
}

func TestBadQueriesAreRejectedWithTheirReason(t *testing.T) {
	ready := true
	srv := fixture(t, &ready, sample()...)
	for query, want := range map[string]string{
		"state=closed":  "state must be open, resolved or all",
		"limit=0":       "limit must be an integer from 1 to 1000",
		"offset=-1":     "offset is not supported: follow the next cursor",
		"since=monday":  "since: ",
		"until=2026-13": "until: ",
	} {
		code, body := get(t, srv.URL+"/api/v1/violations?"+query)
		if code != http.StatusBadRequest || !strings.Contains(body, want) {
			t.Errorf("?%s: %d %s, want 400 with %q", query, code, body, want)
		}
	}
}

func TestOneViolationByID(t *testing.T) {
	ready := true
	srv := fixture(t, &ready, sample()...)
	code, body := get(t, srv.URL+"/api/v1/violations/b")
	var v violation.Violation
	if code != 200 || json.Unmarshal([]byte(body), &v) != nil || v.ID != "b" || v.State != violation.Resolved || v.ResolvedAt == nil {
		t.Fatalf("violation b: %d %s", code, body)
	}
	if code, body := get(t, srv.URL+"/api/v1/violations/nope"); code != http.StatusNotFound || !strings.Contains(body, "no violation with that id") {
		t.Fatalf("unknown id: %d %s", code, body)
	}
}

func TestHealthReadinessAndMetrics(t *testing.T) {
	ready := false
	srv := fixture(t, &ready)
	if code, body := get(t, srv.URL+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("healthz: %d %q", code, body)
	}
	if code, body := get(t, srv.URL+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "restoring partition 3") {
		t.Errorf("readyz while not ready: %d %q", code, body)
	}
	ready = true
	if code, body := get(t, srv.URL+"/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("readyz when ready: %d %q", code, body)
	}
	if code, body := get(t, srv.URL+"/metrics"); code != 200 || !strings.Contains(body, "invmon_test_total 0") {
		t.Errorf("metrics: %d %s", code, body)
	}
	if code, _ := get(t, srv.URL+"/api/v1/nothing-here"); code != http.StatusNotFound {
		t.Errorf("unknown path: %d", code)
	}
}

func TestRulesDescribeTheLoadedRuleSet(t *testing.T) {
	ready := true
	srv := fixture(t, &ready)
	code, body := get(t, srv.URL+"/api/v1/rules")
	var out struct {
		Version string     `json:"version"`
		Rules   []RuleInfo `json:"rules"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &out) != nil {
		t.Fatalf("rules: %d %s", code, body)
	}
	if out.Version == "" || len(out.Rules) != 1 {
		t.Fatalf("rules: %s", body)
	}
	r := out.Rules[0]
	if r.Name != "captured_payment_has_ledger_entry" || r.Kind != "absence" || strings.Join(r.Streams, ",") != "payments,ledger" ||
		!strings.Contains(r.File, "captured_payment_has_ledger_entry.yaml:") || r.Labels["team"] != "payments" {
		t.Fatalf("rule info %+v", r)
	}
}
