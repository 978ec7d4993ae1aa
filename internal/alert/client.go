package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"
	promconfig "github.com/prometheus/common/config"
	"go.uber.org/zap"
)

// alertsPath is the Alertmanager API v2 endpoint that accepts alerts.
const alertsPath = "/api/v2/alerts"

const (
	// maxErrorBody bounds how much of an error response is kept for logs and
	// errors: enough for Alertmanager's validation message, not a whole page.
	maxErrorBody = 1 << 10
	// maxDrain bounds how much of a response is read only to reuse the
	// connection; a server that sends more loses its keep-alive instead.
	maxDrain = 1 << 20
)

// ClientConfig configures how alerts are posted to one Alertmanager.
type ClientConfig struct {
	// Timeout bounds one HTTP request (one attempt, not the retries).
	// Default 10s, like Prometheus's notification timeout.
	Timeout time.Duration
	// HTTP is Prometheus's HTTP client configuration, the fields of an
	// `alertmanagers:` entry in prometheus.yml: tls_config (ca_file,
	// cert_file, key_file, server_name, min_version, insecure_skip_verify),
	// basic_auth (password or password_file), authorization (credentials or
	// credentials_file), bearer_token(_file), oauth2 (client credentials),
	// proxy_url and friends, follow_redirects, enable_http2. Files are read
	// per request, so rotated secrets and certificates need no restart.
	// Default the zero value: no auth, the system roots.
	HTTP promconfig.HTTPClientConfig
	// AllowCredentialsOverHTTP lets credentials (basic auth, a bearer token,
	// OAuth2, a password in the URL) go to an http:// Alertmanager, where
	// anyone on the path reads them. Default false: NewClient refuses.
	AllowCredentialsOverHTTP bool
	// Backoff paces the retries of one send. Defaults: see BackoffConfig.
	Backoff BackoffConfig
}

// BackoffConfig paces the retries of one send (5xx and network errors only).
// The waits grow exponentially (×2) with ±50% jitter, so several monitors
// retrying against a recovering Alertmanager do not hit it in lockstep.
type BackoffConfig struct {
	// Initial is the first wait. Default 200ms.
	Initial time.Duration
	// Max caps one wait. Default 5s.
	Max time.Duration
	// MaxAttempts is the number of attempts per send, the first included.
	// Default 3. A send that still fails is retried by the Manager on its next
	// tick, so long outages are covered there, not by long waits here.
	MaxAttempts int
}

func (c ClientConfig) withDefaults() ClientConfig {
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Backoff.Initial <= 0 {
		c.Backoff.Initial = 200 * time.Millisecond
	}
	if c.Backoff.Max <= 0 {
		c.Backoff.Max = 5 * time.Second
	}
	if c.Backoff.Max < c.Backoff.Initial {
		c.Backoff.Max = c.Backoff.Initial
	}
	if c.Backoff.MaxAttempts <= 0 {
		c.Backoff.MaxAttempts = 3
	}
	return c
}

// Client posts alerts to one Alertmanager. It is safe for concurrent use.
type Client struct {
	name     string // redacted base URL: the metrics label and the log field
	endpoint string // full URL of POST /api/v2/alerts, credentials included
	cfg      ClientConfig
	hc       *http.Client
	logger   *zap.Logger
	metrics  *clientMetrics
}

