package kafkaconn_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	promconfig "github.com/prometheus/common/config"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/kafkaconn"
	"github.com/invmon/invmon/internal/kafkatest"
)

func TestMain(m *testing.M) { kafkatest.Main(m) }

// tlsTo returns TLS settings that trust the secure broker's CA and verify
// its certificate under its server name.
func tlsTo(b *kafkatest.SecureBroker) config.TLS {
	return config.TLS{Enabled: true, Config: promconfig.TLSConfig{CAFile: b.CA.CertFile, ServerName: b.ServerName}}
}

func secretFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// roundTrip produces a record through the options k gives and reads it back
// with a second client built the same way: the whole client path, not only
// the handshake.
func roundTrip(t *testing.T, addr string, k config.Kafka) error {
	t.Helper()
	opts, err := kafkaconn.Options(k)
	if err != nil {
		return err
	}
	topic := kafkatest.Topic(t, "sec")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	base := append([]kgo.Opt{kgo.SeedBrokers(addr), kgo.AllowAutoTopicCreation(), kgo.DialTimeout(3 * time.Second)}, opts...)
	pr, err := kgo.NewClient(base...)
	if err != nil {
		return err
	}
	defer pr.Close()
	want := fmt.Sprintf("hello %d", time.Now().UnixNano())
	if err := pr.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(want)}).FirstErr(); err != nil {
		return err
	}
	rd, err := kgo.NewClient(append(base, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return err
	}
	defer rd.Close()
	for ctx.Err() == nil {
		fs := rd.PollFetches(ctx)
		if err := fs.Err0(); err != nil && ctx.Err() == nil {
			return err
		}
		for _, r := range fs.Records() {
			if string(r.Value) == want {
				return nil
			}
		}
	}
	return fmt.Errorf("record not read back: %w", ctx.Err())
}

