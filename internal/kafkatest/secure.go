package kafkatest

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// SecureBroker is a real Kafka broker whose client listeners require
// authentication, started by SecureKafka:
//
//   - SASLAddr, a SASL_SSL listener: TLS with a certificate issued by CA for
//     ServerName, and SASL SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN for User
//     with Password (SCRAM credentials added at storage format, as
//     `kafka-storage.sh format --add-scram` does), and OAUTHBEARER with
//     Kafka's unsecured-token validator (an unsigned JWT with a sub claim);
//   - MTLSAddr, an SSL listener with ssl.client.auth=required: a client
//     certificate issued by CA (Client) is the credential.
//
// The embedded Broker's Addr is a PLAINTEXT listener on loopback, also used
// between the broker and itself, for a test's setup (topics, input records)
// only; what a test checks should go through the secured listeners.
type SecureBroker struct {
	*Broker
	// SASLAddr is the SASL_SSL listener, 127.0.0.1:port.
	SASLAddr string
	// MTLSAddr is the SSL listener that requires a client certificate.
	MTLSAddr string
	// ServerName is the one DNS name the broker certificate carries; it does
	// not resolve, so a client must set it as its TLS server name, and one
	// that verifies against the address it dialed fails.
	ServerName string
	// CA signed the broker certificate and Client; the broker trusts it.
	CA *CA
	// Client is a client certificate (CN=invmon) the MTLS listener accepts.
	Client CertPair
	// Untrusted is a CA the broker does not know, with a client certificate
	// (UntrustedClient) and a certificate for ServerName, for failure tests.
	Untrusted       *CA
	UntrustedClient CertPair
	// User and Password are the SCRAM and PLAIN credentials.
	User, Password string
}

var secureShared struct {
	once sync.Once
	b    *SecureBroker
	err  error
}

// SecureKafka returns a broker with TLS, SASL and client-certificate
// listeners, shared by all tests of this test binary: started by the first
// call, stopped by Main. Unlike Kafka, it ignores KAFKA_BROKERS: the tests need
// to know the cluster's CA and credentials, which only a broker they started
// can tell them.
func SecureKafka(t testing.TB) *SecureBroker {
	t.Helper()
	if !mainActive.Load() {
		t.Fatalf("kafkatest.SecureKafka needs `func TestMain(m *testing.M) { kafkatest.Main(m) }` in this package, " +
			"so that the shared broker is stopped when the tests end")
	}
	java := requireKafka(t)
	secureShared.once.Do(func() {
		began := time.Now()
		secureShared.b, secureShared.err = startSecure(java)
		if secureShared.err == nil {
			t.Logf("kafkatest: secure broker SASL_SSL %s, mTLS %s ready in %s; log %s",
				secureShared.b.SASLAddr, secureShared.b.MTLSAddr, time.Since(began).Round(time.Millisecond), secureShared.b.LogFile())
		}
	})
	if secureShared.err != nil {
		t.Fatalf("kafkatest: secure broker: %v", secureShared.err)
	}
	return secureShared.b
}

// secureProperties are appended to the broker's configuration; a later key
// wins in a Java properties file, so listeners are redefined here.
const secureProperties = `
# --- appended by kafkatest.SecureKafka ---
listeners=PLAINTEXT://127.0.0.1:@BROKER_PORT@,CONTROLLER://127.0.0.1:@CONTROLLER_PORT@,SASL_SSL://127.0.0.1:@SASL_PORT@,MTLS://127.0.0.1:@MTLS_PORT@
advertised.listeners=PLAINTEXT://127.0.0.1:@BROKER_PORT@,SASL_SSL://127.0.0.1:@SASL_PORT@,MTLS://127.0.0.1:@MTLS_PORT@
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,MTLS:SSL

# PEM files as Kafka 4.1 reads them: the key (PKCS #8, unencrypted) followed
# by the certificate chain, and the CA certificate as the truststore.
ssl.keystore.type=PEM
ssl.keystore.location=@KEYSTORE@
ssl.truststore.type=PEM
ssl.truststore.location=@TRUSTSTORE@

sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN,OAUTHBEARER
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_@USER@="@PASSWORD@";
# Without a server callback handler, Kafka validates OAUTHBEARER tokens with
# its unsecured validator: an unsigned JWT whose sub claim is the principal.
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="broker";

listener.name.mtls.ssl.client.auth=required

# SASL sessions expire after 5 s and clients authenticate again (KIP-368):
# a credential changed on the broker reaches running clients within seconds.
connections.max.reauth.ms=5000
`

