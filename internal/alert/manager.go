package alert

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/privacy"
	"github.com/invmon/invmon/internal/quantity"
	"github.com/invmon/invmon/internal/violation"
)

// DefaultSeverity is the severity of a rule without a Severity function and
// of a condition without a severity label.
const DefaultSeverity = "page"

// Config configures a Manager.
type Config struct {
	// URLs are the Alertmanagers (base URLs, see NewClient). Every URL
	// receives every alert, independently: one being down delays nothing for
	// the others. Default none: alerts are tracked and persisted but not sent.
	URLs []string
	// ExternalURL is the monitor's own base URL, used to build each alert's
	// generatorURL: the rule's page in the console, <ExternalURL>/rules/<name>.
	// Default "": alerts carry no generatorURL.
	ExternalURL string
	// EvalInterval is how often Run calls Tick. Default 1s.
	EvalInterval time.Duration
	// ResendInterval is how often a firing or resolved alert is re-sent when
	// nothing about it changed; a firing alert's endsAt is
	// now + 4 × ResendInterval, so Alertmanager resolves it by itself only if
	// the monitor stays silent for that long. Default 1m.
	ResendInterval time.Duration
	// ResolvedRetention is how long a resolved alert keeps being re-sent
	// (every ResendInterval) before it is forgotten, so an Alertmanager that
	// missed the first resolution still learns it. Default 15m.
	ResolvedRetention time.Duration
	// ClientConfig configures the HTTP side: per-request timeout,
	// Prometheus's HTTP client configuration (TLS, basic auth,
	// authorization, OAuth2, proxy), and the back-off of one send.
	ClientConfig
	// Minimize shows customer ids and keys in annotations redacted or as
	// HMAC tokens, and amounts as bands (privacy settings). Default nil:
	// as they are.
	Minimize *privacy.Minimizer
	// Now is the clock. Default time.Now. Nothing in the manager reads the
	// wall clock except through it, so tests step time instead of sleeping.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.EvalInterval <= 0 {
		c.EvalInterval = time.Second
	}
	if c.ResendInterval <= 0 {
		c.ResendInterval = time.Minute
	}
	if c.ResolvedRetention <= 0 {
		c.ResolvedRetention = 15 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.ClientConfig = c.ClientConfig.withDefaults()
	return c
}

// RuleSpec is what the manager needs to know about one rule.
type RuleSpec struct {
	// Name is the rule's name; it becomes the alertname label.
	Name string
	// Labels are static labels added to the rule's alert. They are part of
	// the alert's identity, so they must not carry entity ids or amounts.
	// "alertname" and "severity" are reserved.
	Labels map[string]string
	// Annotations are added to the default annotations (summary,
	// description, runbook_url, open_violations, customers, total_impact).
	// A value may be a text/template over Aggregate, for example
	// "{{.Count}} payments without ledger entry"; it replaces the default of
	// the same name. A plain (template-free) summary or description leads
	// the generated one instead of replacing it, so the counts, total impact
	// and top entities are always there: "Captured payments without a ledger
	// entry: 3 open violations, …". Other plain values replace the default.
	Annotations map[string]string
	// RunbookURL becomes the runbook_url annotation. Default none.
	RunbookURL string
	// Impact is the unit of the rule's impact: amounts are rounded to its
	// precision and printed with its name ("1,500.00 USD"). The zero value
	// is a unit-less amount with two decimals; quantity.Count marks a rule
	// without impact.value, whose alerts state counts only.
	Impact quantity.Unit
	// Severity picks the tier from the rule's open violations. Nil means
	// DefaultSeverity ("page"). Returning "" means "no alert at this level".
	// If it fails, the alert keeps the severity it fires with, or pages when
	// it is not firing yet: a broken tier expression must not silence a rule.
	Severity func(Aggregate) (string, error)
}

// Validate reports what SetRules would reject in this rule: an empty name,
// invalid or reserved label names, annotation templates that do not parse.
// `monitor rules check` can call it to catch these before a deploy.
func (r RuleSpec) Validate() error {
	_, err := compileRule(r)
	return err
}

