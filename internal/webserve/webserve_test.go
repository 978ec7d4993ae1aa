package webserve_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/invmon/invmon/internal/console"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/kafkatest"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/server"
	"github.com/invmon/invmon/internal/webserve"
)

// serve starts the monitor's real API handler behind a webserve.Server with
// the given web configuration and returns its base URL.
func serve(t *testing.T, webConfig string, open ...string) (string, *webserve.Server) {
	t.Helper()
	store, err := joinstate.Open("", joinstate.Options{InMemory: true}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "invmon_test_total", Help: "test"}))
	h := server.New(server.Sources{
		Sources: console.Sources{Store: store, Rules: func() *rules.RuleSet { return &rules.RuleSet{} }, Gatherer: reg},
		Ready:   func() bool { return true },
	})
	path := ""
	if webConfig != "" {
		path = filepath.Join(t.TempDir(), "web.yml")
		if err := os.WriteFile(path, []byte(webConfig), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := webserve.New(h, webserve.Options{WebConfigFile: path, OpenPaths: open})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	scheme := "http"
	if srv.Security().TLS {
		scheme = "https"
	}
	return scheme + "://" + l.Addr().String(), srv
}

func hash(t *testing.T, pass string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

type client struct {
	hc         *http.Client
	user, pass string
}

func newClient(t *testing.T, roots *x509.CertPool, certs ...tls.Certificate) *client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{hc: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

func (c *client) withAuth(user, pass string) *client {
	return &client{hc: c.hc, user: user, pass: pass}
}

// get returns the status of GET url, or the transport error.
func (c *client) get(url string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func TestBasicAuthOverHTTPS(t *testing.T) {
	ca := kafkatest.NewCA(t, "web-ca")
	cert := ca.Server(t, "monitor")
	base, srv := serve(t, fmt.Sprintf(`
tls_server_config:
  cert_file: %s
  key_file: %s
basic_auth_users:
  ops: %s
`, cert.CertFile, cert.KeyFile, hash(t, "correct horse")), "/healthz")
	if sec := srv.Security(); !sec.TLS || !sec.BasicAuth || sec.ClientCertificates || !sec.Authenticated() {
		t.Errorf("Security() = %+v", sec)
	}
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("base %s", base)
	}
	anon := newClient(t, ca.Pool())
	for _, tc := range []struct {
		name string
		c    *client
		path string
		want int
	}{
		{"violations without credentials", anon, "/api/v1/violations", http.StatusUnauthorized},
		{"violations with a wrong password", anon.withAuth("ops", "wrong"), "/api/v1/violations", http.StatusUnauthorized},
		{"violations for an unknown user", anon.withAuth("root", "correct horse"), "/api/v1/violations", http.StatusUnauthorized},
		{"violations with credentials", anon.withAuth("ops", "correct horse"), "/api/v1/violations", http.StatusOK},
		{"one violation without credentials", anon, "/api/v1/violations/abc", http.StatusUnauthorized},
		{"rules without credentials", anon, "/api/v1/rules", http.StatusUnauthorized},
		{"metrics without credentials", anon, "/metrics", http.StatusUnauthorized},
		{"metrics with credentials", anon.withAuth("ops", "correct horse"), "/metrics", http.StatusOK},
		{"an unknown path without credentials", anon, "/console", http.StatusUnauthorized},
		{"readyz is not open", anon, "/readyz", http.StatusUnauthorized},
		{"healthz is open", anon, "/healthz", http.StatusOK},
		{"readyz with credentials", anon.withAuth("ops", "correct horse"), "/readyz", http.StatusOK},
	} {
		got, err := tc.c.get(base + tc.path)
		if err != nil || got != tc.want {
			t.Errorf("%s: GET %s = %d %v, want %d", tc.name, tc.path, got, err, tc.want)
		}
	}
	// Plain HTTP to the TLS port is refused, not served.
	plain := &client{hc: &http.Client{Timeout: 5 * time.Second}}
	if got, err := plain.withAuth("ops", "correct horse").get("http" + strings.TrimPrefix(base, "https") + "/api/v1/violations"); err == nil && got == http.StatusOK {
		t.Errorf("plain http to the TLS listener answered 200")
	}
	// A client that does not trust the monitor's CA fails the handshake.
	if _, err := newClient(t, nil).withAuth("ops", "correct horse").get(base + "/api/v1/violations"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted server certificate: err %v", err)
	}
}

func TestClientCertificateRequired(t *testing.T) {
	ca := kafkatest.NewCA(t, "web-ca")
	cert := ca.Server(t, "monitor")
	base, srv := serve(t, fmt.Sprintf(`
tls_server_config:
  cert_file: %s
  key_file: %s
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: %s
`, cert.CertFile, cert.KeyFile, ca.CertFile))
	if sec := srv.Security(); !sec.TLS || !sec.ClientCertificates || sec.BasicAuth || !sec.Authenticated() {
		t.Errorf("Security() = %+v", sec)
	}
	good := newClient(t, ca.Pool(), ca.Client(t, "prometheus").Cert)
	for _, path := range []string{"/api/v1/violations", "/metrics"} {
		if got, err := good.get(base + path); err != nil || got != http.StatusOK {
			t.Errorf("GET %s with a client certificate = %d %v, want 200", path, got, err)
		}
		if _, err := newClient(t, ca.Pool()).get(base + path); err == nil {
			t.Errorf("GET %s without a client certificate succeeded", path)
		}
		stranger := kafkatest.NewCA(t, "other").Client(t, "stranger")
		if _, err := newClient(t, ca.Pool(), stranger.Cert).get(base + path); err == nil {
			t.Errorf("GET %s with a certificate from another CA succeeded", path)
		}
	}
}

func TestNoWebConfigServesPlainHTTP(t *testing.T) {
	base, srv := serve(t, "")
	if srv.Security().Authenticated() || srv.Security().TLS {
		t.Errorf("Security() = %+v", srv.Security())
	}
	if got, err := (&client{hc: http.DefaultClient}).get(base + "/api/v1/violations"); err != nil || got != http.StatusOK {
		t.Errorf("GET = %d %v", got, err)
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestPasswordChangeNeedsNoRestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "web.yml")
	write := func(pass string) {
		if err := os.WriteFile(path, []byte("basic_auth_users:\n  ops: "+hash(t, pass)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("old")
	srv, err := webserve.New(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}), webserve.Options{WebConfigFile: path})
	if err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go func() { _ = srv.Serve(l) }()
	defer srv.Shutdown(context.Background())
	c := newClient(t, nil)
	url := "http://" + l.Addr().String() + "/"
	if got, _ := c.withAuth("ops", "old").get(url); got != http.StatusOK {
		t.Fatalf("old password: %d", got)
	}
	// A different size, so the change is seen even within the file system's
	// timestamp resolution.
	write("a much longer new password")
	if got, _ := c.withAuth("ops", "old").get(url); got != http.StatusUnauthorized {
		t.Errorf("old password after the change: %d, want 401", got)
	}
	if got, _ := c.withAuth("ops", "a much longer new password").get(url); got != http.StatusOK {
		t.Errorf("new password: %d, want 200", got)
	}
}

func TestBrokenWebConfigFailsAtStart(t *testing.T) {
	for name, body := range map[string]string{
		"plain password":    "basic_auth_users:\n  ops: hunter2\n",
		"unknown key":       "basic_auth_user:\n  ops: x\n",
		"missing cert":      "tls_server_config:\n  cert_file: /nonexistent.pem\n  key_file: /nonexistent-key.pem\n",
		"forbidden header":  "http_server_config:\n  headers:\n    Set-Cookie: x\n",
		"password as a map": "basic_auth_users: hunter2\n",
		"key as a list":     "tls_server_config:\n  key: [hunter2]\n",
	} {
		path := filepath.Join(t.TempDir(), "web.yml")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := webserve.New(http.NotFoundHandler(), webserve.Options{WebConfigFile: path})
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %q does not name the file", name, err)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: error %q echoes the value", name, err)
		}
	}
}

func TestHeaderLimitAndSlowHeaders(t *testing.T) {
	srv, err := webserve.New(http.NotFoundHandler(), webserve.Options{MaxHeaderBytes: 4 << 10, ReadHeaderTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go func() { _ = srv.Serve(l) }()
	defer srv.Shutdown(context.Background())
	req, _ := http.NewRequest(http.MethodGet, "http://"+l.Addr().String()+"/", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 16<<10))
	c := newClient(t, nil)
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("16 KiB header with a 4 KiB limit: %d, want 431", resp.StatusCode)
	}

	// A client that sends headers slowly (slowloris) is cut off.
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	for {
		if _, err := conn.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("connection with unfinished headers still open after 10s")
			}
			break
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("unfinished headers closed after %s, want about the 300ms read header timeout", d)
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:0": true, "[::1]:0": true, ":0": false, "0.0.0.0:0": false,
	} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Logf("skip %s: %v", addr, err)
			continue
		}
		if got := webserve.IsLoopback(l.Addr()); got != want {
			t.Errorf("IsLoopback(%s bound as %s) = %v, want %v", addr, l.Addr(), got, want)
		}
		l.Close()
	}
}

