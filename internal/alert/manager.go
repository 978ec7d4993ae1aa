package alert

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
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

// Alert kinds: where a desired alert comes from.
const (
	kindRule      = "rule"
	kindCondition = "condition"
)

// desiredAlert is an alert that should be firing now.
type desiredAlert struct {
	Kind         string            `json:"kind"`
	Source       string            `json:"source"` // the rule or condition name
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

func (d desiredAlert) clone() desiredAlert {
	d.Labels = maps.Clone(d.Labels)
	d.Annotations = maps.Clone(d.Annotations)
	return d
}

// sendRecord is a successful (or refused) send of one version of an alert.
type sendRecord struct {
	At   time.Time `json:"at"`
	Hash string    `json:"hash"`
}

// alertState is one alert known to the manager, firing or resolved. It is
// persisted as is under alert/state/<fingerprint>.
type alertState struct {
	// Format is the version of this record's encoding (persistedFormat),
	// so a later change can migrate old records instead of misreading them.
	Format int `json:"format"`
	desiredAlert
	// StartsAt is when this firing episode began; it never changes while
	// the alert fires, so Alertmanager sees one alert, not a new one per send.
	StartsAt time.Time `json:"startsAt"`
	// ResolvedAt is zero while the alert fires.
	ResolvedAt time.Time `json:"resolvedAt,omitzero"`
	// Sent is the last successful send per Alertmanager (its Client.Name).
	Sent map[string]sendRecord `json:"sent,omitempty"`
}

func (st *alertState) firing() bool { return st.ResolvedAt.IsZero() }

func (st *alertState) clone() *alertState {
	c := *st
	c.desiredAlert = st.desiredAlert.clone()
	c.Sent = maps.Clone(st.Sent)
	return &c
}

// contentHash identifies what Alertmanager would store for this alert apart
// from a firing alert's moving endsAt: a change means "send now", not at the
// next resend.
func (st *alertState) contentHash() string {
	h := fnv.New64a()
	write := func(s string) {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	write(st.StartsAt.UTC().Format(time.RFC3339Nano))
	write(st.ResolvedAt.UTC().Format(time.RFC3339Nano))
	write(st.GeneratorURL)
	for _, k := range slices.Sorted(maps.Keys(st.Annotations)) {
		write(k)
		write(st.Annotations[k])
	}
	return strconv.FormatUint(h.Sum64(), 16)
}

func (st *alertState) payload(now time.Time, resend time.Duration) Alert {
	a := Alert{
		Labels:       st.Labels,
		Annotations:  st.Annotations,
		StartsAt:     st.StartsAt,
		GeneratorURL: st.GeneratorURL,
	}
	if st.firing() {
		a.EndsAt = now.Add(4 * resend)
	} else {
		a.EndsAt = st.ResolvedAt
	}
	return a
}

// fingerprint is Alertmanager's fingerprint of a label set, so the ids in
// logs and Badger keys match what Alertmanager shows.
func fingerprint(labels map[string]string) string {
	return model.Fingerprint(model.LabelsToSignature(labels)).String()
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
	seeded   bool
	open     map[string]map[string]violation.Violation // rule → violation id → violation
	conds    map[string]desiredAlert                   // fingerprint → active condition
	alerts   map[string]*alertState                    // fingerprint → alert
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

// NewManager returns a manager that sends to cfg.URLs and keeps its state in
// db under the "alert/" prefix, loading what a previous run left there. Its
// metrics are registered on reg (nil: not registered).
//
// Rule alerts are evaluated only once both SetRules and Seed have been
// called: until then the alerts loaded from db keep firing (and are
// re-sent), so a restart does not resolve a page just because the open
// violations are not loaded yet. Conditions are persisted and need neither.
func NewManager(cfg Config, db *badger.DB, reg prometheus.Registerer, logger *zap.Logger) (*Manager, error) {
	if db == nil {
		return nil, errNoDB
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
		store:        store{db: db},
		logger:       logger,
		open:         make(map[string]map[string]violation.Violation),
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
	if err := load(db, stateKeyPrefix, func(key string, st *alertState) {
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
	if err := load(db, condKeyPrefix, func(key string, d *desiredAlert) {
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

// Seed replaces the set of open violations with open, the store's view at
// start-up. Violations in open that are not in state Open are ignored. Call
// it once before the first Observe.
func (m *Manager) Seed(open []violation.Violation) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.open = make(map[string]map[string]violation.Violation)
	n := 0
	for _, v := range open {
		if v.State == violation.Open {
			m.addOpenLocked(v)
			n++
		}
	}
	m.seeded = true
	m.logger.Info("seeded open violations", zap.Int("open", n))
}

// Observe records violations that opened or resolved. Call it after the
// state write that made them durable. It is idempotent: observing the same
// violation again (a redelivery, a replay) changes nothing.
func (m *Manager) Observe(vs ...violation.Violation) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, v := range vs {
		switch v.State {
		case violation.Open:
			m.addOpenLocked(v)
		case violation.Resolved:
			if byID := m.open[v.Rule]; byID != nil {
				delete(byID, v.ID)
				if len(byID) == 0 {
					delete(m.open, v.Rule)
				}
			}
		default:
			m.logger.Warn("ignoring violation in unknown state",
				zap.String("rule", v.Rule), zap.String("id", v.ID), zap.String("state", string(v.State)))
		}
	}
}

func (m *Manager) addOpenLocked(v violation.Violation) {
	byID := m.open[v.Rule]
	if byID == nil {
		byID = make(map[string]violation.Violation)
		m.open[v.Rule] = byID
	}
	byID[v.ID] = v
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

// Tick evaluates every alert at the manager's clock and sends what is due:
//
//   - a rule with at least one open violation (and a non-empty severity)
//     fires; its startsAt is the time of the Tick that first saw it firing;
//   - an alert is sent to an Alertmanager at once when it is new or its
//     annotations changed, and otherwise every ResendInterval; a firing alert
//     with endsAt = now + 4 × ResendInterval, a resolved one with endsAt = its
//     resolution time;
//   - an alert whose rule has no open violation any more (or whose severity
//     changed: a new label set) is resolved, re-sent for ResolvedRetention,
//     then forgotten;
//   - a send that failed is retried on the next Tick, so alerts reach an
//     Alertmanager that was down once it is back.
//
// Sends to different Alertmanagers run concurrently; Tick returns when all
// are done, so an Alertmanager that hangs delays the next Tick for all of
// them, by at most Timeout × MaxAttempts plus the back-off waits. The error
// joins send and persistence failures (already logged).
func (m *Manager) Tick(ctx context.Context) error {
	m.tickMu.Lock()
	defer m.tickMu.Unlock()
	now := m.now()

	m.mu.Lock()
	desired := m.desiredLocked()
	recs := m.reconcileLocked(now, desired)
	batches := m.dueLocked(now)
	m.updateFiringMetricLocked()
	m.mu.Unlock()

	var errs []error
	// Persist before sending, so Alertmanager never sees a startsAt that a
	// crash would make us forget. A failed write does not stop the send:
	// paging now matters more than remembering it across a restart.
	if err := m.store.write(recs); err != nil {
		m.logger.Error("cannot persist alert state", zap.Error(err))
		errs = append(errs, err)
	}

	results := m.send(ctx, batches)

	m.mu.Lock()
	recs, sendErrs := m.recordLocked(ctx, now, batches, results)
	m.mu.Unlock()
	errs = append(errs, sendErrs...)
	if err := m.store.write(recs); err != nil {
		m.logger.Error("cannot persist alert sends", zap.Error(err))
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// desiredLocked computes the alerts that should fire now: the active
// conditions and, once rules and open violations are known, one alert per
// rule with open violations. It also refreshes the per-rule gauges.
func (m *Manager) desiredLocked() map[string]desiredAlert {
	desired := make(map[string]desiredAlert, len(m.conds)+len(m.rules))
	for fp, d := range m.conds {
		desired[fp] = d
	}
	ready := m.rulesSet && m.seeded
	current := make(map[string]bool, len(m.rules))
	for _, cr := range m.rules {
		name := cr.spec.Name
		current[name] = true
		agg := aggregate(name, cr.spec.Impact, m.open[name])
		m.metrics.openViolations.WithLabelValues(name).Set(float64(agg.Count))
		m.metrics.openImpact.WithLabelValues(name).Set(agg.Total)
		if !ready || agg.Count == 0 {
			continue
		}
		logger := m.logger.With(zap.String("rule", name))
		sev := m.severityLocked(cr, agg, logger)
		if sev == "" {
			continue
		}
		labels := maps.Clone(cr.labels)
		if labels == nil {
			labels = make(map[string]string, 2)
		}
		labels["alertname"] = name
		labels["severity"] = sev
		ann, errs := cr.expandAnnotations(minimized(agg, m.cfg.Minimize))
		for _, err := range errs {
			logger.Warn("annotation template failed; using its raw text", zap.Error(err))
		}
		desired[fingerprint(labels)] = desiredAlert{
			Kind:         kindRule,
			Source:       name,
			Labels:       labels,
			Annotations:  ann,
			GeneratorURL: m.generatorURL(name),
		}
	}
	for name := range m.ruleSeries {
		if !current[name] {
			m.metrics.openViolations.DeleteLabelValues(name)
			m.metrics.openImpact.DeleteLabelValues(name)
		}
	}
	m.ruleSeries = current
	return desired
}

func (m *Manager) severityLocked(cr *compiledRule, agg Aggregate, logger *zap.Logger) string {
	if cr.spec.Severity == nil {
		return DefaultSeverity
	}
	sev, err := callSeverity(cr.spec.Severity, agg)
	if err == nil {
		return sev
	}
	fallback := DefaultSeverity
	for _, st := range m.alerts {
		if st.Kind == kindRule && st.Source == cr.spec.Name && st.firing() {
			fallback = st.Labels["severity"]
		}
	}
	logger.Error("severity failed; keeping the current severity",
		zap.String("severity", fallback), zap.Error(err))
	return fallback
}

// callSeverity shields the manager from a panicking severity function: one
// rule's bug must not stop every other rule's alerts.
func callSeverity(fn func(Aggregate) (string, error), agg Aggregate) (sev string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("severity panicked: %v", r)
		}
	}()
	return fn(agg)
}

func (m *Manager) generatorURL(rule string) string {
	if m.cfg.ExternalURL == "" {
		return ""
	}
	// The rule's page in the console: its definition, its open violations
	// and their history. (The console links to the JSON API from there.)
	return strings.TrimRight(m.cfg.ExternalURL, "/") + "/rules/" + url.PathEscape(rule)
}

// reconcileLocked moves m.alerts towards desired and returns the records
// to persist.
func (m *Manager) reconcileLocked(now time.Time, desired map[string]desiredAlert) []record {
	ready := m.rulesSet && m.seeded
	var recs []record
	save := func(fp string, st *alertState) {
		recs = append(recs, record{key: stateKeyPrefix + fp, value: st.clone()})
	}
	for _, fp := range slices.Sorted(maps.Keys(desired)) {
		d := desired[fp]
		st, ok := m.alerts[fp]
		logger := m.logger.With(zap.String("alertname", d.Labels["alertname"]),
			zap.String("severity", d.Labels["severity"]), zap.String("fingerprint", fp))
		switch {
		case !ok:
			st = &alertState{Format: persistedFormat, desiredAlert: d, StartsAt: now, Sent: make(map[string]sendRecord)}
			m.alerts[fp] = st
			logger.Info("alert firing", zap.String("summary", d.Annotations["summary"]))
		case !st.firing():
			// A new firing episode of a recently resolved alert: a new
			// startsAt, and every Alertmanager must hear about it.
			st.desiredAlert = d
			st.StartsAt = now
			st.ResolvedAt = time.Time{}
			st.Sent = make(map[string]sendRecord)
			logger.Info("alert firing again", zap.String("summary", d.Annotations["summary"]))
		case !maps.Equal(st.Annotations, d.Annotations) || st.GeneratorURL != d.GeneratorURL:
			st.Annotations = d.Annotations
			st.GeneratorURL = d.GeneratorURL
			logger.Debug("alert annotations changed", zap.String("summary", d.Annotations["summary"]))
		default:
			continue
		}
		save(fp, st)
	}
	for _, fp := range slices.Sorted(maps.Keys(m.alerts)) {
		st := m.alerts[fp]
		if _, ok := desired[fp]; ok {
			continue
		}
		logger := m.logger.With(zap.String("alertname", st.Labels["alertname"]),
			zap.String("severity", st.Labels["severity"]), zap.String("fingerprint", fp))
		if st.firing() {
			if st.Kind == kindRule && !ready {
				continue // wait until the open violations are known
			}
			// Alertmanager refuses endsAt before startsAt; a clock stepped
			// backwards must not make a resolution unsendable.
			st.ResolvedAt = now
			if st.ResolvedAt.Before(st.StartsAt) {
				st.ResolvedAt = st.StartsAt
			}
			logger.Info("alert resolved", zap.Duration("fired_for", st.ResolvedAt.Sub(st.StartsAt)))
			save(fp, st)
			continue
		}
		if now.Sub(st.ResolvedAt) >= m.cfg.ResolvedRetention {
			delete(m.alerts, fp)
			for _, byFP := range m.refused {
				delete(byFP, fp)
			}
			recs = append(recs, record{key: stateKeyPrefix + fp})
			logger.Debug("resolved alert forgotten")
		}
	}
	return recs
}

type batch struct {
	client *Client
	fps    []string
	hashes []string
	alerts []Alert
}

// dueLocked returns, per Alertmanager, the alerts to send now.
func (m *Manager) dueLocked(now time.Time) []batch {
	fps := slices.Sorted(maps.Keys(m.alerts))
	hashes := make([]string, len(fps))
	for i, fp := range fps {
		hashes[i] = m.alerts[fp].contentHash()
	}
	var out []batch
	for _, c := range m.clients {
		b := batch{client: c}
		for i, fp := range fps {
			st := m.alerts[fp]
			if rec, ok := st.Sent[c.Name()]; ok && rec.Hash == hashes[i] && now.Sub(rec.At) < m.cfg.ResendInterval {
				continue
			}
			if rec, ok := m.refused[c.Name()][fp]; ok && rec.Hash == hashes[i] && now.Sub(rec.At) < m.cfg.ResendInterval {
				continue
			}
			b.fps = append(b.fps, fp)
			b.hashes = append(b.hashes, hashes[i])
			b.alerts = append(b.alerts, st.payload(now, m.cfg.ResendInterval))
		}
		if len(b.alerts) > 0 {
			out = append(out, b)
		}
	}
	return out
}

type sendResult struct {
	retry bool
	err   error
}

func (m *Manager) send(ctx context.Context, batches []batch) []sendResult {
	results := make([]sendResult, len(batches))
	var wg sync.WaitGroup
	for i, b := range batches {
		wg.Go(func() {
			retry, err := b.client.Notify(ctx, b.alerts...)
			results[i] = sendResult{retry: retry, err: err}
		})
	}
	wg.Wait()
	return results
}

// recordLocked notes successful sends (persisted, so a restart neither
// repeats nor forgets them) and refusals, and logs an Alertmanager going
// down or coming back once rather than on every tick.
func (m *Manager) recordLocked(ctx context.Context, now time.Time, batches []batch, results []sendResult) ([]record, []error) {
	var recs []record
	var errs []error
	for i, b := range batches {
		name := b.client.Name()
		res := results[i]
		logger := m.logger.With(zap.String("alertmanager", name))
		switch {
		case res.err == nil:
			for j, fp := range b.fps {
				st := m.alerts[fp]
				if st == nil {
					continue
				}
				st.Sent[name] = sendRecord{At: now, Hash: b.hashes[j]}
				delete(m.refused[name], fp)
				recs = append(recs, record{key: stateKeyPrefix + fp, value: st.clone()})
			}
			if m.failing[name] {
				logger.Info("alertmanager reachable again", zap.Int("alerts", len(b.alerts)))
			}
			m.failing[name] = false
			delete(m.authLogged, name)
			logger.Debug("alerts sent", zap.Int("alerts", len(b.alerts)))
		case !res.retry:
			// Refused (4xx, already logged with the response by the client):
			// try again only when the alert changes or at the next resend.
			if m.refused[name] == nil {
				m.refused[name] = make(map[string]sendRecord)
			}
			for j, fp := range b.fps {
				m.refused[name][fp] = sendRecord{At: now, Hash: b.hashes[j]}
			}
			errs = append(errs, res.err)
		case isAuthFailure(res.err):
			// Retried on every tick like an outage (a fixed secret file is
			// read on the next send), but never quiet: nothing pages until
			// the credentials are right.
			errs = append(errs, res.err)
			m.failing[name] = true
			if last, ok := m.authLogged[name]; !ok || now.Sub(last) >= m.cfg.ResendInterval {
				logger.Error("alertmanager refused the monitor's credentials; no alert reaches it until they are fixed",
					zap.Int("alerts", len(b.alerts)), zap.Error(res.err))
				m.authLogged[name] = now
			}
		default:
			errs = append(errs, res.err)
			if ctx.Err() != nil {
				continue
			}
			if !m.failing[name] {
				logger.Warn("cannot reach alertmanager; retrying on every tick",
					zap.Int("alerts", len(b.alerts)), zap.Error(res.err))
			} else {
				logger.Debug("alertmanager still unreachable", zap.Int("alerts", len(b.alerts)), zap.Error(res.err))
			}
			m.failing[name] = true
		}
	}
	return recs, errs
}

func isAuthFailure(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.AuthFailed()
}

// updateFiringMetricLocked sets invmon_alerts_firing from m.alerts and
// deletes the series of alerts no longer firing.
func (m *Manager) updateFiringMetricLocked() {
	counts := make(map[[2]string]int)
	for _, st := range m.alerts {
		if st.firing() {
			counts[[2]string{st.Source, st.Labels["severity"]}]++
		}
	}
	for k := range m.firingSeries {
		if _, ok := counts[k]; !ok {
			m.metrics.firing.DeleteLabelValues(k[0], k[1])
		}
	}
	m.firingSeries = make(map[[2]string]bool, len(counts))
	for k, n := range counts {
		m.metrics.firing.WithLabelValues(k[0], k[1]).Set(float64(n))
		m.firingSeries[k] = true
	}
}
