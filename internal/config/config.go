// Package config reads the monitor's configuration file.
//
// Every setting can also be given as a flag, declared once in Flags (see
// flags.go); flags win.
// `${NAME}` in the file is replaced by the environment variable NAME, so
// secrets such as SASL passwords stay out of the file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	promconfig "github.com/prometheus/common/config"
	"gopkg.in/yaml.v3"

	"github.com/invmon/invmon/internal/privacy"
)

// Config is the monitor's configuration.
type Config struct {
	Kafka Kafka `yaml:"kafka"`
	// StateDir holds the Badger state. Default "./invmon-state".
	StateDir string `yaml:"state_dir"`
	// State sizes the state's memory and keeps resolved violations.
	State State `yaml:"state"`
	// RuleFiles are globs of rule files. Required.
	RuleFiles    []string     `yaml:"rule_files"`
	HTTP         HTTP         `yaml:"http"`
	Alertmanager Alertmanager `yaml:"alertmanager"`
	EventTime    EventTime    `yaml:"event_time"`
	// Privacy minimises customer data in the API, the alerts and the
	// violations topic. Default off: identifiers and amounts as they are.
	Privacy privacy.Config `yaml:"privacy"`
	// SchemaRegistry is where streams in avro, protobuf or json_schema
	// format find their schemas. Default none (JSON streams only).
	SchemaRegistry SchemaRegistry `yaml:"schema_registry"`
	// SLO says where error budgets are read from.
	SLO SLO `yaml:"slo"`
}

// SchemaRegistry configures the Schema Registry client. Its HTTP settings
// are prometheus/common's, as in Prometheus' own configuration: tls_config,
// basic_auth (password or password_file), authorization (credentials or
// credentials_file), bearer_token(_file), proxy_url, http_headers.
type SchemaRegistry struct {
	// URLs are the registry's base URLs, tried in order; for Apicurio
	// Registry, http://HOST:PORT/apis/ccompat/v7. Empty disables it.
	URLs []string `yaml:"urls"`
	// HTTP configures TLS, authentication and proxies. Default: plain HTTP
	// without authentication, following redirects.
	HTTP promconfig.HTTPClientConfig `yaml:",inline"`
}

// State configures the Badger state.
type State struct {
	// CacheSize bounds the state's memory: Badger's memtables, block cache
	// and table builders (see joinstate.Options). Also sets the Go memory
	// limit (GOMEMLIMIT, unless set) to CacheSize + 192 MiB. Bytes, or with
	// a unit ("256MiB"). Default 256MiB, for a process of about 512 MiB
	// (twice it); minimum 24MiB.
	CacheSize ByteSize `yaml:"cache_size"`
	// ViolationRetention is how long a resolved violation is kept after its
	// resolution; open ones are kept until resolved. Its id is remembered as
	// long again, so a trigger re-read in that time does not record it anew.
	// Default 720h (30 days).
	ViolationRetention time.Duration `yaml:"violation_retention"`
}

// MinCacheSize is the smallest state.cache_size.
const MinCacheSize = 24 << 20

// ByteSize is a size in bytes that YAML may give with a unit (KiB, MiB, GiB,
// kB, MB, GB).
type ByteSize int64

// UnmarshalYAML reads "268435456", "256MiB" or "256 MB".
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := humanize.ParseBytes(n.Value)
	if err != nil || v > 1<<50 {
		return fmt.Errorf("line %d: %q is not a size (use bytes or a unit: 256MiB)", n.Line, n.Value)
	}
	*b = ByteSize(v)
	return nil
}

// String prints the size with a binary unit.
func (b ByteSize) String() string { return humanize.IBytes(uint64(b)) }

// Set parses a flag value.
func (b *ByteSize) Set(s string) error {
	v, err := humanize.ParseBytes(s)
	if err != nil {
		return fmt.Errorf("%q is not a size (use bytes or a unit: 256MiB)", s)
	}
	*b = ByteSize(v)
	return nil
}

// Type names the flag type.
func (b *ByteSize) Type() string { return "size" }