// Manager owns the alert lifecycle: it turns each rule's open violations and
// each active condition into one alert, fires, re-sends and resolves it, and
// persists what it did. Its methods are safe for concurrent use.
type Manager struct {
	cfg     Config
	now     func() time.Time
	clients []*Client
	store   store
	logger  *zap.Logger
	metrics managerMetrics

	tickMu sync.Mutex // serializes Tick; alerts changes only under it

	mu       sync.Mutex
	rules    []*compiledRule
	rulesSet bool
	// caughtUp is set once source holds every change made before the
	// manager started (CaughtUp).
	caughtUp bool
	// source is where open violations are read: the manager keeps one
	// Aggregate per rule, read again when Observe says the rule changed and
	// every ResendInterval, and no copy of the violations.
	source    OpenViolations
	aggs      map[string]Aggregate
	stale     map[string]bool
	refreshed time.Time
	conds     map[string]desiredAlert // fingerprint → active condition
	alerts    map[string]*alertState  // fingerprint → alert
	// refused remembers alerts an Alertmanager answered 4xx for, per URL, so
	// they are not re-posted every tick (they would be refused again) but
	// only when they change or at the next resend.
	refused map[string]map[string]sendRecord
	failing map[string]bool // Alertmanager → its last send failed (for logging transitions)
	// authLogged is when a refused login to an Alertmanager was last logged:
	// at error level on the first refusal and again every ResendInterval
	// while it lasts, so it is loud without a line per tick.
	authLogged map[string]time.Time
	// series remember which label values have gauges, to delete stale ones.
	ruleSeries   map[string]bool
	firingSeries map[[2]string]bool
}

type managerMetrics struct {
	openViolations *prometheus.GaugeVec
	openImpact     *prometheus.GaugeVec
	firing         *prometheus.GaugeVec
}

// NewManager returns a manager that sends to cfg.URLs, reads each rule's
// open violations from open when it builds the rule's alert (the monitor's
// group view), and keeps its own state in kv, loading what a previous run
// left there. Its metrics are registered on reg (nil: not registered).
//
// Rule alerts are evaluated only once SetRules has been called and open is
// known to be complete (CaughtUp). Until then the alerts loaded from kv
// keep firing (and are re-sent), so a restart does not resolve a page just
// because the open violations are not read yet. Conditions are persisted
// and need neither.
func NewManager(cfg Config, kv Store, open OpenViolations, reg prometheus.Registerer, logger *zap.Logger) (*Manager, error) {
	if kv == nil {
		return nil, errNoStore
	}
	if open == nil {
		return nil, errNoSource
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = zap.NewNop()
	}
	if cfg.ExternalURL != "" {
		u, err := url.Parse(cfg.ExternalURL)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return nil, fmt.Errorf("alert external url %q: want an absolute URL", cfg.ExternalURL)
		}
	}
	m := &Manager{
		cfg:          cfg,
		now:          cfg.Now,
		store:        store{kv: kv},
		logger:       logger,
		source:       open,
		aggs:         make(map[string]Aggregate),
		stale:        make(map[string]bool),
		conds:        make(map[string]desiredAlert),
		alerts:       make(map[string]*alertState),
		refused:      make(map[string]map[string]sendRecord),
		failing:      make(map[string]bool),
		authLogged:   make(map[string]time.Time),
		ruleSeries:   make(map[string]bool),
		firingSeries: make(map[[2]string]bool),
	}
	seen := make(map[string]bool)
	for _, u := range cfg.URLs {
		c, err := NewClient(u, cfg.ClientConfig, reg, logger)
		if err != nil {
			return nil, err
		}
		if seen[c.Name()] {
			return nil, fmt.Errorf("alertmanager %s listed twice", c.Name())
		}
		seen[c.Name()] = true
		m.clients = append(m.clients, c)
	}
	var err error
	if m.metrics, err = newManagerMetrics(reg); err != nil {
		return nil, err
	}
	if err := load(kv, stateKeyPrefix, func(key string, st *alertState) {
		if st.Sent == nil {
			st.Sent = make(map[string]sendRecord)
		}
		// Sends to Alertmanagers no longer configured say nothing about
		// the ones that are.
		maps.DeleteFunc(st.Sent, func(u string, _ sendRecord) bool { return !seen[u] })
		m.alerts[strings.TrimPrefix(key, stateKeyPrefix)] = st
	}); err != nil {
		return nil, fmt.Errorf("load alert state: %w", err)
	}
	if err := load(kv, condKeyPrefix, func(key string, d *desiredAlert) {
		m.conds[strings.TrimPrefix(key, condKeyPrefix)] = *d
	}); err != nil {
		return nil, fmt.Errorf("load alert conditions: %w", err)
	}
	m.updateFiringMetricLocked()
	if len(m.alerts) > 0 || len(m.conds) > 0 {
		logger.Info("loaded alert state", zap.Int("alerts", len(m.alerts)), zap.Int("conditions", len(m.conds)))
	}
	if len(m.clients) == 0 {
		logger.Warn("no alertmanager configured; alerts are tracked but not sent")
	}
	return m, nil
}

