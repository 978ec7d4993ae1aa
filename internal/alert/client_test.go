package alert

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promconfig "github.com/prometheus/common/config"
	"go.uber.org/zap/zaptest"
)

var fastRetry = BackoffConfig{Initial: time.Millisecond, Max: 2 * time.Millisecond, MaxAttempts: 4}

func newClient(t *testing.T, url string, cfg ClientConfig) *Client {
	t.Helper()
	c, err := NewClient(url, cfg, prometheus.NewRegistry(), zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

var testAlert = Alert{
	Labels:      map[string]string{"alertname": "X", "severity": "page"},
	Annotations: map[string]string{"summary": "s"},
	StartsAt:    t0,
	EndsAt:      t0.Add(4 * time.Minute),
}

func TestNotifyPostsAlertmanagerV2JSON(t *testing.T) {
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/prefix/api/v2/alerts" {
			http.NotFound(w, r)
			return
		}
		body = must(readAll(r))
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL+"/prefix/", ClientConfig{})
	if retry, err := c.Notify(t.Context(), testAlert); err != nil || retry {
		t.Fatalf("Notify = %v, %v", retry, err)
	}
	want := `[{"labels":{"alertname":"X","severity":"page"},"annotations":{"summary":"s"},` +
		`"startsAt":"2025-03-14T03:00:00Z","endsAt":"2025-03-14T03:04:00Z"}]`
	if string(body) != want {
		t.Fatalf("posted\n%s\nwant\n%s", body, want)
	}

	// A URL that already names the endpoint is used as is.
	c = newClient(t, srv.URL+"/prefix/api/v2/alerts", ClientConfig{})
	if _, err := c.Notify(t.Context(), testAlert); err != nil {
		t.Fatal(err)
	}
	if c.Name() != srv.URL+"/prefix" {
		t.Fatalf("Name = %q", c.Name())
	}
}

func TestNotifyGivesUpAfterMaxAttemptsOn5xx(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		http.Error(w, strings.Repeat("x", 5000), http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, ClientConfig{Backoff: fastRetry})
	retry, err := c.Notify(t.Context(), testAlert)
	if !retry || err == nil {
		t.Fatalf("Notify = %v, %v; want retry with an error", retry, err)
	}
	var se *StatusError
	if !errors.As(err, &se) || se.StatusCode != 500 || len(se.Body) > maxErrorBody {
		t.Fatalf("error %v: want a StatusError 500 with a truncated body", err)
	}
	if n.Load() != 4 {
		t.Fatalf("%d attempts, want MaxAttempts=4", n.Load())
	}
}

func TestNotify4xxIsNotRetried(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		http.Error(w, "invalid label set", http.StatusBadRequest)
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, ClientConfig{Backoff: fastRetry})
	retry, err := c.Notify(t.Context(), testAlert)
	if retry || err == nil || !strings.Contains(err.Error(), "invalid label set") {
		t.Fatalf("Notify = %v, %v; want no retry and the body in the error", retry, err)
	}
	if n.Load() != 1 {
		t.Fatalf("%d attempts for a 4xx, want 1", n.Load())
	}
}

func TestNotifyTimeoutHasACause(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the body first: the server notices a client hanging up
		// (and cancels r.Context()) only once the body is consumed.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, ClientConfig{Timeout: 50 * time.Millisecond, Backoff: BackoffConfig{MaxAttempts: 2, Initial: time.Millisecond}})
	retry, err := c.Notify(t.Context(), testAlert)
	if !retry || !errors.Is(err, errRequestTimeout) || !strings.Contains(err.Error(), "timed out after 50ms") {
		t.Fatalf("Notify = %v, %v; want a retryable timeout naming its cause", retry, err)
	}
}

func TestNotifyStopsWhenContextIsDone(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, ClientConfig{Backoff: BackoffConfig{Initial: time.Hour, MaxAttempts: 10}})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	retry, err := c.Notify(ctx, testAlert)
	if !retry || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Notify = %v, %v", retry, err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("Notify waited out its back-off after ctx was done")
	}
}