// EventTime bounds the event times the monitor accepts. A record whose event
// time (or a deadline it sets) falls outside is a dead letter with reason
// bad_time: a year past 9999 or a timestamp in microseconds read as
// milliseconds would otherwise move a watermark years ahead.
type EventTime struct {
	// Min is the earliest event time accepted. Default 1970-01-01T00:00:00Z.
	Min time.Time `yaml:"min"`
	// Max is the latest event time accepted; later values are clamped to the
	// default, the latest state can encode. Default 2200-01-01T00:00:00Z.
	Max time.Time `yaml:"max"`
	// MaxFuture, when positive, also rejects event times further than this
	// ahead of the monitor's clock. Default 0 (off).
	MaxFuture time.Duration `yaml:"max_future"`
}

// SLO configures where the rules' error budgets are read from.
type SLO struct {
	// PrometheusURL is the Prometheus that evaluates the rules `monitor slo
	// rules` generates; GET /api/v1/rules reads each rule's remaining budget
	// and burn rate from it. Default none: the API shows objectives and
	// budgets only.
	PrometheusURL string `yaml:"prometheus_url"`
}

// Kafka configures the cluster connection and the consumer group.
type Kafka struct {
	// Brokers are the seed brokers. Required.
	Brokers []string `yaml:"brokers"`
	// Group is the consumer group. Default "invmon".
	Group string `yaml:"group"`
	// ClientID names the client. Default "invmon".
	ClientID string `yaml:"client_id"`
	// DLQTopic receives poison records. Default "<group>.dlq".
	DLQTopic string `yaml:"dlq_topic"`
	// Changelog appends every state write to the compacted topic
	// "<group>.changelog", so that a member that gains a partition (after a
	// rebalance, or on a new machine) restores its state. Default true. It
	// governs the state changelog only: the group's stream of violation
	// changes ("<group>.violations-state"), which alerting and the API read
	// through the group view, is written either way.
	Changelog bool `yaml:"changelog"`
	// ViolationEventsTopic, when set, receives every violation opening and
	// resolution exactly once (keyed by violation id, minimised by the
	// privacy settings), for other systems such as repair workflows. It is
	// not the internal "<group>.violations-state" that alerting and the API
	// read.
	// Default none.
	ViolationEventsTopic string `yaml:"violation_events_topic"`
	// ViolationsTopic is ViolationEventsTopic's former name, still read
	// from files: Load moves it there. Deprecated.
	ViolationsTopic string `yaml:"violations_topic"`
	// InstanceID, when set, makes this member a static group member: a
	// restarted process with the same id takes its partitions back at once
	// instead of waiting out the session timeout. Default none (dynamic).
	InstanceID string `yaml:"instance_id"`
	// ProduceTimeout bounds how long a batch waits for the brokers to
	// acknowledge its dead letters and changelog records. Past it the member
	// stops with an error, commits nothing after its last durable batch and
	// exits non-zero, so a restart re-reads the batch. Default 2m (a broker
	// restart is ridden out, as with Kafka's delivery.timeout.ms).
	ProduceTimeout time.Duration `yaml:"produce_timeout"`
	// MaxPollRecords bounds one batch, the unit of evaluation, state writes
	// and commits: larger batches amortize each synced commit over more
	// records and hold more of them in memory. Default 20000
	// (consumer.DefaultMaxPollRecords, which 0 also means).
	MaxPollRecords int  `yaml:"max_poll_records"`
	TLS            TLS  `yaml:"tls"`
	SASL           SASL `yaml:"sasl"`
}

// TLS configures TLS to the brokers. Default off.
type TLS struct {
	// Enabled turns TLS on. Default false. Setting any other TLS field while
	// this is false is an error, so a CA file never sits unused.
	Enabled bool `yaml:"enabled"`
	// Config takes the fields of Prometheus's tls_config: ca_file (default
	// the system roots), cert_file and key_file (a client certificate, for
	// brokers with ssl.client.auth=required), server_name (the name the
	// broker certificate must carry; default the host of each broker
	// address), insecure_skip_verify (default false) and min_version
	// (default TLS12). The client certificate and key are read again at
	// every handshake, so a rotated certificate needs no restart.
	Config promconfig.TLSConfig `yaml:",inline"`
}