// TestHardenedWebConfigExample serves with deploy/web-config-hardened.yml
// (its certificate files made by the test): HTTPS, the example users'
// password, the security headers.
func TestHardenedWebConfigExample(t *testing.T) {
	example, err := os.ReadFile("../../deploy/web-config-hardened.yml")
	if err != nil {
		t.Fatal(err)
	}
	ca := kafkatest.NewCA(t, "web-ca")
	cert := ca.Server(t, "monitor")
	dir := t.TempDir()
	for src, dst := range map[string]string{cert.CertFile: "tls.crt", cert.KeyFile: "tls.key"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "web-config.yml")
	if err := os.WriteFile(path, example, 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := webserve.New(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}), webserve.Options{WebConfigFile: path})
	if err != nil {
		t.Fatal(err)
	}
	if sec := srv.Security(); !sec.TLS || !sec.BasicAuth {
		t.Fatalf("Security() = %+v, want TLS and basic auth", sec)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go func() { _ = srv.Serve(l) }()
	defer srv.Shutdown(context.Background())
	c := newClient(t, ca.Pool())
	url := "https://" + l.Addr().String() + "/api/v1/violations"
	if got, err := c.get(url); err != nil || got != http.StatusUnauthorized {
		t.Errorf("no credentials: %d %v, want 401", got, err)
	}
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.SetBasicAuth("oncall", "change-me")
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Strict-Transport-Security") == "" || resp.Header.Get("X-Frame-Options") != "deny" {
		t.Errorf("example user: %d, headers %v", resp.StatusCode, resp.Header)
	}
}

// TestRateLimit: the web config's rate_limit answers 429 beyond its burst,
// before any password is checked.
func TestRateLimit(t *testing.T) {
	base, _ := serve(t, "rate_limit:\n  burst: 2\n  interval: 1h\nbasic_auth_users:\n  ops: "+hash(t, "pw")+"\n")
	c := newClient(t, nil).withAuth("ops", "pw")
	for i, want := range []int{http.StatusOK, http.StatusOK, http.StatusTooManyRequests} {
		if got, err := c.get(base + "/api/v1/rules"); err != nil || got != want {
			t.Errorf("request %d: %d %v, want %d", i+1, got, err, want)
		}
	}
}
