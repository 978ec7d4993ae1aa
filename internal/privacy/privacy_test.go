package privacy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/invmon/invmon/internal/privacy"
	"github.com/invmon/invmon/internal/violation"
)

func keyFile(t *testing.T, key string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hmac.key")
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

var v = violation.Violation{
	ID: "abc", Rule: "r", Key: "pay-42", Customer: "acct-7", TriggerEventID: "ev-9", Impact: 1234.5,
	Source: violation.Source{Topic: "payments", Partition: 1, Offset: 99},
}

func TestHMACMode(t *testing.T) {
	const key = "0123456789abcdef0123456789abcdef"
	m, err := privacy.New(privacy.Config{Identifiers: privacy.HMAC, HMACKeyFile: keyFile(t, key), ImpactBands: []float64{100, 1000, 10000}})
	if err != nil {
		t.Fatal(err)
	}
	got := m.Violation(v)
	for _, field := range []string{got.Key, got.Customer, got.TriggerEventID} {
		if !strings.HasPrefix(field, privacy.TokenPrefix) || len(field) != len(privacy.TokenPrefix)+32 {
			t.Errorf("field %q is not a token", field)
		}
	}
	if got.Key != privacy.Token([]byte(key), "pay-42") || got.Customer != privacy.Token([]byte(key), "acct-7") {
		t.Errorf("tokens differ from Token with the same key")
	}
	if got.Key == privacy.Token([]byte(key+"x"), "pay-42") {
		t.Errorf("the token does not depend on the key")
	}
	if got.Impact != 1000 || got.ImpactBand != "1000-10000" {
		t.Errorf("impact %v band %q, want 1000 and 1000-10000", got.Impact, got.ImpactBand)
	}
	if got.ID != v.ID || got.Source != v.Source || got.Rule != v.Rule {
		t.Errorf("id, rule or source changed: %+v", got)
	}
	if !m.Matches("acct-7", "acct-7") || !m.Matches("acct-7", got.Customer) || m.Matches("acct-8", got.Customer) {
		t.Errorf("Matches does not find by plain id and token only")
	}
	if m.ID("") != "" {
		t.Errorf("an empty id became %q", m.ID(""))
	}
}

func TestRedactMode(t *testing.T) {
	m, err := privacy.New(privacy.Config{Identifiers: privacy.Redact})
	if err != nil {
		t.Fatal(err)
	}
	got := m.Violation(v)
	if got.Key != privacy.Redacted || got.Customer != privacy.Redacted || got.TriggerEventID != privacy.Redacted {
		t.Errorf("got %+v", got)
	}
	if got.Impact != v.Impact || got.ImpactBand != "" {
		t.Errorf("impact changed without bands: %v %q", got.Impact, got.ImpactBand)
	}
	if !m.Matches("acct-7", "acct-7") || m.Matches("acct-7", privacy.Redacted) {
		t.Errorf("redact mode: plain lookup must match, the word redacted must not")
	}
}

func TestPlainByDefault(t *testing.T) {
	m, err := privacy.New(privacy.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Active() || m.Violation(v) != v {
		t.Errorf("the default changes violations")
	}
	var nilM *privacy.Minimizer
	if nilM.Violation(v) != v || nilM.ID("x") != "x" {
		t.Errorf("a nil Minimizer changes violations")
	}
}

func TestBands(t *testing.T) {
	m, _ := privacy.New(privacy.Config{ImpactBands: []float64{100, 1000}})
	for _, tc := range []struct {
		v     float64
		label string
		lower float64
	}{{5, "<100", 0}, {100, "100-1000", 100}, {999.99, "100-1000", 100}, {1000, ">=1000", 1000}, {1e9, ">=1000", 1000}} {
		if label, lower := m.Band(tc.v); label != tc.label || lower != tc.lower {
			t.Errorf("Band(%v) = %q %v, want %q %v", tc.v, label, lower, tc.label, tc.lower)
		}
	}
}

func TestBadConfig(t *testing.T) {
	short := keyFile(t, "short")
	for name, cfg := range map[string]privacy.Config{
		"hmac without key": {Identifiers: privacy.HMAC},
		"short key":        {Identifiers: privacy.HMAC, HMACKeyFile: short},
		"missing key file": {Identifiers: privacy.HMAC, HMACKeyFile: "/nonexistent/key"},
		"unknown mode":     {Identifiers: "hash"},
		"key without hmac": {HMACKeyFile: short},
		"unsorted bands":   {ImpactBands: []float64{1000, 100}},
		"duplicate bands":  {ImpactBands: []float64{100, 100}},
	} {
		_, err := privacy.New(cfg)
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), "short\n") || strings.Contains(err.Error(), `"short"`) {
			t.Errorf("%s: error shows the key: %v", name, err)
		}
	}
}