// SASL configures SASL authentication. Default none.
type SASL struct {
	// Mechanism is one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER,
	// AWS_MSK_IAM; empty disables SASL (the default).
	Mechanism string `yaml:"mechanism"`
	// Username and Password (or PasswordFile) are the credentials of PLAIN
	// and SCRAM. The file is read at every connection, so a rotated
	// Kubernetes secret takes effect without a restart.
	Username     string            `yaml:"username"`
	UsernameFile string            `yaml:"username_file"`
	Password     promconfig.Secret `yaml:"password"`
	PasswordFile string            `yaml:"password_file"`
	// AllowPlainWithoutTLS lets PLAIN send the password over an unencrypted
	// connection. Default false: PLAIN without kafka.tls is refused.
	AllowPlainWithoutTLS bool `yaml:"allow_plain_without_tls"`
	// OAuth configures OAUTHBEARER.
	OAuth OAuth `yaml:"oauth"`
	// AWS configures AWS_MSK_IAM.
	AWS AWS `yaml:"aws"`
}

// OAuth configures SASL OAUTHBEARER: a token read from TokenFile at every
// connection, or fetched from TokenURL with the OAuth 2.0 client-credentials
// grant (cached and refreshed before it expires). Exactly one of the two.
type OAuth struct {
	// TokenFile holds a bearer token (a JWT), such as a projected Kubernetes
	// service-account token. Default none.
	TokenFile string `yaml:"token_file"`
	// TokenURL is the identity provider's token endpoint. Default none.
	TokenURL string `yaml:"token_url"`
	// ClientID and ClientSecret (or ClientSecretFile) identify the monitor
	// to the token endpoint.
	ClientID         string            `yaml:"client_id"`
	ClientSecret     promconfig.Secret `yaml:"client_secret"`
	ClientSecretFile string            `yaml:"client_secret_file"`
	// Scopes requested. Default none.
	Scopes []string `yaml:"scopes"`
	// EndpointParams are extra form parameters of the token request, such
	// as audience. Default none.
	EndpointParams map[string]string `yaml:"endpoint_params"`
	// Extensions are SASL extensions sent with the token, such as
	// logicalCluster and identityPoolId for Confluent Cloud. Default none.
	Extensions map[string]string `yaml:"extensions"`
}

// AWS configures SASL AWS_MSK_IAM. With no access key set, credentials come
// from the AWS SDK's default chain (environment, shared files, web identity
// for EKS, the instance or task role), refreshed as they expire.
type AWS struct {
	// AccessKeyID and SecretAccessKey (or SecretAccessKeyFile) are static
	// credentials. Default the SDK's chain.
	AccessKeyID         string            `yaml:"access_key_id"`
	SecretAccessKey     promconfig.Secret `yaml:"secret_access_key"`
	SecretAccessKeyFile string            `yaml:"secret_access_key_file"`
	// SessionToken (or SessionTokenFile) goes with temporary credentials.
	SessionToken     promconfig.Secret `yaml:"session_token"`
	SessionTokenFile string            `yaml:"session_token_file"`
	// Region is used by the SDK's chain for STS. Default from the
	// environment.
	Region string `yaml:"region"`
	// UserAgent overrides the client's user agent, for IAM policies that
	// match aws:UserAgent. Default franz-go's.
	UserAgent string `yaml:"user_agent"`
}

// HTTP configures the monitor's HTTP server.
type HTTP struct {
	// Listen is the address of /metrics, the health checks and the API.
	// Default ":8080".
	Listen string `yaml:"listen"`
	// ExternalURL is how users reach the monitor; alert links point there.
	// Default "http://localhost:8080".
	ExternalURL string `yaml:"external_url"`
	// WebConfigFile is a Prometheus exporter-toolkit web configuration
	// (the file Prometheus and Alertmanager take as --web.config.file): TLS,
	// client certificates, bcrypt basic-auth users, response headers, a
	// rate limit. Every path needs the credentials it asks for, except the
	// health checks when OpenHealthChecks is set. Default "": plain HTTP
	// without authentication (a warning is logged when the address is not
	// loopback).
	WebConfigFile string `yaml:"web_config_file"`
	// OpenHealthChecks serves /healthz and /readyz without basic auth, for
	// probes that carry no credentials. They say only "ok" or "ready". A
	// required client certificate still applies. Default false.
	OpenHealthChecks bool `yaml:"open_health_checks"`
	// ReadHeaderTimeout bounds reading a request's headers. Default 10s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// ReadTimeout bounds reading a whole request. Default 30s.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds writing a response. Default 1m.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// IdleTimeout closes kept-alive connections idle this long. Default 2m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes limits the size of a request's headers. Default 65536.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
}

