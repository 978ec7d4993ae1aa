// Package webserve serves the monitor's HTTP handler the way Prometheus and
// Alertmanager serve theirs: an exporter-toolkit web configuration file
// (--web.config.file) turns on TLS, client-certificate authentication and
// bcrypt basic auth, and the server has every timeout and a header size
// limit set.
//
// The file format, its validation and the TLS side (certificates reloaded at
// every handshake, client CAs, allowed SANs, cipher suites, versions) are
// github.com/prometheus/exporter-toolkit/web's. The request side (basic auth,
// extra headers, rate limit) is done here because the toolkit's handler
// guards every path, and the monitor may leave its health checks open to
// probes that carry no credentials (Options.OpenPaths). It follows the
// toolkit's behaviour: the file is read again when it changes, so users and
// passwords change without a restart; an unknown user costs the same bcrypt
// comparison as a known one; verdicts are cached per (user, hash, password).
package webserve

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v2"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/time/rate"
)

// Options configure a Server.
type Options struct {
	// WebConfigFile is an exporter-toolkit web configuration: tls_server_config,
	// basic_auth_users (bcrypt hashes), http_server_config, rate_limit.
	// Default "": plain HTTP without authentication.
	WebConfigFile string
	// OpenPaths are served without basic auth even when users are
	// configured (exact paths, such as "/healthz"). TLS and a required client
	// certificate still apply: they are settled before the path is known.
	// Default none.
	OpenPaths []string
	// ReadHeaderTimeout bounds reading a request's headers. Default 10s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request. Default 30s.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response. Default 1m.
	WriteTimeout time.Duration
	// IdleTimeout closes a kept-alive connection idle this long. Default 2m.
	IdleTimeout time.Duration
	// MaxHeaderBytes limits the request headers' size. Default 64 KiB.
	MaxHeaderBytes int
	// Logger. Default a no-op logger.
	Logger *zap.Logger
}

func (o Options) withDefaults() Options {
	if o.ReadHeaderTimeout <= 0 {
		o.ReadHeaderTimeout = 10 * time.Second
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 30 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = time.Minute
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 2 * time.Minute
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = 64 << 10
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return o
}

// Server is an http.Server with the web configuration applied.
type Server struct {
	srv  *http.Server
	opts Options
	// tls is set when the web configuration turns TLS on.
	tls *tls.Config
	// auth is what the first load of the web configuration requires.
	auth Security
}

// Security says how a server protects its non-open paths.
type Security struct {
	// TLS is true when the server speaks HTTPS.
	TLS bool
	// ClientCertificates is true when a client certificate signed by the
	// configured CA is required (client_auth_type RequireAndVerifyClientCert).
	ClientCertificates bool
	// BasicAuth is true when basic_auth_users is not empty.
	BasicAuth bool
}

// Authenticated reports whether a request needs credentials of some kind.
func (s Security) Authenticated() bool { return s.ClientCertificates || s.BasicAuth }

// New wraps h. It reads and validates the web configuration (bcrypt hashes,
// certificate files, header names), so a broken file fails at start with
// the file's name, not at the first request.
func New(h http.Handler, opts Options) (*Server, error) {
	opts = opts.withDefaults()
	s := &Server{opts: opts}
	s.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		ReadTimeout:       opts.ReadTimeout,
		WriteTimeout:      opts.WriteTimeout,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    opts.MaxHeaderBytes,
		ErrorLog:          zap.NewStdLog(opts.Logger.Named("http")),
	}
	if opts.WebConfigFile == "" {
		return s, nil
	}
	if err := Validate(opts.WebConfigFile); err != nil {
		return nil, err
	}
	cfg, err := loadConfig(opts.WebConfigFile)
	if err != nil {
		return nil, err
	}
	s.auth.BasicAuth = len(cfg.Users) > 0
	a := &authenticator{path: opts.WebConfigFile, next: h, log: opts.Logger, open: map[string]bool{}, cached: cfg, verdicts: map[[32]byte]bool{}}
	a.stamp, _ = fileStamp(opts.WebConfigFile)
	for _, p := range opts.OpenPaths {
		a.open[p] = true
	}
	if cfg.RateLimiterConfig.Interval != 0 {
		a.limiter = rate.NewLimiter(rate.Every(cfg.RateLimiterConfig.Interval), cfg.RateLimiterConfig.Burst)
	}
	s.srv.Handler = a
	if !cfg.TLSConfig.IsEnabled() {
		return s, nil
	}
	if s.tls, err = web.ConfigToTLSConfig(&cfg.TLSConfig); err != nil {
		return nil, fmt.Errorf("web config %s: %w", opts.WebConfigFile, err)
	}
	s.auth.TLS = true
	s.auth.ClientCertificates = s.tls.ClientAuth == tls.RequireAndVerifyClientCert
	http2 := cfg.HTTPConfig.HTTP2
	if !http2 {
		s.srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	// Like the toolkit: every handshake reads the configuration and the
	// certificate again, so a renewed certificate is served without a restart.
	path := opts.WebConfigFile
	s.tls.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c, err := loadConfig(path)
		if err != nil {
			return nil, err
		}
		tc, err := web.ConfigToTLSConfig(&c.TLSConfig)
		if err != nil {
			return nil, err
		}
		if http2 {
			tc.NextProtos = []string{"h2", "http/1.1"}
		} else {
			tc.NextProtos = []string{"http/1.1"}
		}
		return tc, nil
	}
	s.srv.TLSConfig = s.tls
	return s, nil
}