// NewClient returns a client for the Alertmanager at rawURL, its base URL
// ("http://am:9093", or with a path prefix such as "https://host/alertmanager");
// a URL that already ends in /api/v2/alerts is used as is. Its metrics are
// registered on reg (nil: not registered); several clients share them.
func NewClient(rawURL string, cfg ClientConfig, reg prometheus.Registerer, logger *zap.Logger) (*Client, error) {
	cfg = cfg.withDefaults()
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("alertmanager url %q: %w", rawURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("alertmanager url %q: scheme must be http or https", rawURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("alertmanager url %q: no host", rawURL)
	}
	name := strings.TrimSuffix(strings.TrimSuffix(u.Redacted(), "/"), alertsPath)
	if !strings.HasSuffix(u.Path, alertsPath) {
		u.Path = strings.TrimSuffix(u.Path, "/") + alertsPath
	}
	if err := cfg.HTTP.Validate(); err != nil {
		return nil, fmt.Errorf("alertmanager %s: %w", name, err)
	}
	if kind := credentials(cfg.HTTP, u); kind != "" && u.Scheme == "http" && !cfg.AllowCredentialsOverHTTP {
		return nil, fmt.Errorf("alertmanager %s: refusing to send %s over plain http, where anyone on the network path reads it; "+
			"use an https:// URL (scheme: https), or set allow_credentials_over_http: true if the network is trusted", name, kind)
	}
	// Prometheus's client: TLS with CA and client certificate re-read when
	// they change, basic auth, authorization and OAuth2 with their *_file
	// forms read per request, proxies.
	hc, err := promconfig.NewClientFromConfig(cfg.HTTP, "alertmanager", promconfig.WithUserAgent("invmon"))
	if err != nil {
		return nil, fmt.Errorf("alertmanager %s: %w", name, err)
	}
	metrics, err := newClientMetrics(reg)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Client{
		name:     name,
		endpoint: u.String(),
		cfg:      cfg,
		// No http.Client.Timeout: each attempt gets its own context deadline
		// with a cause, so the error says which Alertmanager timed out.
		hc:      hc,
		logger:  logger.With(zap.String("alertmanager", name)),
		metrics: metrics,
	}, nil
}

// credentials names the kind of credential cfg or the URL would send, or
// returns "" when there is none.
func credentials(cfg promconfig.HTTPClientConfig, u *url.URL) string {
	switch {
	case cfg.BasicAuth != nil:
		return "basic auth credentials"
	case cfg.Authorization != nil, cfg.BearerToken != "", cfg.BearerTokenFile != "":
		return "an authorization token"
	case cfg.OAuth2 != nil:
		return "an OAuth2 token"
	case u.User != nil:
		return "the password in the URL"
	}
	return ""
}

// Name is the Alertmanager's base URL with any password redacted: the value
// of the alertmanager label in the client's metrics.
func (c *Client) Name() string { return c.name }

// CloseIdleConnections closes the client's kept-alive connections.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// StatusError is a non-2xx answer from Alertmanager.
type StatusError struct {
	// Alertmanager is the redacted base URL.
	Alertmanager string
	// StatusCode is the HTTP status.
	StatusCode int
	// Body is the start of the response body (at most 1 KiB).
	Body string
	// RetryAfter is the wait a 429 or 503 asked for (Retry-After), or 0.
	RetryAfter time.Duration
}

// Error names the Alertmanager, the status and the start of the body, and
// for a refused login says which settings to check.
func (e *StatusError) Error() string {
	if e.AuthFailed() {
		return fmt.Sprintf("alertmanager %s refused the monitor's credentials (%d %s): check basic_auth, authorization, "+
			"oauth2 and tls_config of the alertmanager settings against its web config: %s",
			e.Alertmanager, e.StatusCode, http.StatusText(e.StatusCode), e.Body)
	}
	return fmt.Sprintf("alertmanager %s: unexpected status %d: %s", e.Alertmanager, e.StatusCode, e.Body)
}

// AuthFailed reports a 401 or 403: the credentials are missing, wrong or
// not allowed. Alertmanager did not look at the alerts.
func (e *StatusError) AuthFailed() bool {
	return e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden
}

// Retryable reports whether the same request may succeed later: server
// errors and 429 (too many requests) do, after a wait. A 401 or 403 needs
// the credentials fixed (a rotated secret file is read again on the next
// send), so the caller retries it later, not within one send. Any other
// 4xx means Alertmanager refused the payload, and sending the same payload
// again would be refused again.
func (e *StatusError) Retryable() bool {
	return e.StatusCode >= 500 || e.StatusCode == http.StatusTooManyRequests
}

// Notify posts alerts to the Alertmanager in one request, retrying 5xx
// answers and network errors with exponential back-off (ClientConfig.Backoff).
// It returns retry=true when the send failed in a way that may succeed later
// (5xx, network error, timeout, ctx done), so the caller should try again;
// retry=false with an error when Alertmanager refused the alerts (4xx).
func (c *Client) Notify(ctx context.Context, alerts ...Alert) (retry bool, err error) {
	if len(alerts) == 0 {
		return false, nil
	}
	body, err := json.Marshal(alerts)
	if err != nil {
		return false, fmt.Errorf("alertmanager %s: encode %d alerts: %w", c.name, len(alerts), err)
	}
	bo := &backoff.ExponentialBackOff{
		InitialInterval:     c.cfg.Backoff.Initial,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         c.cfg.Backoff.Max,
	}
	attempt := 0
	_, err = backoff.Retry(ctx, func() (struct{}, error) {
		attempt++
		err := c.post(ctx, body)
		var se *StatusError
		switch {
		case errors.As(err, &se) && !se.Retryable():
			return struct{}{}, backoff.Permanent(err)
		case se != nil && se.RetryAfter > 0:
			// Honour the wait Alertmanager (or a proxy before it) asked for,
			// up to the longest back-off: the next tick retries anyway.
			return struct{}{}, errors.Join(err, &backoff.RetryAfterError{Duration: min(se.RetryAfter, c.cfg.Backoff.Max)})
		}
		return struct{}{}, err
	},
		backoff.WithBackOff(bo),
		backoff.WithMaxTries(uint(c.cfg.Backoff.MaxAttempts)),
		backoff.WithMaxElapsedTime(0), // bounded by MaxAttempts instead
		backoff.WithNotify(func(err error, wait time.Duration) {
			c.logger.Debug("send failed, retrying",
				zap.Int("attempt", attempt), zap.Duration("retry_in", wait), zap.Error(err))
		}),
	)
	if err == nil {
		return false, nil
	}
	var se *StatusError
	switch {
	case errors.As(err, &se) && se.AuthFailed():
		// Loud, counted, and retried on the next tick rather than held:
		// the page must go out once the credentials are fixed.
		c.metrics.authFailures.WithLabelValues(c.name).Inc()
		return true, err
	case se != nil && !se.Retryable():
		c.logger.Error("alertmanager refused alerts; not retrying",
			zap.Int("status", se.StatusCode), zap.String("body", se.Body), zap.Int("alerts", len(alerts)))
		return false, err
	}
	return true, fmt.Errorf("send %d alerts after %d attempts: %w", len(alerts), attempt, err)
}

// errRequestTimeout is the cause attached to a request's deadline.
var errRequestTimeout = errors.New("request timed out")

// post makes one attempt.
func (c *Client) post(ctx context.Context, body []byte) error {
	reqCtx, cancel := context.WithTimeoutCause(ctx, c.cfg.Timeout,
		fmt.Errorf("alertmanager %s: %w after %s", c.name, errRequestTimeout, c.cfg.Timeout))
	defer cancel()

	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("alertmanager %s: build request: %w", c.name, err)
	}
	req.Header.Set("Content-Type", "application/json")

	c.metrics.sends.WithLabelValues(c.name).Inc()
	start := time.Now()
	resp, err := c.hc.Do(req)
	c.metrics.latency.WithLabelValues(c.name).Observe(time.Since(start).Seconds())
	if err != nil {
		c.metrics.failures.WithLabelValues(c.name).Inc()
		// Report our own deadline by its cause, not as a bare "context
		// deadline exceeded"; the caller's cancellation stays as it is.
		if ctx.Err() == nil && errors.Is(context.Cause(reqCtx), errRequestTimeout) {
			return context.Cause(reqCtx)
		}
		return fmt.Errorf("alertmanager %s: %w", c.name, err)
	}
	// Drain and close so the connection goes back to the pool.
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
		_ = resp.Body.Close()
	}()
	if resp.StatusCode/100 == 2 {
		return nil
	}
	c.metrics.failures.WithLabelValues(c.name).Inc()
	excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	se := &StatusError{
		Alertmanager: c.name,
		StatusCode:   resp.StatusCode,
		Body:         strings.TrimSpace(string(excerpt)),
	}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		se.RetryAfter = time.Duration(secs) * time.Second
	}
	return se
}

