package config

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	promconfig "github.com/prometheus/common/config"
	"github.com/spf13/pflag"
)

// Flag binds one command-line flag of `monitor run` to the configuration
// field at a YAML path. Flags is the only place where a flag is declared:
// BindFlags registers it, ApplyFlags lays it over the file, and the
// package's tests check that every setting of Config is either bound here
// or listed in FileOnly with its reason, and that every binding names a
// field.
type Flag struct {
	// Name is the flag, without dashes.
	Name string
	// Path is the field's YAML path, dot-separated (kafka.client_id).
	Path string
	// Usage is the flag's help text; the default is the field's value in
	// Defaults.
	Usage string
}

// Flags lists every flag that sets a configuration field. Names follow the
// YAML path with '-' for '_', except the older names kept as they are
// (kafka.tls, web.config.file, alertmanager.url, schema-registry.url).
var Flags = []Flag{
	{"kafka.brokers", "kafka.brokers", "seed brokers, host:port, comma-separated"},
	{"kafka.group", "kafka.group", "consumer group"},
	{"kafka.client-id", "kafka.client_id", "Kafka client id"},
	{"kafka.dlq-topic", "kafka.dlq_topic", "dead-letter topic (default <group>.dlq)"},
	{"kafka.violation-events-topic", "kafka.violation_events_topic", "publish every violation opening and resolution to this topic, exactly once, for other systems"},
	{"kafka.changelog", "kafka.changelog", "log state to <group>.changelog so partitions can move between members"},
	{"kafka.instance-id", "kafka.instance_id", "static group membership id: a restart keeps the partitions without a rebalance"},
	{"kafka.produce-timeout", "kafka.produce_timeout", "how long a batch waits for its dead letters and changelog to be acknowledged before the member stops"},
	{"kafka.max-poll-records", "kafka.max_poll_records", "records in one batch, the unit of evaluation and commits: larger amortizes commits, smaller holds less in memory"},
	// Kafka security. Secrets only as files: a flag's value shows in ps.
	{"kafka.tls", "kafka.tls.enabled", "TLS to the brokers"},
	{"kafka.tls.ca-file", "kafka.tls.ca_file", "PEM CA bundle the broker certificates must chain to (default the system roots)"},
	{"kafka.tls.cert-file", "kafka.tls.cert_file", "PEM client certificate, for brokers that require one"},
	{"kafka.tls.key-file", "kafka.tls.key_file", "PEM key of the client certificate"},
	{"kafka.tls.server-name", "kafka.tls.server_name", "name the broker certificates must carry (default each broker's host)"},
	{"kafka.tls.insecure-skip-verify", "kafka.tls.insecure_skip_verify", "accept any broker certificate (testing only)"},
	{"kafka.sasl.mechanism", "kafka.sasl.mechanism", "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM"},
	{"kafka.sasl.username", "kafka.sasl.username", "SASL user of PLAIN and SCRAM"},
	{"kafka.sasl.username-file", "kafka.sasl.username_file", "file holding the SASL user, read at every connection"},
	{"kafka.sasl.password-file", "kafka.sasl.password_file", "file holding the SASL password, read at every connection"},
	{"kafka.sasl.allow-plain-without-tls", "kafka.sasl.allow_plain_without_tls", "let PLAIN send the password over an unencrypted connection"},
	{"kafka.sasl.oauth.token-file", "kafka.sasl.oauth.token_file", "OAUTHBEARER: file holding the bearer token, read at every connection"},
	{"kafka.sasl.oauth.token-url", "kafka.sasl.oauth.token_url", "OAUTHBEARER: token endpoint of the client-credentials grant"},
	{"kafka.sasl.oauth.client-id", "kafka.sasl.oauth.client_id", "OAUTHBEARER: client id at the token endpoint"},
	{"kafka.sasl.oauth.client-secret-file", "kafka.sasl.oauth.client_secret_file", "OAUTHBEARER: file holding the client secret"},
	{"kafka.sasl.oauth.scopes", "kafka.sasl.oauth.scopes", "OAUTHBEARER: scopes requested, comma-separated"},
	{"kafka.sasl.aws.access-key-id", "kafka.sasl.aws.access_key_id", "AWS_MSK_IAM: static access key id (default the SDK's chain)"},
	{"kafka.sasl.aws.secret-access-key-file", "kafka.sasl.aws.secret_access_key_file", "AWS_MSK_IAM: file holding the secret access key"},
	{"kafka.sasl.aws.session-token-file", "kafka.sasl.aws.session_token_file", "AWS_MSK_IAM: file holding the session token"},
	{"kafka.sasl.aws.region", "kafka.sasl.aws.region", "AWS_MSK_IAM: region (default from the environment)"},
	{"kafka.sasl.aws.user-agent", "kafka.sasl.aws.user_agent", "AWS_MSK_IAM: user agent (default franz-go's)"},
	{"state-dir", "state_dir", "Badger state directory"},
	{"state.cache-size", "state.cache_size", "memory of the state: Badger memtables, block cache and table builders (minimum 24MiB); the Go memory limit is this + 192MiB"},
	{"state.violation-retention", "state.violation_retention", "how long resolved violations are kept (their ids as long again)"},
	{"rule-files", "rule_files", "rule file globs, comma-separated"},
	{"http.listen", "http.listen", "HTTP listen address for /metrics, health and API"},
	{"http.external-url", "http.external_url", "URL users reach the monitor at (alert links)"},
	{"web.config.file", "http.web_config_file", "exporter-toolkit web configuration: TLS, client certificates, basic auth (as Prometheus takes it)"},
	{"http.open-health-checks", "http.open_health_checks", "serve /healthz and /readyz without basic auth"},
	{"http.read-header-timeout", "http.read_header_timeout", "bound on reading a request's headers"},
	{"http.read-timeout", "http.read_timeout", "bound on reading a whole request"},
	{"http.write-timeout", "http.write_timeout", "bound on writing a response"},
	{"http.idle-timeout", "http.idle_timeout", "close kept-alive connections idle this long"},
	{"http.max-header-bytes", "http.max_header_bytes", "limit on the size of a request's headers"},
	{"alertmanager.url", "alertmanager.urls", "Alertmanager base URL; repeat for HA"},
	{"alertmanager.scheme", "alertmanager.scheme", "scheme of the static_configs targets"},
	{"alertmanager.path-prefix", "alertmanager.path_prefix", "path prepended to /api/v2/alerts for static_configs targets"},
	{"alertmanager.api-version", "alertmanager.api_version", "Alertmanager API version (only v2)"},
	{"alertmanager.timeout", "alertmanager.timeout", "bound on one request to an Alertmanager"},
	{"alertmanager.resend-interval", "alertmanager.resend_interval", "re-send period of firing alerts"},
	{"alertmanager.allow-credentials-over-http", "alertmanager.allow_credentials_over_http", "let credentials go to an http:// Alertmanager"},
	{"event-time.min", "event_time.min", "earliest event time accepted (RFC 3339)"},
	{"event-time.max", "event_time.max", "latest event time accepted (RFC 3339)"},
	{"event-time.max-future", "event_time.max_future", "dead-letter events stamped further than this ahead of the clock (0: off)"},
	{"privacy.identifiers", "privacy.identifiers", "customer ids and keys in the outputs: plain, redact or hmac"},
	{"privacy.hmac-key-file", "privacy.hmac_key_file", "file holding the HMAC key of privacy.identifiers=hmac"},
	{"privacy.impact-bands", "privacy.impact_bands", "ascending band boundaries impact is shown in, comma-separated"},
	{"schema-registry.url", "schema_registry.urls", "Schema Registry base URL (Apicurio: .../apis/ccompat/v7); repeat for fallbacks"},
	{"slo.prometheus-url", "slo.prometheus_url", "Prometheus evaluating the generated SLO rules; /api/v1/rules shows each rule's remaining budget and burn rate from it"},
}

