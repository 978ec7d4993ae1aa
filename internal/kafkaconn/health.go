package kafkaconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// Health follows the connection attempts of the clients it is hooked into
// (kgo.WithHooks) and reports brokers whose latest attempt was refused on
// credentials: a TLS certificate the client does not trust or the broker
// rejects, or failed SASL authentication. These do not heal by retrying, so
// the monitor is not ready while any broker refuses it, and the log and
// invmon_kafka_credentials_rejected say which and why. A broker that is down
// or unreachable is not counted here: the clients ride that out, and the
// consumer's lag shows it.
//
// A password or certificate fixed on disk takes effect at the next
// connection (credentials are read per connection), and the first accepted
// connection to the broker clears its state.
type Health struct {
	log      *zap.Logger
	rejected *prometheus.GaugeVec

	mu      sync.Mutex
	refused map[string]error // broker address -> the latest refusal
}

// NewHealth returns a Health that logs changes to log and, when reg is not
// nil, registers invmon_kafka_credentials_rejected{broker} with it.
func NewHealth(log *zap.Logger, reg prometheus.Registerer) *Health {
	if log == nil {
		log = zap.NewNop()
	}
	h := &Health{
		log: log,
		rejected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "invmon_kafka_credentials_rejected",
			Help: "1 while the latest connection attempt to the broker was refused on TLS or SASL credentials; 0 once one is accepted.",
		}, []string{"broker"}),
		refused: map[string]error{},
	}
	if reg != nil {
		reg.MustRegister(h.rejected)
	}
	return h
}

var _ kgo.HookBrokerConnect = (*Health)(nil)

// OnBrokerConnect implements kgo.HookBrokerConnect. franz-go calls it after
// each connection attempt, with the error of the dial, the TLS handshake or
// the SASL flow.
func (h *Health) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	addr := net.JoinHostPort(meta.Host, fmt.Sprint(meta.Port))
	refused := err != nil && IsCredentialError(err)
	if err != nil && !refused {
		return // unreachable or closing: not a verdict on the credentials
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, was := h.refused[addr]
	switch {
	case refused:
		h.refused[addr] = err
		h.rejected.WithLabelValues(addr).Set(1)
		if !was {
			h.log.Error("kafka broker refuses the monitor's credentials; not ready until it accepts them",
				zap.String("broker", addr), zap.Error(fmt.Errorf("%w%s", err, hint(err))))
		}
	case was:
		delete(h.refused, addr)
		h.rejected.WithLabelValues(addr).Set(0)
		h.log.Info("kafka broker accepts the monitor's credentials again", zap.String("broker", addr))
	}
}

// Err returns nil when no broker refuses the credentials, else an error that
// names each refusing broker and its cause.
func (h *Health) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.refused) == 0 {
		return nil
	}
	addrs := make([]string, 0, len(h.refused))
	for a := range h.refused {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	msgs := make([]string, len(addrs))
	for i, a := range addrs {
		msgs[i] = fmt.Sprintf("kafka broker %s: %v", a, h.refused[a])
	}
	return errors.New(strings.Join(msgs, "; "))
}

// IsCredentialError reports whether err is a refusal on credentials: TLS
// verification or a TLS alert from the broker, or failed SASL
// authentication.
func IsCredentialError(err error) bool {
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &invalid), errors.As(err, &verify):
		return true
	case errors.Is(err, kerr.SaslAuthenticationFailed), errors.Is(err, kerr.IllegalSaslState), errors.Is(err, kerr.UnsupportedSaslMechanism):
		return true
	}
	// Alerts the broker sends (bad or unknown certificate, certificate
	// required) reach the client only as text.
	return strings.Contains(err.Error(), "remote error: tls: ")
}