type clientMetrics struct {
	sends        *prometheus.CounterVec
	failures     *prometheus.CounterVec
	authFailures *prometheus.CounterVec
	latency      *prometheus.HistogramVec
}

func newClientMetrics(reg prometheus.Registerer) (*clientMetrics, error) {
	// Every series is per Alertmanager URL.
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"alertmanager"})
	}
	m := &clientMetrics{
		sends: counter("invmon_alert_sends_total",
			"HTTP requests that posted alerts to an Alertmanager, retries included."),
		failures: counter("invmon_alert_send_failures_total",
			"HTTP requests to an Alertmanager that failed (network error, timeout or non-2xx)."),
		authFailures: counter("invmon_alert_auth_failures_total",
			"Sends an Alertmanager refused with 401 or 403: the monitor's credentials are wrong or missing, and no alert gets through until they are fixed."),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "invmon_alert_send_latency_seconds",
			Help:    "Latency of one HTTP request posting alerts to an Alertmanager.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12), // 5ms .. ~10s
		}, []string{"alertmanager"}),
	}
	var err error
	if m.sends, err = register(reg, m.sends); err != nil {
		return nil, err
	}
	if m.failures, err = register(reg, m.failures); err != nil {
		return nil, err
	}
	if m.authFailures, err = register(reg, m.authFailures); err != nil {
		return nil, err
	}
	if m.latency, err = register(reg, m.latency); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c on reg, or returns the collector already registered
// under the same descriptor, so that several clients or managers can share
// one registry.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("register metrics: %w", err)
	}
	return c, nil
}