func TestNotifyAuth(t *testing.T) {
	var got atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Header.Get("Authorization"))
	}))
	t.Cleanup(srv.Close)

	c := newClient(t, srv.URL, ClientConfig{AllowCredentialsOverHTTP: true,
		HTTP: promconfig.HTTPClientConfig{BasicAuth: &promconfig.BasicAuth{Username: "am", Password: "s3cret"}}})
	if _, err := c.Notify(t.Context(), testAlert); err != nil {
		t.Fatal(err)
	}
	if got.Load() != "Basic YW06czNjcmV0" {
		t.Fatalf("Authorization = %q", got.Load())
	}
	c = newClient(t, srv.URL, ClientConfig{AllowCredentialsOverHTTP: true,
		HTTP: promconfig.HTTPClientConfig{Authorization: &promconfig.Authorization{Type: "Bearer", Credentials: "tok"}}})
	if _, err := c.Notify(t.Context(), testAlert); err != nil {
		t.Fatal(err)
	}
	if got.Load() != "Bearer tok" {
		t.Fatalf("Authorization = %q", got.Load())
	}
	// The password comes from a file, read per request: a rotated secret
	// needs no restart.
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("first\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c = newClient(t, srv.URL, ClientConfig{AllowCredentialsOverHTTP: true,
		HTTP: promconfig.HTTPClientConfig{BasicAuth: &promconfig.BasicAuth{Username: "am", PasswordFile: pwFile}}})
	if _, err := c.Notify(t.Context(), testAlert); err != nil || got.Load() != "Basic YW06Zmlyc3Q=" {
		t.Fatalf("password from a file: Authorization = %q, %v", got.Load(), err)
	}
	if err := os.WriteFile(pwFile, []byte("second\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Notify(t.Context(), testAlert); err != nil || got.Load() != "Basic YW06c2Vjb25k" {
		t.Fatalf("rotated password file: Authorization = %q, %v", got.Load(), err)
	}
	if _, err := NewClient(srv.URL, ClientConfig{AllowCredentialsOverHTTP: true, HTTP: promconfig.HTTPClientConfig{
		BearerToken: "t", BasicAuth: &promconfig.BasicAuth{Username: "u"}}}, nil, nil); err == nil {
		t.Fatal("basic auth and bearer token together were accepted")
	}
	// A password in the URL is sent but never shown.
	c = newClient(t, strings.Replace(srv.URL, "http://", "http://u:pw@", 1), ClientConfig{AllowCredentialsOverHTTP: true})
	if strings.Contains(c.Name(), "pw") {
		t.Fatalf("Name %q shows the password", c.Name())
	}
}

func TestNotifyTLS(t *testing.T) {
	dir := t.TempDir()
	clientCert, clientKey, clientPool := selfSigned(t, dir, "client")

	var sawClientCert atomic.Bool
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawClientCert.Store(len(r.TLS.PeerCertificates) == 1 && r.TLS.PeerCertificates[0].Subject.CommonName == "client")
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: clientPool}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := filepath.Join(dir, "ca.pem")
	writePEM(t, caFile, "CERTIFICATE", srv.Certificate().Raw)

	// Unknown authority: a network error, retryable.
	c := newClient(t, srv.URL, ClientConfig{Backoff: BackoffConfig{MaxAttempts: 1}})
	if retry, err := c.Notify(t.Context(), testAlert); !retry || err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Notify without the CA = %v, %v", retry, err)
	}
	c = newClient(t, srv.URL, ClientConfig{HTTP: promconfig.HTTPClientConfig{TLSConfig: promconfig.TLSConfig{InsecureSkipVerify: true}}})
	if _, err := c.Notify(t.Context(), testAlert); err != nil {
		t.Fatalf("Notify skipping verification: %v", err)
	}
	c = newClient(t, srv.URL, ClientConfig{HTTP: promconfig.HTTPClientConfig{TLSConfig: promconfig.TLSConfig{CAFile: caFile, CertFile: clientCert, KeyFile: clientKey}}})
	if _, err := c.Notify(t.Context(), testAlert); err != nil {
		t.Fatalf("Notify with the CA and a client certificate: %v", err)
	}
	if !sawClientCert.Load() {
		t.Fatal("server did not see the client certificate")
	}
	if _, err := NewClient(srv.URL, ClientConfig{HTTP: promconfig.HTTPClientConfig{TLSConfig: promconfig.TLSConfig{CertFile: clientCert}}}, nil, nil); err == nil {
		t.Fatal("a cert file without a key file was accepted")
	}
	if _, err := NewClient(srv.URL, ClientConfig{HTTP: promconfig.HTTPClientConfig{TLSConfig: promconfig.TLSConfig{CAFile: filepath.Join(dir, "missing.pem")}}}, nil, nil); err == nil {
		t.Fatal("a missing CA file was accepted")
	}
}

