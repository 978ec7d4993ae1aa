package kafkaconn

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	promconfig "github.com/prometheus/common/config"

	"github.com/invmon/invmon/internal/config"
)

func TestOptionsOffWithoutSecurity(t *testing.T) {
	opts, err := Options(config.Kafka{Brokers: []string{"k:9092"}})
	if err != nil || len(opts) != 0 {
		t.Fatalf("options %v, %v; want none", opts, err)
	}
}

// TestCredentialErrorsNameFilesNotContents: missing or unusable credential
// files fail at start, naming the setting and the file; a key file whose
// content is a secret never shows it.
func TestCredentialErrorsNameFilesNotContents(t *testing.T) {
	dir := t.TempDir()
	const secret = "s3cr3t-value-in-a-file"
	junk := filepath.Join(dir, "junk.pem")
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(junk, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	scram := func(file string) config.Kafka {
		return config.Kafka{SASL: config.SASL{Mechanism: "SCRAM-SHA-512", Username: "u", PasswordFile: file}}
	}
	tlsWith := func(c promconfig.TLSConfig) config.Kafka {
		return config.Kafka{TLS: config.TLS{Enabled: true, Config: c}}
	}
	for _, c := range []struct {
		name string
		k    config.Kafka
		want string
	}{
		{"missing password file", scram(missing), "kafka.sasl.password_file: open " + missing},
		{"empty password file", scram(empty), "kafka.sasl.password_file " + empty + " is empty"},
		{"junk client key", tlsWith(promconfig.TLSConfig{CertFile: junk, KeyFile: junk}), "kafka.tls"},
		{"junk CA", tlsWith(promconfig.TLSConfig{CAFile: junk}), "kafka.tls"},
		{"missing token file", config.Kafka{SASL: config.SASL{Mechanism: "OAUTHBEARER", OAuth: config.OAuth{TokenFile: missing}}}, "kafka.sasl.oauth.token_file"},
		{"missing aws secret file", config.Kafka{TLS: config.TLS{Enabled: true}, SASL: config.SASL{Mechanism: "AWS_MSK_IAM",
			AWS: config.AWS{AccessKeyID: "AKIAEXAMPLE", SecretAccessKeyFile: missing}}}, "kafka.sasl.aws.secret_access_key_file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Options(c.k)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("error shows the file's content: %v", err)
			}
		})
	}
}

// TestMSKIAMSignsWithFileCredentials: the AWS_MSK_IAM mechanism signs its
// first message with the access key and the secret from the file, which it
// uses but never sends.
func TestMSKIAMSignsWithFileCredentials(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mech, err := mechanism(config.SASL{Mechanism: "AWS_MSK_IAM", AWS: config.AWS{
		AccessKeyID: "AKIAIOSFODNN7EXAMPLE", SecretAccessKeyFile: secretFile, UserAgent: "invmon-test",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if mech.Name() != "AWS_MSK_IAM" {
		t.Fatalf("mechanism %s", mech.Name())
	}
	_, first, err := mech.Authenticate(context.Background(), "b-1.cluster.abc123.c2.kafka.eu-west-1.amazonaws.com:9098")
	if err != nil {
		t.Fatal(err)
	}
	msg := string(first)
	for _, want := range []string{`"action":"kafka-cluster:Connect"`, "AKIAIOSFODNN7EXAMPLE/", "/eu-west-1/kafka-cluster/aws4_request", `"user-agent":"invmon-test"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("first message lacks %s: %s", want, msg)
		}
	}
	if strings.Contains(msg, "wJalrXUtnFEMI") {
		t.Errorf("first message carries the secret key: %s", msg)
	}
}