// Alertmanager configures where alerts go and how the monitor reaches it.
// Besides urls it takes the fields of an `alertmanagers:` entry of
// prometheus.yml, so the entry Prometheus uses can be pasted here:
// static_configs, scheme, path_prefix, timeout, api_version (v2), and
// Prometheus's HTTP client settings (tls_config, basic_auth, authorization,
// oauth2, proxy_url, follow_redirects, enable_http2, http_headers), each
// secret with its *_file form.
type Alertmanager struct {
	// URLs of every Alertmanager of an HA pair or cluster; each receives every
	// alert. Empty (and no static_configs) disables alerting.
	URLs []string `yaml:"urls"`
	// StaticConfigs list Alertmanagers as host:port targets, reached with
	// Scheme and PathPrefix, as in prometheus.yml. Default none.
	StaticConfigs []StaticConfig `yaml:"static_configs"`
	// Scheme of the static_configs targets. Default "http".
	Scheme string `yaml:"scheme"`
	// PathPrefix is prepended to /api/v2/alerts for static_configs targets.
	// Default "".
	PathPrefix string `yaml:"path_prefix"`
	// APIVersion must be "v2" (the only API Alertmanager still serves).
	// Default "v2".
	APIVersion string `yaml:"api_version"`
	// Timeout bounds one request. Default 10s.
	Timeout time.Duration `yaml:"timeout"`
	// ResendInterval is how often firing alerts are re-sent. Default 1m.
	ResendInterval time.Duration `yaml:"resend_interval"`
	// AllowCredentialsOverHTTP lets basic auth, tokens or OAuth2 go to an
	// http:// Alertmanager. Default false: the monitor refuses to start.
	AllowCredentialsOverHTTP bool `yaml:"allow_credentials_over_http"`
	// HTTP is Prometheus's HTTP client configuration, inline. Default
	// follow_redirects and enable_http2 on, no auth, the system's CAs.
	HTTP promconfig.HTTPClientConfig `yaml:",inline"`
}

// StaticConfig is a static_configs entry of prometheus.yml.
type StaticConfig struct {
	// Targets are host:port addresses.
	Targets []string `yaml:"targets"`
}

// Targets returns every Alertmanager's base URL: the urls, then each static
// target as scheme://target/path_prefix.
func (a Alertmanager) Targets() []string {
	out := slices.Clone(a.URLs)
	scheme := a.Scheme
	if scheme == "" {
		scheme = "http"
	}
	for _, sc := range a.StaticConfigs {
		for _, t := range sc.Targets {
			u := url.URL{Scheme: scheme, Host: t, Path: a.PathPrefix}
			out = append(out, u.String())
		}
	}
	return out
}

func (a Alertmanager) validate() error {
	switch a.Scheme {
	case "", "http", "https":
	default:
		return errors.New("config: alertmanager.scheme must be http or https")
	}
	if a.APIVersion != "" && a.APIVersion != "v2" {
		return errors.New("config: alertmanager.api_version: only v2 is supported")
	}
	if a.Timeout < 0 {
		return errors.New("config: alertmanager.timeout must not be negative")
	}
	// The client checks its TLS files and the credentials-over-http rule
	// when it is built; this catches conflicting settings early.
	if err := a.HTTP.Validate(); err != nil {
		return fmt.Errorf("config: alertmanager: %w", err)
	}
	return nil
}

// MaxPollRecordsLimit is the largest kafka.max_poll_records accepted, a
// bound against typos: a batch is held up to three times over (evaluated,
// produced, committed), and a million records with their state changes are
// gigabytes of heap, far past any memory budget the setting is tuned in.
const MaxPollRecordsLimit = 1_000_000