// FileOnly lists the settings that have no flag, each with the reason.
// A path ending in ".*" covers everything below it.
var FileOnly = map[string]string{
	"kafka.violations_topic":               "former name of kafka.violation_events_topic, read from old files; its flag --kafka.violations-topic is an alias (FormerFlagNames)",
	"kafka.sasl.password":                  "a secret: a flag's value shows in ps; use the password_file flag",
	"kafka.sasl.oauth.client_secret":       "a secret: use the client_secret_file flag",
	"kafka.sasl.aws.secret_access_key":     "a secret: use the secret_access_key_file flag",
	"kafka.sasl.aws.session_token":         "a secret: use the session_token_file flag",
	"kafka.tls.key":                        "a secret written inline: use the key_file flag",
	"kafka.tls.ca":                         "a PEM block written inline: use the ca_file flag",
	"kafka.tls.cert":                       "a PEM block written inline: use the cert_file flag",
	"kafka.tls.ca_ref":                     "a secret-manager reference, written as in prometheus.yml",
	"kafka.tls.cert_ref":                   "a secret-manager reference, written as in prometheus.yml",
	"kafka.tls.key_ref":                    "a secret-manager reference, written as in prometheus.yml",
	"kafka.tls.min_version":                "a TLS version name, written as in prometheus.yml",
	"kafka.tls.max_version":                "a TLS version name, written as in prometheus.yml",
	"kafka.sasl.oauth.endpoint_params":     "a mapping",
	"kafka.sasl.oauth.extensions":          "a mapping",
	"alertmanager.static_configs":          "a list of target groups, written as in prometheus.yml",
	"alertmanager.<http_client_config>":    "Prometheus's HTTP client settings (tls_config, basic_auth, oauth2 ...), written as in prometheus.yml",
	"schema_registry.<http_client_config>": "Prometheus's HTTP client settings, written as in prometheus.yml",
}

