package alert

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/quantity"
	"github.com/invmon/invmon/internal/violation"
)

// postedAlert is Alertmanager's PostableAlert as its OpenAPI spec names the
// fields, decoded independently of Alert so a wrong JSON tag would show.
type postedAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
}

// post is one request an Alertmanager stand-in received.
type post struct {
	Header http.Header
	Alerts []postedAlert
}

// recorder is an httptest server standing in for Alertmanager's
// POST /api/v2/alerts: it decodes and records what was posted and answers
// with status(n) for the n-th request (0-based; 200 when status is nil).
type recorder struct {
	t    *testing.T
	addr string

	mu     sync.Mutex
	srv    *httptest.Server
	posts  []post
	n      int
	status func(n int) (int, string)
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	r := &recorder{t: t}
	r.start("127.0.0.1:0")
	t.Cleanup(r.stop)
	return r
}

func (r *recorder) start(addr string) {
	r.t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		r.t.Fatalf("listen %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(r.serve))
	_ = srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	r.mu.Lock()
	r.srv = srv
	r.addr = l.Addr().String()
	r.mu.Unlock()
}

// stop closes the server; the address then refuses connections.
func (r *recorder) stop() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// restart listens again on the same address.
func (r *recorder) restart() {
	r.t.Helper()
	r.start(r.addr)
}

func (r *recorder) URL() string { return "http://" + r.addr }

func (r *recorder) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/api/v2/alerts" {
		http.Error(w, "unexpected "+req.Method+" "+req.URL.Path, http.StatusNotFound)
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/json" {
		http.Error(w, "content type "+ct, http.StatusUnsupportedMediaType)
		return
	}
	var alerts []postedAlert
	dec := json.NewDecoder(req.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&alerts); err != nil {
		http.Error(w, "decode: "+err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	n := r.n
	r.n++
	status := r.status
	r.posts = append(r.posts, post{Header: req.Header.Clone(), Alerts: alerts})
	r.mu.Unlock()
	code, body := http.StatusOK, ""
	if status != nil {
		code, body = status(n)
	}
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

func (r *recorder) setStatus(fn func(n int) (int, string)) {
	r.mu.Lock()
	r.status = fn
	r.mu.Unlock()
}

// requests is the number of requests received so far.
func (r *recorder) requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// take returns the posts received since the last take.
func (r *recorder) take() []post {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.posts
	r.posts = nil
	return p
}

// takeOne expects exactly one post since the last take and returns its alerts.
func (r *recorder) takeOne(t *testing.T) []postedAlert {
	t.Helper()
	ps := r.take()
	if len(ps) != 1 {
		t.Fatalf("want 1 post, got %d: %+v", len(ps), ps)
	}
	return ps[0].Alerts
}

func (r *recorder) expectNone(t *testing.T) {
	t.Helper()
	if ps := r.take(); len(ps) != 0 {
		t.Fatalf("want no post, got %d: %+v", len(ps), ps)
	}
}

// stepClock is a manually stepped clock.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

var t0 = time.Date(2025, 3, 14, 3, 0, 0, 0, time.UTC)

func newClock() *stepClock { return &stepClock{t: t0} }

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *stepClock) Step(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// openDB opens the monitor's state store in dir, in memory when dir is "".
func openDB(t *testing.T, dir string) *joinstate.Store {
	t.Helper()
	db, err := joinstate.Open(dir, joinstate.Options{InMemory: dir == ""}, nil)
	if err != nil {
		t.Fatalf("open state: %v", err)
	}
	return db
}

func memDB(t *testing.T) *joinstate.Store {
	t.Helper()
	db := openDB(t, "")
	t.Cleanup(func() { _ = db.Close() })
	return db
}

const externalURL = "http://invmon.test:8080"

// testConfig has fast retries and the production intervals: the clock is
// stepped, so a minute costs nothing.
func testConfig(clk *stepClock, urls ...string) Config {
	return Config{
		URLs:        urls,
		ExternalURL: externalURL,
		ClientConfig: ClientConfig{
			Timeout: 5 * time.Second,
			Backoff: BackoffConfig{Initial: time.Millisecond, Max: 5 * time.Millisecond, MaxAttempts: 3},
		},
		Now: clk.Now,
	}
}

// testManager is a Manager that reads its open violations from a group
// view in its test database, as the monitor's does. Its Observe and Seed
// write the view first and then tell the manager what changed, as the
// follower of the group's stream does.
type testManager struct {
	*Manager
	t    *testing.T
	view *joinstate.GroupView
}

func newManager(t *testing.T, cfg Config, db *joinstate.Store, reg prometheus.Registerer) *testManager {
	t.Helper()
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	view := db.GroupView()
	m, err := NewManager(cfg, db.Namespace(joinstate.AlertNamespace), view, reg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("NewManager: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return &testManager{Manager: m, t: t, view: view}
}

// Observe applies vs to the view as changes read from the stream, and
// tells the manager of those that changed it.
func (m *testManager) Observe(vs ...violation.Violation) {
	next, err := m.view.Next()
	if err == nil {
		vs, err = m.view.Apply(next+int64(len(vs)), vs)
	}
	if err != nil {
		m.t.Errorf("group view: %v", err)
		return
	}
	m.Manager.Observe(vs...)
}

// Seed makes the view hold exactly the violations in open, as a view caught
// up with the group's stream, and tells the manager it is caught up.
func (m *testManager) Seed(open []violation.Violation) {
	m.t.Helper()
	if err := m.view.Reset(); err != nil {
		m.t.Fatalf("group view: %v", err)
	}
	if _, err := m.view.Apply(int64(len(open)), open); err != nil {
		m.t.Fatalf("group view: %v", err)
	}
	m.Manager.CaughtUp()
}

const ruleName = "payment_without_ledger"

var paymentRule = RuleSpec{
	Name:       ruleName,
	Labels:     map[string]string{"team": "payments"},
	RunbookURL: "https://runbooks.example/payment-without-ledger",
	Impact:     quantity.UnitOf("USD", true),
}

func openViolation(rule, key, customer string, impact float64) violation.Violation {
	return violation.Violation{
		ID:             violation.ID(rule, "1", key, "ev-"+key),
		Rule:           rule,
		RuleVersion:    "1",
		Key:            key,
		State:          violation.Open,
		Impact:         impact,
		Customer:       customer,
		TriggerEventID: "ev-" + key,
		DetectedAt:     t0,
	}
}

func resolve(v violation.Violation, at time.Time) violation.Violation {
	v.State = violation.Resolved
	v.ResolvedAt = &at
	return v
}

func tick(t *testing.T, m *testManager) {
	t.Helper()
	if err := m.Tick(t.Context()); err != nil {
		t.Fatalf("Tick: %v", err)
	}
}

func mustEqualTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) {
		t.Fatalf("%s = %s, want %s", what, got.Format(time.RFC3339Nano), want.Format(time.RFC3339Nano))
	}
}

// only returns the single alert in alerts.
func only(t *testing.T, alerts []postedAlert) postedAlert {
	t.Helper()
	if len(alerts) != 1 {
		t.Fatalf("want 1 alert, got %d: %+v", len(alerts), alerts)
	}
	return alerts[0]
}

// bySeverity indexes alerts by their severity label.
func bySeverity(t *testing.T, alerts []postedAlert) map[string]postedAlert {
	t.Helper()
	out := make(map[string]postedAlert)
	for _, a := range alerts {
		if _, dup := out[a.Labels["severity"]]; dup {
			t.Fatalf("two alerts with severity %q: %+v", a.Labels["severity"], alerts)
		}
		out[a.Labels["severity"]] = a
	}
	return out
}