// startSecure starts the shared secure broker.
func startSecure(java javaInstall) (*SecureBroker, error) {
	var s *SecureBroker
	b, err := startShared(java, func(b *Broker) error {
		var err error
		s, err = secureSetup(b)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.Broker = b
	return s, nil
}

// secureSetup issues the certificates, appends the listeners and adds the
// SCRAM credentials to the format.
func secureSetup(b *Broker) (*SecureBroker, error) {
	saslPort, err := freePort()
	if err != nil {
		return nil, err
	}
	mtlsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	pki := filepath.Join(b.dir, "pki")
	untrustedDir := filepath.Join(pki, "untrusted")
	if err := os.MkdirAll(untrustedDir, 0o700); err != nil {
		return nil, err
	}
	s := &SecureBroker{
		SASLAddr:   "127.0.0.1:" + strconv.Itoa(saslPort),
		MTLSAddr:   "127.0.0.1:" + strconv.Itoa(mtlsPort),
		ServerName: "kafka.invmon.test",
		User:       "invmon",
		Password:   randomHex(12),
	}
	if s.CA, err = newCA(pki, "invmon-test-ca"); err != nil {
		return nil, err
	}
	// The broker certificate names ServerName only, no address, so that a
	// client must verify the name it was configured with.
	server, err := s.CA.issue("broker", x509.ExtKeyUsageServerAuth, []string{s.ServerName}, nil)
	if err != nil {
		return nil, err
	}
	if s.Client, err = s.CA.issue("invmon", x509.ExtKeyUsageClientAuth, nil, nil); err != nil {
		return nil, err
	}
	if s.Untrusted, err = newCA(untrustedDir, "untrusted-ca"); err != nil {
		return nil, err
	}
	if s.UntrustedClient, err = s.Untrusted.issue("invmon", x509.ExtKeyUsageClientAuth, nil, nil); err != nil {
		return nil, err
	}
	// A Kafka PEM keystore is one file: the key, then the certificate chain.
	keystore := filepath.Join(pki, "broker-keystore.pem")
	var pem []byte
	for _, f := range []string{server.KeyFile, server.CertFile, s.CA.CertFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		pem = append(pem, b...)
	}
	if err := os.WriteFile(keystore, pem, 0o600); err != nil {
		return nil, err
	}
	_, port, _ := strings.Cut(b.addr, "127.0.0.1:")
	fill := strings.NewReplacer(
		"@BROKER_PORT@", port,
		"@CONTROLLER_PORT@", strconv.Itoa(b.ctlPort),
		"@SASL_PORT@", strconv.Itoa(saslPort),
		"@MTLS_PORT@", strconv.Itoa(mtlsPort),
		"@KEYSTORE@", keystore,
		"@TRUSTSTORE@", s.CA.CertFile,
		"@USER@", s.User,
		"@PASSWORD@", s.Password,
	)
	f, err := os.OpenFile(b.props, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	_, err = f.WriteString(fill.Replace(secureProperties))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	for _, mech := range []string{"SCRAM-SHA-512", "SCRAM-SHA-256"} {
		b.format = append(b.format, "--add-scram", fmt.Sprintf("%s=[name=%s,password=%s]", mech, s.User, s.Password))
	}
	return s, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}