// httpClientConfig is how settings paths name an inline HTTPClientConfig.
const httpClientConfig = "<http_client_config>"

var (
	httpClientConfigType = reflect.TypeOf(promconfig.HTTPClientConfig{})
	timeType             = reflect.TypeOf(time.Time{})
)

// FormerFlagNames maps a renamed flag's former name to its name now: the
// former keeps working.
var FormerFlagNames = map[string]string{
	"kafka.violations-topic": "kafka.violation-events-topic",
}

// BindFlags registers Flags on fs, or only those named in only. Each
// writes into cfg, whose current values are the defaults shown. Former
// names of renamed flags are accepted (FormerFlagNames).
func BindFlags(fs *pflag.FlagSet, cfg *Config, only ...string) {
	prev := fs.GetNormalizeFunc()
	fs.SetNormalizeFunc(func(f *pflag.FlagSet, name string) pflag.NormalizedName {
		if now, ok := FormerFlagNames[name]; ok {
			name = now
		}
		return prev(f, name)
	})
	for _, f := range Flags {
		if len(only) > 0 && !slices.Contains(only, f.Name) {
			continue
		}
		v, ok := field(reflect.ValueOf(cfg).Elem(), f.Path)
		if !ok {
			panic(fmt.Sprintf("config: flag %s names no field %s", f.Name, f.Path))
		}
		switch p := v.Addr().Interface().(type) {
		case pflag.Value: // a type of this package that parses itself (ByteSize)
			fs.Var(p, f.Name, f.Usage)
		case *string:
			fs.StringVar(p, f.Name, *p, f.Usage)
		case *[]string:
			fs.StringSliceVar(p, f.Name, *p, f.Usage)
		case *bool:
			fs.BoolVar(p, f.Name, *p, f.Usage)
		case *int:
			fs.IntVar(p, f.Name, *p, f.Usage)
		case *time.Duration:
			fs.DurationVar(p, f.Name, *p, f.Usage)
		case *[]float64:
			fs.Float64SliceVar(p, f.Name, *p, f.Usage)
		case *time.Time:
			fs.Var((*timeValue)(p), f.Name, f.Usage)
		default:
			if v.Kind() == reflect.String { // named string types (privacy.Mode)
				fs.Var(stringValue{v}, f.Name, f.Usage)
				continue
			}
			panic(fmt.Sprintf("config: flag %s: no flag type for %s", f.Name, v.Type()))
		}
	}
}

