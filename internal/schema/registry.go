// Package schema decodes record values in the Confluent wire format (magic
// byte 0, a 4-byte schema id, for Protobuf the message-index list, then the
// payload) with schemas fetched from a Schema Registry, and translates those
// schemas into types that rule expressions are checked against.
//
// Avro records and Protobuf messages become the same `event` CEL sees for
// JSON: a map from field name to value, with the mapping documented in
// docs/rules.md. Schemas are fetched once per id and cached; a registry that
// cannot be reached yields errors wrapping rules.ErrSchemaUnavailable, which
// the consumer retries rather than dead-letter.
package schema

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promconfig "github.com/prometheus/common/config"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/invmon/invmon/internal/rules"
)

// Reasons a value is poison; they label dead letters like the JSON ones.
const (
	ReasonBadMagic      = "bad_magic_byte"
	ReasonUnknownSchema = "unknown_schema_id"
	ReasonMalformed     = "malformed_value"
	ReasonWrongFormat   = "wrong_schema_type"
)

// PoisonError says why a value cannot be decoded under its schema. It is the
// record's fault: the consumer dead-letters it with Reason.
type PoisonError struct {
	reason string
	err    error
}

func (e *PoisonError) Error() string { return e.err.Error() }
func (e *PoisonError) Unwrap() error { return e.err }

// Reason labels the dead letter and the decode-error metric.
func (e *PoisonError) Reason() string { return e.reason }

func poison(reason, format string, args ...any) error {
	return &PoisonError{reason: reason, err: fmt.Errorf(format, args...)}
}

// Config configures the registry client.
type Config struct {
	// URLs are the registry's base URLs (for Apicurio, ending in
	// /apis/ccompat/v7); each request tries them in order. Required.
	URLs []string
	// HTTPClient sends the requests: TLS and authentication are configured
	// on it. Default: a client with a 10s timeout.
	HTTPClient *http.Client
	// Registerer receives the registry metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// CacheDir, when set, keeps every schema fetched (with its references)
	// on disk, per registry, and reads it from there first: a schema id
	// never changes meaning, and a restarted monitor then decodes the
	// values in its state (lookups, pending state checks) without the
	// registry. Default none.
	CacheDir string
}

// Registry fetches schemas by id, caches them for good (a schema id never
// changes meaning), and decodes values with them. It is safe for concurrent
// use.
type Registry struct {
	cl       *sr.Client
	hc       *http.Client
	cacheDir string

	mu    sync.Mutex
	cache map[int]*cached
	// onSchema is called once for every schema id first seen on a topic.
	onSchema func(topic string, id int, t *rules.EventType)
	seen     map[topicID]bool

	fetches  *prometheus.CounterVec
	failures prometheus.Counter
}

type topicID struct {
	topic string
	id    int
}

// cached is a fetched schema, ready to decode.
type cached struct {
	ready chan struct{} // closed when the fetch is done
	dec   valueDecoder
	err   error
}

// valueDecoder decodes the payload that follows the framing.
type valueDecoder interface {
	format() string
	decode(payload []byte, index []int) (rules.Fields, error)
	eventType(index []int) (*rules.EventType, error)
}

// New returns a registry client.
func New(cfg Config) (*Registry, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("schema registry: no URLs")
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	cl, err := sr.NewClient(sr.URLs(cfg.URLs...), sr.HTTPClient(hc))
	if err != nil {
		return nil, fmt.Errorf("schema registry client: %w", err)
	}
	r := &Registry{
		cl:       cl,
		hc:       hc,
		cacheDir: cacheDirOf(cfg),
		cache:    map[int]*cached{},
		seen:     map[topicID]bool{},
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "invmon_schema_fetches_total", Help: "Schemas fetched from the Schema Registry, by result (ok, not_found, unavailable).",
		}, []string{"result"}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(r.fetches)
	}
	return r, nil
}