// dialErr returns the error a new client meets on its first request, bounded
// so a test shows a failure is immediate rather than a retry loop.
func dialErr(t *testing.T, addr string, k config.Kafka) (error, time.Duration) {
	t.Helper()
	opts, err := kafkaconn.Options(k)
	if err != nil {
		t.Fatalf("options: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	began := time.Now()
	err = kafkaconn.Check(ctx, []string{addr}, opts)
	return err, time.Since(began)
}

func TestSASLOverTLS(t *testing.T) {
	b := kafkatest.SecureKafka(t)
	for _, mech := range []string{"SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"} {
		t.Run(mech, func(t *testing.T) {
			k := config.Kafka{TLS: tlsTo(b), SASL: config.SASL{
				Mechanism: mech, Username: b.User, PasswordFile: secretFile(t, b.Password),
			}}
			if err := roundTrip(t, b.SASLAddr, k); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestPasswordFileIsReadPerConnection rotates the password file of a running
// configuration: a wrong password fails the next connection, and the right
// one written back makes the next connection succeed, with no new Options.
func TestPasswordFileIsReadPerConnection(t *testing.T) {
	b := kafkatest.SecureKafka(t)
	file := secretFile(t, "not-the-password")
	k := config.Kafka{TLS: tlsTo(b), SASL: config.SASL{Mechanism: "SCRAM-SHA-512", Username: b.User, PasswordFile: file}}
	opts, err := kafkaconn.Options(k)
	if err != nil {
		t.Fatal(err)
	}
	try := func() error {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(b.SASLAddr)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return cl.Ping(ctx)
	}
	if err := try(); err == nil {
		t.Fatal("wrong password in the file was accepted")
	}
	if err := os.WriteFile(file, []byte(b.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := try(); err != nil {
		t.Fatalf("after rotating the file: %v", err)
	}
}

// unsignedJWT makes a token Kafka's unsecured OAUTHBEARER validator accepts:
// header alg none, a sub claim, issued now, expiring in exp.
func unsignedJWT(sub string, exp time.Duration) string {
	enc := base64.RawURLEncoding.EncodeToString
	header, _ := json.Marshal(map[string]string{"alg": "none"})
	now := time.Now()
	claims, _ := json.Marshal(map[string]any{"sub": sub, "iat": now.Unix(), "exp": now.Add(exp).Unix()})
	return enc(header) + "." + enc(claims) + "."
}

func TestOAuthBearerTokenFile(t *testing.T) {
	b := kafkatest.SecureKafka(t)
	k := config.Kafka{TLS: tlsTo(b), SASL: config.SASL{
		Mechanism: "OAUTHBEARER", OAuth: config.OAuth{TokenFile: secretFile(t, unsignedJWT("invmon", time.Hour))},
	}}
	if err := roundTrip(t, b.SASLAddr, k); err != nil {
		t.Fatal(err)
	}
}

// TestOAuthBearerClientCredentials fetches the token from a client-credentials
// endpoint that checks the client's id and secret, and shows the token is
// cached: two clients, one token request.
func TestOAuthBearerClientCredentials(t *testing.T) {
	b := kafkatest.SecureKafka(t)
	var requests atomic.Int32
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		id, secret, ok := r.BasicAuth()
		if err := r.ParseForm(); err != nil || !ok || id != "invmon" || secret != "idp-secret" ||
			r.Form.Get("grant_type") != "client_credentials" || r.Form.Get("scope") != "kafka" || r.Form.Get("audience") != "cluster-1" {
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"access_token": unsignedJWT("invmon", time.Hour), "token_type": "Bearer", "expires_in": 3600,
		})
	}))
	defer idp.Close()
	k := config.Kafka{TLS: tlsTo(b), SASL: config.SASL{Mechanism: "OAUTHBEARER", OAuth: config.OAuth{
		TokenURL: idp.URL, ClientID: "invmon", ClientSecretFile: secretFile(t, "idp-secret"),
		Scopes: []string{"kafka"}, EndpointParams: map[string]string{"audience": "cluster-1"},
	}}}
	if err := roundTrip(t, b.SASLAddr, k); err != nil {
		t.Fatal(err)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("token endpoint asked %d times for connections of one configuration, want 1 (cached)", n)
	}
	// A wrong client secret: the error names the endpoint, not the secret.
	k.SASL.OAuth.ClientSecretFile = secretFile(t, "wrong-idp-secret")
	err, _ := dialErr(t, b.SASLAddr, k)
	if err == nil || !strings.Contains(err.Error(), idp.URL) || strings.Contains(err.Error(), "wrong-idp-secret") {
		t.Fatalf("wrong client secret: %v", err)
	}
}

func TestMutualTLS(t *testing.T) {
	b := kafkatest.SecureKafka(t)
	k := config.Kafka{TLS: tlsTo(b)}
	k.TLS.Config.CertFile, k.TLS.Config.KeyFile = b.Client.CertFile, b.Client.KeyFile
	if err := roundTrip(t, b.MTLSAddr, k); err != nil {
		t.Fatal(err)
	}
	// Without a certificate, and with one the broker does not trust, the
	// broker ends the handshake and the client says so at once.
	for name, cert := range map[string]kafkatest.CertPair{"no client certificate": {}, "untrusted client certificate": b.UntrustedClient} {
		k.TLS.Config.CertFile, k.TLS.Config.KeyFile = cert.CertFile, cert.KeyFile
		err, took := dialErr(t, b.MTLSAddr, k)
		if err == nil || !strings.Contains(err.Error(), b.MTLSAddr) || took > 15*time.Second {
			t.Errorf("%s: after %s: %v", name, took, err)
		} else {
			t.Logf("%s: %v (after %s)", name, err, took.Round(time.Millisecond))
		}
	}
}

// TestFailuresAreClearAndFast: a wrong password, a broker certificate from a
// CA the client does not trust and a certificate for another name each fail
// within seconds, with an error that names the broker and the cause.
func TestFailuresAreClearAndFast(t *testing.T) {
	b := kafkatest.SecureKafka(t)
	wrong := config.Kafka{TLS: tlsTo(b), SASL: config.SASL{Mechanism: "SCRAM-SHA-512", Username: b.User, Password: "wrong-password-value"}}
	untrusted := config.Kafka{TLS: tlsTo(b), SASL: config.SASL{Mechanism: "SCRAM-SHA-512", Username: b.User, Password: promconfig.Secret(b.Password)}}
	untrusted.TLS.Config.CAFile = b.Untrusted.CertFile
	otherName := config.Kafka{TLS: tlsTo(b), SASL: untrusted.SASL}
	otherName.TLS.Config.ServerName = ""
	for _, c := range []struct {
		name string
		k    config.Kafka
		want string
	}{
		{"wrong password", wrong, "SASL_AUTHENTICATION_FAILED"},
		{"untrusted certificate", untrusted, "certificate signed by unknown authority"},
		{"certificate for another name", otherName, "kafka.tls.server_name"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err, took := dialErr(t, b.SASLAddr, c.k)
			if err == nil {
				t.Fatal("connected")
			}
			msg := err.Error()
			if !strings.Contains(msg, b.SASLAddr) || !strings.Contains(msg, c.want) || took > 15*time.Second {
				t.Fatalf("after %s: %v; want the broker %s and %q within 15s", took, err, b.SASLAddr, c.want)
			}
			if strings.Contains(msg, "wrong-password-value") || strings.Contains(msg, b.Password) {
				t.Fatalf("error shows a password: %v", err)
			}
			t.Logf("%v (after %s)", err, took.Round(time.Millisecond))
		})
	}
}

// TestHealthCountsOnlyCredentialRefusals: a refused password or certificate
// marks the broker, an accepted connection clears it, and a broker that is
// not there is not a verdict on the credentials.
func TestHealthCountsOnlyCredentialRefusals(t *testing.T) {
	b := kafkatest.SecureKafka(t)
	health := kafkaconn.NewHealth(nil, nil)
	connect := func(addr string, k config.Kafka) {
		t.Helper()
		opts, err := kafkaconn.Options(k)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = kafkaconn.Check(ctx, []string{addr}, append(opts, kgo.WithHooks(health)))
	}
	good := config.Kafka{TLS: tlsTo(b), SASL: config.SASL{Mechanism: "SCRAM-SHA-512", Username: b.User, Password: promconfig.Secret(b.Password)}}
	wrong := good
	wrong.SASL.Password = "wrong-password-value"
	untrusted := good
	untrusted.TLS.Config.CAFile = b.Untrusted.CertFile

	connect(fmt.Sprintf("127.0.0.1:%d", kafkatest.FreePort(t)), good)
	if err := health.Err(); err != nil {
		t.Fatalf("a closed port counted as refused credentials: %v", err)
	}
	for name, k := range map[string]config.Kafka{"wrong password": wrong, "untrusted CA": untrusted} {
		connect(b.SASLAddr, k)
		err := health.Err()
		if err == nil || !strings.Contains(err.Error(), "kafka broker "+b.SASLAddr) || strings.Contains(err.Error(), "wrong-password-value") {
			t.Fatalf("%s: health %v", name, err)
		}
		connect(b.SASLAddr, good)
		if err := health.Err(); err != nil {
			t.Fatalf("%s: still refused after an accepted connection: %v", name, err)
		}
	}
}
