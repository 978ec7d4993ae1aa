package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/console"
	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/statekey"
	"github.com/invmon/invmon/internal/violation"
)

// storeWith writes n violations over 4 partitions, 5 rules and 1000
// customers, a fifth of them resolved, in the engine's key layout.
func storeWith(t *testing.T, n int) (*joinstate.Store, []violation.Violation) {
	t.Helper()
	s, err := joinstate.Open(t.TempDir(), joinstate.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	base := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	all := make([]violation.Violation, 0, n)
	deltas := map[int32]*engine.Delta{}
	flush := func() {
		var pds []joinstate.PartitionDelta
		for p, d := range deltas {
			pds = append(pds, joinstate.PartitionDelta{Partition: p, Delta: d})
		}
		if err := s.Commit(pds...); err != nil {
			t.Fatal(err)
		}
		deltas = map[int32]*engine.Delta{}
	}
	for i := range n {
		v := violation.Violation{
			ID: fmt.Sprintf("v%06d", i), Rule: fmt.Sprintf("rule-%d", i%5), State: violation.Open,
			Key: fmt.Sprintf("pay-%d", i), Customer: fmt.Sprintf("acct-%d", i%1000), Impact: 1,
			// Several violations share a detection time, as in one Advance.
			DetectedAt: base.Add(time.Duration(i/3) * time.Millisecond),
		}
		if i%5 == 0 {
			at := v.DetectedAt.Add(time.Minute)
			v.State, v.ResolvedAt = violation.Resolved, &at
		}
		all = append(all, v)
		p := int32(i % 4)
		d := deltas[p]
		if d == nil {
			d = &engine.Delta{Ops: map[string]engine.Op{}}
			deltas[p] = d
		}
		b, _ := json.Marshal(v)
		d.Ops[statekey.Violation+v.ID] = engine.Op{Value: b}
		for _, k := range statekey.IndexKeys(&v) {
			d.Ops[k] = engine.Op{Value: []byte{}}
		}
		if i%20000 == 19999 {
			flush()
		}
	}
	flush()
	return s, all
}

func TestViolationsAPIPagesIndexedWithoutScanning(t *testing.T) {
	const n = 100_000
	s, all := storeWith(t, n)
	srv := httptest.NewServer(New(Sources{Sources: console.Sources{Store: s}}))
	t.Cleanup(srv.Close)

	// By id: one key per partition, whatever the number stored.
	start := time.Now()
	resp, err := http.Get(srv.URL + "/api/v1/violations/v054321")
	if err != nil {
		t.Fatal(err)
	}
	var one violation.Violation
	_ = json.NewDecoder(resp.Body).Decode(&one)
	resp.Body.Close()
	if resp.StatusCode != 200 || one.ID != "v054321" || one.Key != "pay-54321" {
		t.Fatalf("by id: %s %+v", resp.Status, one)
	}
	t.Logf("GET /api/v1/violations/{id} over %d violations: %v", n, time.Since(start))
	if resp, _ := http.Get(srv.URL + "/api/v1/violations/nope"); resp.StatusCode != 404 {
		t.Fatalf("unknown id: %s", resp.Status)
	}

	// A filtered page reads about the page, not the store.
	start = time.Now()
	page, err := s.ViolationPage(joinstate.Query{Filter: joinstate.Filter{Rule: "rule-3", State: violation.Open}, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Violations) != 100 || page.Next == "" {
		t.Fatalf("filtered page: %d violations, next %q", len(page.Violations), page.Next)
	}
	for _, v := range page.Violations {
		if v.Rule != "rule-3" || v.State != violation.Open {
			t.Fatalf("filtered page holds %s %s", v.Rule, v.State)
		}
	}
	if page.KeysRead > 2*100+8 {
		t.Fatalf("a page of 100 read %d keys", page.KeysRead)
	}
	t.Logf("page of 100 by rule and state over %d violations: %d keys read, %v", n, page.KeysRead, time.Since(start))
	page, err = s.ViolationPage(joinstate.Query{Filter: joinstate.Filter{Customer: "acct-7"}, Limit: 50})
	if err != nil || len(page.Violations) != 50 || page.KeysRead > 2*50+8 {
		t.Fatalf("customer page: %d violations, %d keys, %v", len(page.Violations), page.KeysRead, err)
	}

	// Pagination over HTTP returns every violation exactly once, newest first.
	for _, q := range []url.Values{{}, {"rule": {"rule-2"}}, {"state": {"resolved"}}, {"customer": {"acct-9"}, "state": {"open"}}} {
		got, err := FetchViolations(context.Background(), nil, srv.URL, q)
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		for _, v := range all {
			if (q.Get("rule") == "" || v.Rule == q.Get("rule")) && (q.Get("state") == "" || string(v.State) == q.Get("state")) &&
				(q.Get("customer") == "" || v.Customer == q.Get("customer")) {
				want++
			}
		}
		seen := map[string]bool{}
		for i, v := range got {
			if seen[v.ID] {
				t.Fatalf("%v: %s listed twice", q, v.ID)
			}
			seen[v.ID] = true
			if i > 0 && (got[i-1].DetectedAt.Before(v.DetectedAt) || got[i-1].DetectedAt.Equal(v.DetectedAt) && got[i-1].ID > v.ID) {
				t.Fatalf("%v: not newest first at %d", q, i)
			}
		}
		if len(got) != want {
			t.Fatalf("%v: listed %d of %d", q, len(got), want)
		}
	}
}

func TestViolationsAPIRejectsBadParameters(t *testing.T) {
	s, _ := storeWith(t, 10)
	srv := httptest.NewServer(New(Sources{Sources: console.Sources{Store: s}}))
	t.Cleanup(srv.Close)
	for _, q := range []string{
		"limit=9223372036854775807&offset=1", "limit=0", "limit=-1", "limit=1001", "limit=x", "offset=5",
		"state=closed", "since=yesterday", "until=99999-01-01T00:00:00Z", "next=%%%", "next=AAAA",
		"rule=a&rule=b", "colour=red",
	} {
		resp, err := http.Get(srv.URL + "/api/v1/violations?" + q)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || body.Error == "" {
			t.Errorf("%s: %s %q, want 400 with a message", q, resp.Status, body.Error)
		}
	}
	resp, err := http.Get(srv.URL + "/api/v1/violations?limit=1000&state=all")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("valid query: %v %v", resp.Status, err)
	}
	resp.Body.Close()
}