// NewFromHTTPConfig builds a registry client from Prometheus's HTTP client
// settings (TLS, basic auth, authorization, *_file secrets), as the
// configuration's schema_registry block gives them; nil when urls is empty.
// reg receives its metrics (nil: none); cacheDir, when set, keeps fetched
// schemas on disk (see Config.CacheDir).
func NewFromHTTPConfig(cfg promconfig.HTTPClientConfig, urls []string, reg prometheus.Registerer, cacheDir string) (*Registry, error) {
	if len(urls) == 0 {
		return nil, nil
	}
	hc, err := promconfig.NewClientFromConfig(cfg, "schema_registry")
	if err != nil {
		return nil, fmt.Errorf("schema_registry: %w", err)
	}
	hc.Timeout = 10 * time.Second
	return New(Config{URLs: urls, HTTPClient: hc, Registerer: reg, CacheDir: cacheDir})
}

// Close releases the client's idle connections; the Registry must not be
// used afterwards.
func (r *Registry) Close() { r.hc.CloseIdleConnections() }

// Client returns the underlying franz-go registry client.
func (r *Registry) Client() *sr.Client { return r.cl }

// OnSchema sets a function called, from the decoding goroutine, the first
// time a schema id is seen on a topic, with the type that schema gives the
// topic's events: where the monitor checks its rules against a schema that
// changed at run time. Set it before decoding starts.
func (r *Registry) OnSchema(fn func(topic string, id int, t *rules.EventType)) { r.onSchema = fn }

// Formats returns the value decoders by format name, for
// rules.RuleSet.BindFormats.
func (r *Registry) Formats() map[string]rules.ValueFormat {
	return map[string]rules.ValueFormat{
		rules.FormatAvro:       format{r, rules.FormatAvro},
		rules.FormatProtobuf:   format{r, rules.FormatProtobuf},
		rules.FormatJSONSchema: format{r, rules.FormatJSONSchema},
	}
}

// format decodes one format's values; a value framed with a schema of
// another type is poison.
type format struct {
	r    *Registry
	name string
}

var header sr.ConfluentHeader

// DecodeValue implements rules.ValueFormat.
func (f format) DecodeValue(topic string, value []byte) (rules.Fields, error) {
	if len(value) < 5 || value[0] != 0 {
		return nil, poison(ReasonBadMagic, "%s value without the Confluent framing (magic byte 0 and a schema id)", f.name)
	}
	id, rest, err := header.DecodeID(value)
	if err != nil {
		return nil, poison(ReasonBadMagic, "%s value: %v", f.name, err)
	}
	dec, err := f.r.schema(id)
	if err != nil {
		return nil, err
	}
	if dec.format() != f.name {
		return nil, poison(ReasonWrongFormat, "schema id %d is %s, the stream reads %s", id, dec.format(), f.name)
	}
	var index []int
	if f.name == rules.FormatProtobuf {
		if index, rest, err = header.DecodeIndex(rest, 64); err != nil {
			return nil, poison(ReasonMalformed, "protobuf message index: %v", err)
		}
	}
	if f.r.onSchema != nil {
		f.r.firstSight(topic, id, dec, index)
	}
	fields, err := dec.decode(rest, index)
	if err != nil {
		return nil, &PoisonError{reason: ReasonMalformed, err: fmt.Errorf("%s value under schema id %d: %w", f.name, id, err)}
	}
	return fields, nil
}

func (r *Registry) firstSight(topic string, id int, dec valueDecoder, index []int) {
	k := topicID{topic, id}
	r.mu.Lock()
	seen := r.seen[k]
	r.seen[k] = true
	r.mu.Unlock()
	if seen {
		return
	}
	t, err := dec.eventType(index)
	if err != nil {
		t = nil // reported by the callback as unknown
	}
	if t != nil {
		t.Source = "schema id " + strconv.Itoa(id)
	}
	r.onSchema(topic, id, t)
}