// Validate checks a web configuration file as New does (users' bcrypt
// hashes, certificate files, header names) without serving; "" is valid.
func Validate(path string) error {
	if path == "" {
		return nil
	}
	if err := web.Validate(path); err != nil {
		return fmt.Errorf("web config %s: %s", path, withoutValues(err))
	}
	return nil
}

// Security reports how the server protects its paths.
func (s *Server) Security() Security { return s.auth }

// Serve accepts connections on l until Shutdown; it returns nil after a
// Shutdown.
func (s *Server) Serve(l net.Listener) error {
	var err error
	if s.tls != nil {
		err = s.srv.ServeTLS(l, "", "")
	} else {
		err = s.srv.Serve(l)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting and waits for requests in flight, up to ctx.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// IsLoopback reports whether a listener bound to addr is reachable only from
// this machine. An empty host (":8080") or an unspecified address listens on
// every interface.
func IsLoopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP != nil && tcp.IP.IsLoopback()
}

// loadConfig reads the web configuration the way the toolkit does: its
// defaults, strict YAML, file paths relative to the file's directory.
func loadConfig(path string) (*web.Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("web config: %w", err)
	}
	c := &web.Config{
		TLSConfig:  web.TLSConfig{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13, PreferServerCipherSuites: true},
		HTTPConfig: web.HTTPConfig{HTTP2: true},
	}
	if err := yaml.UnmarshalStrict(raw, c); err != nil {
		return nil, fmt.Errorf("web config %s: %s", path, withoutValues(err))
	}
	c.TLSConfig.SetDirectory(filepath.Dir(path))
	return c, nil
}

// yamlValue is a value the YAML decoder quotes in a type error
// ("cannot unmarshal !!str `hunter2` into ...").
var yamlValue = regexp.MustCompile("`[^`]*`")

// withoutValues drops quoted values from an error's text: a plain password
// pasted where a bcrypt hash or a mapping belongs must not reach the log.
func withoutValues(err error) string {
	return yamlValue.ReplaceAllString(err.Error(), "value")
}

type stamp struct {
	mod  time.Time
	size int64
}

func fileStamp(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	return stamp{fi.ModTime(), fi.Size()}, nil
}

// unknownUserHash is compared against when the user does not exist, so that
// the answer takes as long as for a real user (the toolkit's fixed hash of
// "fakepassword").
const unknownUserHash = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"

// maxVerdicts bounds the cache of bcrypt results.
const maxVerdicts = 100

// authenticator is the request side of the web configuration.
type authenticator struct {
	path    string
	next    http.Handler
	log     *zap.Logger
	open    map[string]bool
	limiter *rate.Limiter

	mu       sync.Mutex
	stamp    stamp
	cached   *web.Config
	verdicts map[[32]byte]bool
	// bcryptMu runs one bcrypt comparison at a time: each costs tens of
	// milliseconds of CPU, and a burst of bad passwords must not take every
	// core.
	bcryptMu sync.Mutex
}

// config returns the web configuration, read again when the file changed.
func (a *authenticator) config() (*web.Config, error) {
	st, err := fileStamp(a.path)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if st == a.stamp {
		return a.cached, nil
	}
	c, err := loadConfig(a.path)
	if err != nil {
		return nil, err
	}
	a.stamp, a.cached = st, c
	clear(a.verdicts)
	return c, nil
}

func (a *authenticator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := a.config()
	if err != nil {
		a.log.Error("unable to read the web configuration", zap.String("file", a.path), zap.Error(err))
		http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		return
	}
	if a.limiter != nil && !a.limiter.Allow() {
		http.Error(w, http.StatusText(http.StatusTooManyRequests), http.StatusTooManyRequests)
		return
	}
	for k, v := range c.HTTPConfig.Header {
		w.Header().Set(k, v)
	}
	if len(c.Users) == 0 || a.open[r.URL.Path] {
		a.next.ServeHTTP(w, r)
		return
	}
	if user, pass, ok := r.BasicAuth(); ok && a.check(c, user, pass) {
		a.next.ServeHTTP(w, r)
		return
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="invmon"`)
	http.Error(w, http.StatusText(http.StatusUnauthorized), http.StatusUnauthorized)
}

// check compares pass with user's bcrypt hash, caching the verdict under a
// digest of the three (not the password itself).
func (a *authenticator) check(c *web.Config, user, pass string) bool {
	hash, known := c.Users[user]
	if !known {
		hash = unknownUserHash
	}
	h := sha256.New()
	for _, s := range []string{user, string(hash), pass} {
		fmt.Fprintf(h, "%d:%s", len(s), s)
	}
	var key [32]byte
	h.Sum(key[:0])
	a.mu.Lock()
	verdict, cached := a.verdicts[key]
	a.mu.Unlock()
	if cached {
		return verdict
	}
	a.bcryptMu.Lock()
	err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(pass))
	a.bcryptMu.Unlock()
	verdict = known && err == nil
	a.mu.Lock()
	if len(a.verdicts) >= maxVerdicts {
		clear(a.verdicts)
	}
	a.verdicts[key] = verdict
	a.mu.Unlock()
	return verdict
}