// Defaults returns a configuration with every default set.
func Defaults() Config {
	return Config{
		Kafka:    Kafka{Group: "invmon", ClientID: "invmon", Changelog: true, ProduceTimeout: 2 * time.Minute, MaxPollRecords: 20_000},
		StateDir: "./invmon-state",
		State:    State{CacheSize: 256 << 20, ViolationRetention: 30 * 24 * time.Hour},
		HTTP: HTTP{Listen: ":8080", ExternalURL: "http://localhost:8080",
			ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: time.Minute,
			IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10},
		Alertmanager: Alertmanager{ResendInterval: time.Minute, Timeout: 10 * time.Second, HTTP: promconfig.DefaultHTTPClientConfig},
		SchemaRegistry: SchemaRegistry{
			HTTP: promconfig.DefaultHTTPClientConfig,
		},
	}
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// Load reads a configuration file over the defaults. Unknown fields are
// errors, so a misspelt setting is not silently ignored.
func Load(path string) (Config, error) {
	cfg := Defaults()
	raw, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	// Expand ${NAME} in values only: a comment that mentions ${VAR} must not
	// need the variable set.
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	var missing []string
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.ScalarNode {
			n.Value = envRef.ReplaceAllStringFunc(n.Value, func(m string) string {
				name := envRef.FindStringSubmatch(m)[1]
				v, ok := os.LookupEnv(name)
				if !ok {
					missing = append(missing, name)
				}
				return v
			})
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&root)
	if len(missing) > 0 {
		return cfg, fmt.Errorf("config %s: environment variables not set: %v", path, missing)
	}
	if len(root.Content) == 0 {
		return cfg, nil
	}
	expanded, err := yaml.Marshal(&root)
	if err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(expanded))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, withoutValues(err))
	}
	if err := cfg.Kafka.renamed(); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	// *_file paths are relative to the configuration file, as in Prometheus.
	cfg.SchemaRegistry.HTTP.SetDirectory(filepath.Dir(path))
	if err := cfg.SchemaRegistry.HTTP.Validate(); err != nil {
		return cfg, fmt.Errorf("config %s: schema_registry: %w", path, err)
	}
	return cfg, nil
}

// renamed moves settings given under a former name to their name now, and
// refuses a file that gives both names different values.
func (k *Kafka) renamed() error {
	if k.ViolationsTopic == "" {
		return nil
	}
	if k.ViolationEventsTopic != "" && k.ViolationEventsTopic != k.ViolationsTopic {
		return fmt.Errorf("kafka.violations_topic (%q) is the former name of kafka.violation_events_topic (%q): keep only the latter",
			k.ViolationsTopic, k.ViolationEventsTopic)
	}
	k.ViolationEventsTopic, k.ViolationsTopic = k.ViolationsTopic, ""
	return nil
}

// yamlValueError matches yaml.v3's "line N: cannot unmarshal !!str `value`
// into T"; type names hold no spaces, so everything between is the value.
var yamlValueError = regexp.MustCompile("^(line [0-9]+: cannot unmarshal [^ ]+) .* (into [^ ]+)$")

// withoutValues drops the quoted values from yaml's type errors: a password
// pasted where a mapping belongs (`sasl: hunter2`) must not reach a log that
// shows the error.
func withoutValues(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	out := &yaml.TypeError{Errors: make([]string, len(te.Errors))}
	for i, e := range te.Errors {
		out.Errors[i] = yamlValueError.ReplaceAllString(e, "$1 value $2")
	}
	return out
}

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	switch {
	case len(c.Kafka.Brokers) == 0:
		return fmt.Errorf("config: kafka.brokers is required")
	case len(c.RuleFiles) == 0:
		return fmt.Errorf("config: rule_files is required")
	case c.StateDir == "":
		return fmt.Errorf("config: state_dir is required")
	case c.State.CacheSize < MinCacheSize:
		return fmt.Errorf("config: state.cache_size %s is below the minimum %s", c.State.CacheSize, ByteSize(MinCacheSize))
	case c.State.ViolationRetention <= 0:
		return fmt.Errorf("config: state.violation_retention must be positive")
	case c.Alertmanager.ResendInterval <= 0:
		return fmt.Errorf("config: alertmanager.resend_interval must be positive")
	case c.Kafka.ProduceTimeout < 0:
		return fmt.Errorf("config: kafka.produce_timeout must not be negative")
	case c.Kafka.MaxPollRecords < 0 || c.Kafka.MaxPollRecords > MaxPollRecordsLimit:
		return fmt.Errorf("config: kafka.max_poll_records %d is outside 1–%d (0 for the default)", c.Kafka.MaxPollRecords, MaxPollRecordsLimit)
	case !c.EventTime.Min.IsZero() && !c.EventTime.Max.IsZero() && !c.EventTime.Min.Before(c.EventTime.Max):
		return fmt.Errorf("config: event_time.min must be before event_time.max")
	}
	if err := c.Alertmanager.validate(); err != nil {
		return err
	}
	if err := c.Privacy.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return c.Kafka.ValidateSecurity()
}