func TestCredentialsRefusedOverPlainHTTP(t *testing.T) {
	for name, cfg := range map[string]promconfig.HTTPClientConfig{
		"basic auth":    {BasicAuth: &promconfig.BasicAuth{Username: "u", Password: "hunter2"}},
		"authorization": {Authorization: &promconfig.Authorization{Type: "Bearer", Credentials: "hunter2"}},
		"bearer token":  {BearerToken: "hunter2"},
		"oauth2":        {OAuth2: &promconfig.OAuth2{ClientID: "id", ClientSecret: "hunter2", TokenURL: "https://idp.example/token"}},
	} {
		_, err := NewClient("http://am.example:9093", ClientConfig{HTTP: cfg}, nil, nil)
		if err == nil || !strings.Contains(err.Error(), "plain http") || !strings.Contains(err.Error(), "http://am.example:9093") {
			t.Errorf("%s over http: err %v, want a refusal naming the Alertmanager", name, err)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error shows the secret: %v", name, err)
		}
		if _, err := NewClient("https://am.example:9093", ClientConfig{HTTP: cfg}, nil, nil); err != nil {
			t.Errorf("%s over https: %v", name, err)
		}
		if _, err := NewClient("http://am.example:9093", ClientConfig{HTTP: cfg, AllowCredentialsOverHTTP: true}, nil, nil); err != nil {
			t.Errorf("%s over http, allowed: %v", name, err)
		}
	}
	if _, err := NewClient("http://u:hunter2@am.example:9093", ClientConfig{}, nil, nil); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("password in an http URL: err %v, want a refusal without the password", err)
	}
}

func TestNotifyRetriesTooManyRequests(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 2 {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
		}
	}))
	t.Cleanup(srv.Close)
	// Max caps the Retry-After of one second at 5 ms.
	c := newClient(t, srv.URL, ClientConfig{Backoff: BackoffConfig{Initial: time.Millisecond, Max: 5 * time.Millisecond, MaxAttempts: 4}})
	start := time.Now()
	if retry, err := c.Notify(t.Context(), testAlert); err != nil || retry {
		t.Fatalf("Notify after two 429s = %v, %v; want delivered", retry, err)
	}
	if calls.Load() != 3 {
		t.Errorf("%d requests, want 3", calls.Load())
	}
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Errorf("took %s: Retry-After was not capped by the back-off maximum", d)
	}
}

func TestNotifyAuthFailureIsLoudAndRetried(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("WWW-Authenticate", "Basic")
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
	}))
	t.Cleanup(srv.Close)
	reg := prometheus.NewRegistry()
	c, err := NewClient(srv.URL, ClientConfig{Backoff: fastRetry}, reg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	retry, err := c.Notify(t.Context(), testAlert)
	if !retry {
		t.Errorf("401: retry = false; the batch would be held instead of retried once the credentials are fixed")
	}
	var se *StatusError
	if !errors.As(err, &se) || !se.AuthFailed() || !strings.Contains(err.Error(), "refused the monitor's credentials") ||
		!strings.Contains(err.Error(), srv.URL) {
		t.Errorf("401: err %v, want an auth failure naming %s", err, srv.URL)
	}
	if calls.Load() != 1 {
		t.Errorf("401 was tried %d times within one send; the same credentials would fail again", calls.Load())
	}
	if got := counterValue(t, reg, "invmon_alert_auth_failures_total"); got != 1 {
		t.Errorf("invmon_alert_auth_failures_total = %v, want 1", got)
	}
}

func counterValue(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func TestNewClientRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "am:9093", "ftp://am:9093", "http://", "http://[::1"} {
		if _, err := NewClient(u, ClientConfig{}, nil, nil); err == nil {
			t.Errorf("NewClient(%q) accepted", u)
		}
	}
}

// selfSigned writes a self-signed certificate and key for cn into dir and
// returns their paths and a pool that trusts it.
func selfSigned(t *testing.T, dir, cn string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key))
	certFile, keyFile = filepath.Join(dir, cn+".pem"), filepath.Join(dir, cn+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(key)))
	pool = x509.NewCertPool()
	pool.AddCert(must(x509.ParseCertificate(der)))
	return certFile, keyFile, pool
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func readAll(r *http.Request) ([]byte, error) { return io.ReadAll(r.Body) }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