// schema returns the decoder of schema id, fetching it on first use. Fetch
// failures other than "not found" are not cached: the next record tries
// again.
func (r *Registry) schema(id int) (valueDecoder, error) {
	r.mu.Lock()
	c := r.cache[id]
	if c != nil {
		r.mu.Unlock()
		<-c.ready
		return c.dec, c.err
	}
	c = &cached{ready: make(chan struct{})}
	r.cache[id] = c
	r.mu.Unlock()

	c.dec, c.err = r.fetch(context.Background(), id)
	if c.err != nil && !isPoison(c.err) {
		r.mu.Lock()
		delete(r.cache, id)
		r.mu.Unlock()
	}
	close(c.ready)
	return c.dec, c.err
}

func isPoison(err error) bool {
	var p *PoisonError
	return errors.As(err, &p)
}

func (r *Registry) fetch(ctx context.Context, id int) (valueDecoder, error) {
	if stored, ok := r.readCache(id); ok {
		if dec, err := build(stored); err == nil {
			r.fetches.WithLabelValues("disk").Inc()
			return dec, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	s, err := r.cl.SchemaByID(ctx, id)
	if err != nil {
		if notFound(err) {
			r.fetches.WithLabelValues("not_found").Inc()
			return nil, poison(ReasonUnknownSchema, "schema id %d is not in the registry", id)
		}
		r.fetches.WithLabelValues("unavailable").Inc()
		return nil, fmt.Errorf("fetch schema id %d: %w: %w", id, rules.ErrSchemaUnavailable, err)
	}
	resolved, err := r.resolve(ctx, s)
	var dec valueDecoder
	if err == nil {
		dec, err = build(resolved)
	}
	if err != nil {
		if isPoison(err) || !errors.Is(err, rules.ErrSchemaUnavailable) {
			r.fetches.WithLabelValues("not_found").Inc()
			return nil, &PoisonError{reason: ReasonUnknownSchema, err: fmt.Errorf("schema id %d: %w", id, err)}
		}
		r.fetches.WithLabelValues("unavailable").Inc()
		return nil, err
	}
	r.writeCache(id, resolved)
	r.fetches.WithLabelValues("ok").Inc()
	return dec, nil
}

// notFound reports whether the registry answered that the schema does not
// exist: the record names a schema nobody registered, which is poison.
// Everything else (refused connections, timeouts, 5xx, 401) is an outage.
func notFound(err error) bool {
	var re *sr.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode == http.StatusNotFound
	}
	return false
}

// compile builds the decoder of a registered schema, fetching its
// references.
func (r *Registry) compile(ctx context.Context, s sr.Schema) (valueDecoder, error) {
	resolved, err := r.resolve(ctx, s)
	if err != nil {
		return nil, err
	}
	return build(resolved)
}

// resolved is a schema with the texts of everything it references: all a
// decoder is built from, and what the disk cache keeps.
type resolved struct {
	Type       sr.SchemaType `json:"type"`
	Schema     string        `json:"schema"`
	References []reference   `json:"references,omitempty"`
}

// resolve fetches the references of s.
func (r *Registry) resolve(ctx context.Context, s sr.Schema) (resolved, error) {
	refs, err := r.references(ctx, s.References, map[string]bool{})
	if err != nil {
		return resolved{}, err
	}
	return resolved{Type: s.Type, Schema: s.Schema, References: refs}, nil
}

func build(s resolved) (valueDecoder, error) {
	switch s.Type {
	case sr.TypeAvro:
		return newAvro(s.Schema, s.References)
	case sr.TypeProtobuf:
		return newProtobuf(s.Schema, s.References)
	case sr.TypeJSON:
		return jsonSchema{}, nil
	}
	return nil, fmt.Errorf("schema type %s is not supported", s.Type)
}

// reference is one referenced schema, by the name the referring schema
// uses for it (an import path for Protobuf, a type name for Avro).
type reference struct {
	Name string `json:"name"`
	Text string `json:"text"`
}

// references fetches refs and, depth first, what they reference.
func (r *Registry) references(ctx context.Context, refs []sr.SchemaReference, seen map[string]bool) ([]reference, error) {
	var out []reference
	for _, ref := range refs {
		if seen[ref.Name] {
			continue
		}
		seen[ref.Name] = true
		ss, err := r.cl.SchemaByVersion(ctx, ref.Subject, ref.Version)
		if err != nil {
			if notFound(err) {
				return nil, fmt.Errorf("reference %q (subject %q version %d) is not in the registry", ref.Name, ref.Subject, ref.Version)
			}
			return nil, fmt.Errorf("fetch reference %q: %w: %w", ref.Name, rules.ErrSchemaUnavailable, err)
		}
		deeper, err := r.references(ctx, ss.References, seen)
		if err != nil {
			return nil, err
		}
		out = append(out, deeper...)
		out = append(out, reference{Name: ref.Name, Text: ss.Schema.Schema})
	}
	return out, nil
}

// Latest returns the type the latest schema of subject gives events, and the
// schema's version; rules are type-checked against it at start-up and by
// `monitor rules check --schema-registry`.
func (r *Registry) Latest(ctx context.Context, subject string) (*rules.EventType, error) {
	ss, err := r.cl.SchemaByVersion(ctx, subject, -1)
	if err != nil {
		return nil, fmt.Errorf("latest schema of subject %q: %w", subject, err)
	}
	dec, err := r.compile(ctx, ss.Schema)
	if err != nil {
		return nil, fmt.Errorf("subject %q version %d: %w", subject, ss.Version, err)
	}
	t, err := dec.eventType(nil)
	if err != nil {
		return nil, fmt.Errorf("subject %q version %d: %w", subject, ss.Version, err)
	}
	if t == nil {
		return nil, nil
	}
	t.Source = fmt.Sprintf("subject %q version %d", subject, ss.Version)
	return t, nil
}

// TypeCheck checks rs against the latest schema of every stream with a
// Schema Registry format. It returns the located type errors (nil when all
// check) or an error when a schema cannot be fetched.
func (r *Registry) TypeCheck(ctx context.Context, rs *rules.RuleSet) (rules.Errors, error) {
	types := map[string]rules.EventType{}
	for _, s := range rs.SchemaStreams() {
		t, err := r.Latest(ctx, s.Subject)
		if err != nil {
			return nil, fmt.Errorf("stream %q: %w", s.Name, err)
		}
		if t != nil {
			types[s.Name] = *t
		}
	}
	return rs.TypeCheck(types), nil
}

// IsUnavailable reports whether err is a registry outage rather than an
// answer: a refused connection, a timeout, a 5xx.
func IsUnavailable(err error) bool {
	if errors.Is(err, rules.ErrSchemaUnavailable) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var re *sr.ResponseError
	return errors.As(err, &re) && re.StatusCode >= 500
}

// cacheDirOf is the disk cache of one registry: ids are per registry, so
// the directory is named after the first URL.
func cacheDirOf(cfg Config) string {
	if cfg.CacheDir == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(cfg.URLs[0]))
	return filepath.Join(cfg.CacheDir, hex.EncodeToString(sum[:6]))
}

func (r *Registry) cachePath(id int) string {
	return filepath.Join(r.cacheDir, strconv.Itoa(id)+".json")
}

func (r *Registry) readCache(id int) (resolved, bool) {
	if r.cacheDir == "" {
		return resolved{}, false
	}
	b, err := os.ReadFile(r.cachePath(id))
	if err != nil {
		return resolved{}, false
	}
	var s resolved
	if err := json.Unmarshal(b, &s); err != nil {
		return resolved{}, false
	}
	return s, true
}

// writeCache keeps s on disk; a failure only costs a fetch after restart.
func (r *Registry) writeCache(id int, s resolved) {
	if r.cacheDir == "" {
		return
	}
	b, err := json.Marshal(s)
	if err != nil {
		return
	}
	if err := os.MkdirAll(r.cacheDir, 0o755); err != nil {
		return
	}
	tmp := r.cachePath(id) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return
	}
	_ = os.Rename(tmp, r.cachePath(id))
}
