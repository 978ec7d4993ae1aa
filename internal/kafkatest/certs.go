package kafkatest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a throw-away certificate authority for TLS tests, generated with Go's
// crypto/x509: a test issues server and client certificates from it and hands
// the PEM files to the peers (Alertmanager's --web.config.file, the Kafka
// broker's SSL listener, the monitor's own web config) and to clients.
type CA struct {
	// CertFile is the CA certificate, PEM: what a client or server trusts.
	CertFile string
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	dir      string
	serial   int64
}

// CertPair is an issued certificate and its key as PEM files.
type CertPair struct {
	CertFile string
	KeyFile  string
	// Cert is the certificate and key loaded for crypto/tls.
	Cert tls.Certificate
}

// NewCA creates a CA valid for a day whose files live in the test's temporary
// directory.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	ca, err := newCA(t.TempDir(), name)
	if err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
	return ca
}

// newCA creates a CA whose files live in dir: for peers shared by the tests
// of a binary, whose files must outlive the test that started them.
func newCA(dir, name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"invmon tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("ca certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca certificate: %w", err)
	}
	ca := &CA{cert: cert, key: key, dir: dir, serial: 1}
	ca.CertFile = filepath.Join(ca.dir, "ca.pem")
	if err := writePEM(ca.CertFile, "CERTIFICATE", der); err != nil {
		return nil, err
	}
	return ca, nil
}

// Pool returns a pool holding only this CA, for a client's RootCAs or a
// server's ClientCAs.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Server issues a server certificate for loopback: its names are 127.0.0.1,
// ::1 and localhost, plus any extra DNS names given.
func (ca *CA) Server(t testing.TB, name string, dnsNames ...string) CertPair {
	t.Helper()
	return must(t)(ca.issue(name, x509.ExtKeyUsageServerAuth,
		append([]string{"localhost"}, dnsNames...), []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}))
}

// Client issues a client certificate whose subject common name is name.
func (ca *CA) Client(t testing.TB, name string) CertPair {
	t.Helper()
	return must(t)(ca.issue(name, x509.ExtKeyUsageClientAuth, nil, nil))
}

// must turns an issue error into the test's failure.
func must(t testing.TB) func(CertPair, error) CertPair {
	return func(p CertPair, err error) CertPair {
		t.Helper()
		if err != nil {
			t.Fatalf("kafkatest: %v", err)
		}
		return p
	}
}

func (ca *CA) issue(name string, usage x509.ExtKeyUsage, dns []string, ips []net.IP) (CertPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CertPair{}, fmt.Errorf("key for %s: %w", name, err)
	}
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"invmon tests"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return CertPair{}, fmt.Errorf("certificate for %s: %w", name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return CertPair{}, fmt.Errorf("key for %s: %w", name, err)
	}
	p := CertPair{
		CertFile: filepath.Join(ca.dir, name+".pem"),
		KeyFile:  filepath.Join(ca.dir, name+"-key.pem"),
	}
	if err := writePEM(p.CertFile, "CERTIFICATE", der); err != nil {
		return CertPair{}, err
	}
	if err := writePEM(p.KeyFile, "PRIVATE KEY", keyDER); err != nil {
		return CertPair{}, err
	}
	if p.Cert, err = tls.LoadX509KeyPair(p.CertFile, p.KeyFile); err != nil {
		return CertPair{}, fmt.Errorf("load %s: %w", name, err)
	}
	return p, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
