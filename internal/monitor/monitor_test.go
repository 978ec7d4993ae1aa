package monitor_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/crypto/bcrypt"

	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/consumer"
	"github.com/invmon/invmon/internal/kafkatest"
	"github.com/invmon/invmon/internal/monitor"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/sim"
)

// newMonitor builds a monitor on an in-process Kafka cluster with the
// example rules, logging to an observer.
func newMonitor(t *testing.T, edit func(*config.Config)) (*monitor.Monitor, *observer.ObservedLogs) {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, sim.Topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	rs, err := rules.LoadFiles("../../rules/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	cfg.Kafka.Brokers = cluster.ListenAddrs()
	cfg.StateDir = t.TempDir()
	edit(&cfg)
	core, logs := observer.New(zap.InfoLevel)
	m, err := monitor.New(context.Background(), monitor.Options{Config: cfg, Rules: rs, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m, logs
}

func unauthenticatedWarnings(logs *observer.ObservedLogs) int {
	return logs.FilterMessageSnippet("without authentication on a non-loopback address").Len()
}

func TestWarnsWhenServingWithoutAuthBeyondLoopback(t *testing.T) {
	_, logs := newMonitor(t, func(c *config.Config) { c.HTTP.Listen = ":0" })
	if n := unauthenticatedWarnings(logs); n != 1 {
		t.Errorf("listening on every interface without auth: %d warnings, want 1", n)
	}
	_, logs = newMonitor(t, func(c *config.Config) { c.HTTP.Listen = "127.0.0.1:0" })
	if n := unauthenticatedWarnings(logs); n != 0 {
		t.Errorf("listening on loopback: %d warnings, want 0", n)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	web := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(web, []byte("basic_auth_users:\n  ops: "+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, logs = newMonitor(t, func(c *config.Config) { c.HTTP.Listen = ":0"; c.HTTP.WebConfigFile = web })
	if n := unauthenticatedWarnings(logs); n != 0 {
		t.Errorf("listening on every interface with basic auth: %d warnings, want 0", n)
	}
}

// TestEveryRouteBehindTheWebConfig runs the monitor with TLS and basic auth
// and checks that the API, /metrics and any other path need credentials,
// while the health checks stay open when open_health_checks says so.
func TestEveryRouteBehindTheWebConfig(t *testing.T) {
	ca := kafkatest.NewCA(t, "monitor-ca")
	cert := ca.Server(t, "monitor")
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	web := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(web, fmt.Appendf(nil, "tls_server_config: {cert_file: %s, key_file: %s}\nbasic_auth_users:\n  ops: %s\n",
		cert.CertFile, cert.KeyFile, hash), 0o600); err != nil {
		t.Fatal(err)
	}
	m, _ := newMonitor(t, func(c *config.Config) {
		c.HTTP.Listen = "127.0.0.1:0"
		c.HTTP.WebConfigFile = web
		c.HTTP.OpenHealthChecks = true
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	get := func(path string, auth bool) int {
		req, _ := http.NewRequest(http.MethodGet, "https://"+m.HTTPAddr()+path, nil)
		if auth {
			req.SetBasicAuth("ops", "pw")
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, path := range []string{"/api/v1/violations", "/api/v1/rules", "/metrics", "/", "/anything"} {
		if got := get(path, false); got != http.StatusUnauthorized {
			t.Errorf("GET %s without credentials: %d, want 401", path, got)
		}
	}
	for _, path := range []string{"/api/v1/violations", "/api/v1/rules", "/metrics"} {
		if got := get(path, true); got != http.StatusOK {
			t.Errorf("GET %s with credentials: %d, want 200", path, got)
		}
	}
	if got := get("/healthz", false); got != http.StatusOK {
		t.Errorf("GET /healthz without credentials (open_health_checks): %d, want 200", got)
	}
	if got := get("/readyz", false); got == http.StatusUnauthorized {
		t.Errorf("GET /readyz without credentials (open_health_checks): 401")
	}
}

// TestBrokenSecuritySettingsFailBeforeKafka: a web configuration with a
// plain password, or a missing HMAC key, stops the start with the file's
// name before the monitor tries the (here unreachable) brokers.
func TestBrokenSecuritySettingsFailBeforeKafka(t *testing.T) {
	web := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(web, []byte("basic_auth_users:\n  ops: not-a-bcrypt-hash\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rs, err := rules.LoadFiles("../../rules/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*config.Config){
		web:            func(c *config.Config) { c.HTTP.WebConfigFile = web },
		"/nonexistent": func(c *config.Config) { c.Privacy.Identifiers, c.Privacy.HMACKeyFile = "hmac", "/nonexistent/hmac.key" },
	} {
		cfg := config.Defaults()
		cfg.Kafka.Brokers = []string{"127.0.0.1:1"}
		cfg.StateDir = t.TempDir()
		edit(&cfg)
		start := time.Now()
		_, err := monitor.New(context.Background(), monitor.Options{Config: cfg, Rules: rs})
		if err == nil || !strings.Contains(err.Error(), name) || strings.Contains(err.Error(), "not-a-bcrypt-hash") {
			t.Errorf("New: %v, want an error naming %s", err, name)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %s", d)
		}
	}
}

// The configuration's default batch bound is the consumer's: the README
// documents one figure, and the benchmarks measure it.
func TestConfiguredBatchBoundDefaultsToTheConsumers(t *testing.T) {
	if got, want := config.Defaults().Kafka.MaxPollRecords, consumer.DefaultMaxPollRecords; got != want {
		t.Fatalf("config default kafka.max_poll_records %d, consumer default %d", got, want)
	}
}

// runMonitor makes a monitor of opts and runs it until the test ends, then
// checks that it stopped cleanly and closes it.
func runMonitor(t *testing.T, opts monitor.Options) *monitor.Monitor {
	t.Helper()
	m, err := monitor.New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		m.Close()
	})
	return m
}