// Mechanisms are the SASL mechanisms kafka.sasl.mechanism accepts.
var Mechanisms = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "AWS_MSK_IAM"}

// ValidateSecurity checks the TLS and SASL settings for combinations that
// cannot work or would leak a credential. Errors name settings, never values.
func (k Kafka) ValidateSecurity() error {
	if !k.TLS.Enabled && k.TLS.Config != (promconfig.TLSConfig{}) {
		return errors.New("config: kafka.tls has settings but kafka.tls.enabled is false; set enabled: true (or remove them)")
	}
	if k.TLS.Enabled {
		if err := k.TLS.Config.Validate(); err != nil {
			return fmt.Errorf("config: kafka.tls: %w", err)
		}
	}
	s := k.SASL
	both := func(name string, value promconfig.Secret, file string) error {
		if value != "" && file != "" {
			return fmt.Errorf("config: kafka.sasl.%s and kafka.sasl.%s_file are both set; use one", name, name)
		}
		return nil
	}
	for _, e := range []error{
		both("password", s.Password, s.PasswordFile),
		both("oauth.client_secret", s.OAuth.ClientSecret, s.OAuth.ClientSecretFile),
		both("aws.secret_access_key", s.AWS.SecretAccessKey, s.AWS.SecretAccessKeyFile),
		both("aws.session_token", s.AWS.SessionToken, s.AWS.SessionTokenFile),
	} {
		if e != nil {
			return e
		}
	}
	if s.Username != "" && s.UsernameFile != "" {
		return errors.New("config: kafka.sasl.username and kafka.sasl.username_file are both set; use one")
	}
	switch s.Mechanism {
	case "":
		if s.Username != "" || s.UsernameFile != "" || s.Password != "" || s.PasswordFile != "" {
			return errors.New("config: kafka.sasl has credentials but no mechanism; set kafka.sasl.mechanism")
		}
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if s.Username == "" && s.UsernameFile == "" {
			return fmt.Errorf("config: kafka.sasl.mechanism %s needs kafka.sasl.username or username_file", s.Mechanism)
		}
		if s.Password == "" && s.PasswordFile == "" {
			return fmt.Errorf("config: kafka.sasl.mechanism %s needs kafka.sasl.password or password_file", s.Mechanism)
		}
		if s.Mechanism == "PLAIN" && !k.TLS.Enabled && !s.AllowPlainWithoutTLS {
			return errors.New("config: kafka.sasl.mechanism PLAIN sends the password in clear text, and kafka.tls is off; " +
				"enable kafka.tls, or set kafka.sasl.allow_plain_without_tls: true if the network is trusted")
		}
	case "OAUTHBEARER":
		o := s.OAuth
		switch {
		case (o.TokenFile == "") == (o.TokenURL == ""):
			return errors.New("config: kafka.sasl.mechanism OAUTHBEARER needs exactly one of kafka.sasl.oauth.token_file and kafka.sasl.oauth.token_url")
		case o.TokenURL != "" && o.ClientID == "":
			return errors.New("config: kafka.sasl.oauth.token_url needs kafka.sasl.oauth.client_id")
		case o.TokenURL != "" && o.ClientSecret == "" && o.ClientSecretFile == "":
			return errors.New("config: kafka.sasl.oauth.token_url needs kafka.sasl.oauth.client_secret or client_secret_file")
		}
	case "AWS_MSK_IAM":
		a := s.AWS
		static := a.SecretAccessKey != "" || a.SecretAccessKeyFile != ""
		if (a.AccessKeyID != "") != static {
			return errors.New("config: kafka.sasl.aws.access_key_id and secret_access_key (or secret_access_key_file) go together; " +
				"leave both out to use the AWS SDK's default credential chain")
		}
		if !k.TLS.Enabled {
			return errors.New("config: kafka.sasl.mechanism AWS_MSK_IAM needs kafka.tls.enabled: true (MSK's IAM listener is TLS only)")
		}
	default:
		// The value is not repeated: a secret pasted into the wrong field
		// must not reach the log that shows this error.
		return fmt.Errorf("config: kafka.sasl.mechanism is not one of %s", strings.Join(Mechanisms, ", "))
	}
	return nil
}