func newManagerMetrics(reg prometheus.Registerer) (managerMetrics, error) {
	m := managerMetrics{
		openViolations: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "invmon_open_violations",
			Help: "Open violations per rule.",
		}, []string{"rule"}),
		openImpact: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "invmon_open_impact",
			Help: "Sum of the impact of a rule's open violations.",
		}, []string{"rule"}),
		firing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "invmon_alerts_firing",
			Help: "Firing alerts per rule (or condition) and severity.",
		}, []string{"rule", "severity"}),
	}
	var err error
	if m.openViolations, err = register(reg, m.openViolations); err != nil {
		return m, err
	}
	if m.openImpact, err = register(reg, m.openImpact); err != nil {
		return m, err
	}
	if m.firing, err = register(reg, m.firing); err != nil {
		return m, err
	}
	return m, nil
}

// SetRules replaces the rule set. It checks every rule first (names unique
// and non-empty, label names valid and not reserved, annotation templates
// parse) and keeps the previous set if any fails. The alert of a rule that
// disappears is resolved on the next Tick.
func (m *Manager) SetRules(specs []RuleSpec) error {
	compiled := make([]*compiledRule, 0, len(specs))
	names := make(map[string]bool, len(specs))
	var errs []error
	for _, s := range specs {
		cr, err := compileRule(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if names[s.Name] {
			errs = append(errs, fmt.Errorf("rule %q: defined twice", s.Name))
			continue
		}
		names[s.Name] = true
		compiled = append(compiled, cr)
	}
	if len(errs) > 0 {
		return fmt.Errorf("alert rules not updated: %w", errors.Join(errs...))
	}
	m.mu.Lock()
	m.rules = compiled
	m.rulesSet = true
	m.mu.Unlock()
	m.logger.Info("alert rules updated", zap.Int("rules", len(compiled)))
	return nil
}

// CaughtUp tells the manager that its source of open violations holds
// every change made before the manager started. Before it no rule alert
// fires or resolves: a source still catching up may hold a violation open
// that another member has resolved since.
func (m *Manager) CaughtUp() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.caughtUp = true
	m.refreshed = time.Time{}
}

// Observe tells the manager that violations opened or resolved in its
// source: their rules are read again on the next Tick. Call it after the
// source reflects them. Observing a change again (a redelivery, a replay)
// costs a read and changes nothing.
func (m *Manager) Observe(vs ...violation.Violation) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, v := range vs {
		m.stale[v.Rule] = true
	}
}

// SetCondition fires (active) or resolves (!active) a synthetic alert that
// does not come from violations, such as InvariantMonitorBlind. Its identity
// is its label set: alertname=name, labels, and severity=DefaultSeverity
// unless labels set one. It follows the same lifecycle as rule alerts (sent
// on the next Tick, re-sent, resolved, retained) and is persisted, so it
// stays active across a restart until it is set inactive.
func (m *Manager) SetCondition(name string, labels, annotations map[string]string, active bool) error {
	if name == "" {
		return errors.New("alert condition with empty name")
	}
	if err := checkLabels(labels, map[string]bool{"alertname": true}); err != nil {
		return fmt.Errorf("alert condition %q: %w", name, err)
	}
	ls := maps.Clone(labels)
	if ls == nil {
		ls = make(map[string]string)
	}
	ls["alertname"] = name
	if ls["severity"] == "" {
		ls["severity"] = DefaultSeverity
	}
	fp := fingerprint(ls)

	m.mu.Lock()
	defer m.mu.Unlock()
	old, exists := m.conds[fp]
	if !active {
		if !exists {
			return nil
		}
		if err := m.store.write([]record{{key: condKeyPrefix + fp}}); err != nil {
			return fmt.Errorf("alert condition %q: %w", name, err)
		}
		delete(m.conds, fp)
		m.logger.Info("condition inactive", zap.String("alertname", name), zap.String("fingerprint", fp))
		return nil
	}
	d := desiredAlert{
		Kind:         kindCondition,
		Source:       name,
		Labels:       ls,
		Annotations:  maps.Clone(annotations),
		GeneratorURL: m.cfg.ExternalURL,
	}
	if exists && maps.Equal(old.Annotations, d.Annotations) {
		return nil
	}
	if err := m.store.write([]record{{key: condKeyPrefix + fp, value: d}}); err != nil {
		return fmt.Errorf("alert condition %q: %w", name, err)
	}
	m.conds[fp] = d
	if !exists {
		m.logger.Info("condition active", zap.String("alertname", name), zap.String("fingerprint", fp))
	}
	return nil
}

// Run calls Tick every EvalInterval until ctx is done. Tick logs its own
// failures; they never stop Run.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(m.cfg.EvalInterval)
	defer t.Stop()
	for {
		_ = m.Tick(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Close closes idle connections to the Alertmanagers. It does not close the
// Badger database, which belongs to the caller.
func (m *Manager) Close() error {
	for _, c := range m.clients {
		c.CloseIdleConnections()
	}
	return nil
}