// FromFileAndFlags returns the configuration a command runs with: flagCfg
// (the Config BindFlags wrote into) when path is "", else the file at path
// with every flag given on fs laid over it.
func FromFileAndFlags(path string, fs *pflag.FlagSet, flagCfg Config) (Config, error) {
	if path == "" {
		return flagCfg, nil
	}
	fileCfg, err := Load(path)
	if err != nil {
		return Config{}, err
	}
	ApplyFlags(fs, &fileCfg, &flagCfg)
	return fileCfg, nil
}

// ApplyFlags copies onto dst every flag of Flags that was given on fs,
// taking its value from src (the Config BindFlags wrote into): flags
// given on the command line win over the file.
func ApplyFlags(fs *pflag.FlagSet, dst, src *Config) {
	for _, f := range Flags {
		if !fs.Changed(f.Name) {
			continue
		}
		to, _ := field(reflect.ValueOf(dst).Elem(), f.Path)
		from, _ := field(reflect.ValueOf(src).Elem(), f.Path)
		to.Set(from)
	}
}

// field finds the field at a YAML path below v, looking through inline
// structs.
func field(v reflect.Value, path string) (reflect.Value, bool) {
	name, rest, nested := strings.Cut(path, ".")
	f, ok := child(v, name)
	if !ok {
		return reflect.Value{}, false
	}
	if !nested {
		return f, true
	}
	return field(f, rest)
}

func child(v reflect.Value, name string) (reflect.Value, bool) {
	if v.Kind() != reflect.Struct {
		return reflect.Value{}, false
	}
	t := v.Type()
	for i := range t.NumField() {
		tag, opts, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		switch {
		case tag == name:
			return v.Field(i), true
		case tag == "" && strings.Contains(opts, "inline") && t.Field(i).Type != httpClientConfigType:
			if f, ok := child(v.Field(i), name); ok {
				return f, true
			}
		}
	}
	return reflect.Value{}, false
}

// settings lists the YAML path of every setting of t: the leaves of the
// structure, an inline HTTPClientConfig as one setting.
func settings(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case tag == "-" || !f.IsExported():
		case f.Type == httpClientConfigType:
			out = append(out, prefix+httpClientConfig)
		case tag == "" && strings.Contains(opts, "inline"):
			out = append(out, settings(f.Type, prefix)...)
		case f.Type.Kind() == reflect.Struct && f.Type != timeType:
			out = append(out, settings(f.Type, prefix+tag+".")...)
		default:
			out = append(out, prefix+tag)
		}
	}
	return out
}

// timeValue is a time.Time flag in RFC 3339.
type timeValue time.Time

func (t *timeValue) String() string {
	if time.Time(*t).IsZero() {
		return ""
	}
	return time.Time(*t).Format(time.RFC3339)
}

func (t *timeValue) Set(s string) error {
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return err
	}
	*t = timeValue(v)
	return nil
}

func (t *timeValue) Type() string { return "time" }

// stringValue is a flag for a named string type.
type stringValue struct{ v reflect.Value }

func (s stringValue) String() string {
	if !s.v.IsValid() {
		return ""
	}
	return s.v.String()
}
func (s stringValue) Set(x string) error { s.v.SetString(x); return nil }
func (s stringValue) Type() string       { return "string" }
