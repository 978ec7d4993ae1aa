// Package monitor wires the monitor together: state, the consumer group,
// alerting and the HTTP server. `monitor run` and `monitor demo` both use it.
package monitor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/invmon/invmon/internal/alert"
	"github.com/invmon/invmon/internal/buildinfo"
	"github.com/invmon/invmon/internal/changes"
	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/console"
	"github.com/invmon/invmon/internal/consumer"
	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/kafkaconn"
	"github.com/invmon/invmon/internal/outbox"
	"github.com/invmon/invmon/internal/privacy"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/schema"
	"github.com/invmon/invmon/internal/server"
	"github.com/invmon/invmon/internal/slo"
	"github.com/invmon/invmon/internal/violation"
	"github.com/invmon/invmon/internal/webserve"
)

// Options are what a Monitor is built from.
type Options struct {
	Config config.Config
	// Rules, when set, are used instead of loading Config.RuleFiles.
	Rules *rules.RuleSet
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// TickInterval is how often idle inputs are re-evaluated. Default 1s.
	TickInterval time.Duration
	// InMemoryState keeps Badger in memory (the demo). Default false.
	InMemoryState bool
	// Logger. Default a no-op logger.
	Logger *zap.Logger
}

// Monitor is one running monitor process.
type Monitor struct {
	opts  Options
	log   *zap.Logger
	rules atomic.Pointer[rules.RuleSet]
	reg   *prometheus.Registry
	store *joinstate.Store
	// view is the group's violations, followed from the group's stream of
	// violation changes: what alerting and the API read.
	view     *joinstate.GroupView
	consumer *consumer.Consumer
	alerts   *alert.Manager
	outbox   *outbox.Publisher
	// kopts are the Kafka clients' TLS, SASL and health options.
	kopts       []kgo.Opt
	kafkaHealth *kafkaconn.Health
	listener    net.Listener
	web         *webserve.Server
	// minimize applies the privacy settings to every output.
	minimize *privacy.Minimizer

	reloadOK   prometheus.Gauge
	reloadTime prometheus.Gauge
	inputLag   *prometheus.GaugeVec
	// blind is the set of streams the InvariantMonitorBlind alert names.
	blindMu sync.Mutex
	blind   map[string]bool

	// registry decodes schema formats; nil without schema_registry.urls.
	registry *schema.Registry
	// broken holds, per rule and stream, whether the last new schema seen
	// on the stream breaks the rule (see onSchema).
	brokenMu   sync.Mutex
	broken     map[string]bool
	ruleBroken *prometheus.GaugeVec
}

// BlindAlert is the alert the monitor raises about itself when an input lags
// so far behind the others that absence verdicts on it are held.
const BlindAlert = "InvariantMonitorBlind"

// New opens the state, loads the rules, connects to Kafka and binds the HTTP
// listener. Nothing is consumed until Run.
func New(ctx context.Context, opts Options) (_ *Monitor, err error) {
	cfg := opts.Config
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := &Monitor{opts: opts, log: opts.Logger, reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildinfo.Collector())
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	// Kafka settings fail first: reading them touches no state.
	kopts, err := kafkaconn.Options(cfg.Kafka)
	if err != nil {
		return nil, err
	}
	// So do the web configuration and the privacy key: a broken file stops
	// the start before anything connects.
	if err := webserve.Validate(cfg.HTTP.WebConfigFile); err != nil {
		return nil, err
	}
	if m.minimize, err = privacy.New(cfg.Privacy); err != nil {
		return nil, err
	}
	// Every client reports its connection attempts to one Health, so a
	// broker that starts refusing the credentials makes the monitor unready.
	m.kafkaHealth = kafkaconn.NewHealth(m.log.Named("kafka"), m.reg)
	m.kopts = append(kopts[:len(kopts):len(kopts)], kgo.WithHooks(m.kafkaHealth))
	rs := opts.Rules
	if rs == nil {
		if rs, err = rules.LoadFiles(cfg.RuleFiles...); err != nil {
			return nil, err
		}
	}
	m.ruleBroken = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "invmon_rule_broken", Help: "1 when a schema seen at run time on the stream no longer type-checks the rule (see InvariantRuleBroken).",
	}, []string{"rule", "stream"})
	m.broken = map[string]bool{}
	m.reg.MustRegister(m.ruleBroken)
	// Fetched schemas are kept beside the state that holds values written
	// under them, so a restart reads that state without the registry.
	schemaCache := filepath.Join(cfg.StateDir, "schema-cache")
	if opts.InMemoryState {
		schemaCache = ""
	}
	if m.registry, err = NewRegistry(cfg.SchemaRegistry.HTTP, cfg.SchemaRegistry.URLs, m.reg, schemaCache); err != nil {
		return nil, err
	}
	if err := m.bindSchemas(ctx, rs); err != nil {
		return nil, err
	}
	if m.registry != nil {
		m.registry.OnSchema(m.onSchema)
	}
	m.rules.Store(rs)
	m.reloadOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "invmon_rules_last_reload_successful", Help: "1 when the last rule reload succeeded, 0 when it failed and the previous rules stayed in force.",
	})
	m.reloadTime = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "invmon_rules_last_reload_success_timestamp_seconds", Help: "When the rules were last loaded successfully.",
	})
	m.inputLag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "invmon_input_skew_seconds", Help: "How far a stream lags behind another input of its rules in event time, when beyond its max_lag; 0 otherwise.",
	}, []string{"stream"})
	m.blind = map[string]bool{}
	m.reg.MustRegister(m.reloadOK, m.reloadTime, m.inputLag)
	m.reloadOK.Set(1)
	m.reloadTime.Set(float64(opts.Now().Unix()))
	if m.store, err = joinstate.Open(cfg.StateDir, joinstate.Options{InMemory: opts.InMemoryState, CacheSize: int64(cfg.State.CacheSize)}, m.log); err != nil {
		return nil, err
	}
	if m.minimize.Active() {
		m.log.Info("privacy: customer ids, keys and trigger event ids are minimised in the API, alerts and violation events topic",
			zap.String("identifiers", string(m.minimize.Mode())), zap.Float64s("impact_bands", cfg.Privacy.ImpactBands))
	}
	acfg := alert.ConfigFrom(cfg.Alertmanager)
	acfg.ExternalURL = cfg.HTTP.ExternalURL
	acfg.Now = opts.Now
	acfg.Minimize = m.minimize
	// Alerting reads each rule's open violations from the group view,
	// whatever kafka.changelog says: the whole group's, as the stream of
	// violation changes has them (Run follows it). Nothing about a rule is
	// sent before the view has caught up with the stream.
	m.view = m.store.GroupView()
	if m.alerts, err = alert.NewManager(acfg, m.store.Namespace(joinstate.AlertNamespace), m.view, m.reg, m.log.Named("alert")); err != nil {
		return nil, err
	}
	if err = m.alerts.SetRules(alert.SpecsOf(rs)); err != nil {
		return nil, err
	}
	// A wrong password, CA or certificate stops the start here with the
	// broker's name and the cause, rather than in a client's retry loop.
	if err := kafkaconn.Check(ctx, cfg.Kafka.Brokers, kopts); err != nil {
		return nil, err
	}
	if cfg.Kafka.ViolationEventsTopic != "" {
		if err := m.store.EnableOutbox(); err != nil {
			return nil, err
		}
		m.outbox, err = outbox.New(ctx, outbox.Config{Brokers: cfg.Kafka.Brokers, Opts: m.kopts, Topic: cfg.Kafka.ViolationEventsTopic, Minimize: m.minimize}, m.store, m.log.Named("outbox"))
		if err != nil {
			return nil, err
		}
	}
	m.consumer, err = consumer.New(ctx, consumer.Config{
		Brokers:            cfg.Kafka.Brokers,
		Group:              cfg.Kafka.Group,
		ClientID:           cfg.Kafka.ClientID,
		DLQTopic:           cfg.Kafka.DLQTopic,
		InstanceID:         cfg.Kafka.InstanceID,
		Changelog:          cfg.Kafka.Changelog,
		TickInterval:       opts.TickInterval,
		ProduceTimeout:     cfg.Kafka.ProduceTimeout,
		MaxPollRecords:     cfg.Kafka.MaxPollRecords,
		TimeBounds:         engine.TimeBounds{Min: cfg.EventTime.Min, Max: cfg.EventTime.Max, MaxFuture: cfg.EventTime.MaxFuture},
		ViolationRetention: cfg.State.ViolationRetention,
		Opts:               m.kopts,
		Now:                opts.Now,
		Registerer:         m.reg,
		OnBlind:            m.onBlind,
	}, rs, m.store, engine.NewMetrics(m.reg), m.log.Named("consumer"))
	if err != nil {
		return nil, err
	}
	if cfg.HTTP.Listen != "" {
		if err := m.listen(cfg.HTTP, cfg.SLO); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// listen binds the HTTP listener and wraps every route of internal/server in
// the web configuration's TLS and authentication (only the health checks may
// stay open), so a route added there is protected like the others.
func (m *Monitor) listen(cfg config.HTTP, sloCfg config.SLO) error {
	var open []string
	if cfg.OpenHealthChecks {
		open = []string{"/healthz", "/readyz"}
	}
	handler := server.New(server.Sources{
		Sources: console.Sources{
			Store: m.view, Rules: m.Rules, Gatherer: m.reg,
			Blind: m.BlindStreams, Brokers: m.opts.Config.Kafka.Brokers, Minimize: m.minimize,
			SLO: func(ctx context.Context) map[string]slo.Status {
				return slo.Statuses(ctx, m.Rules(), sloCfg.PrometheusURL, nil)
			},
		},
		Ready: m.ready, NotReady: m.notReady,
	})
	var err error
	m.web, err = webserve.New(handler, webserve.Options{
		WebConfigFile: cfg.WebConfigFile, OpenPaths: open,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout, ReadTimeout: cfg.ReadTimeout,
		WriteTimeout: cfg.WriteTimeout, IdleTimeout: cfg.IdleTimeout, MaxHeaderBytes: cfg.MaxHeaderBytes,
		Logger: m.log,
	})
	if err != nil {
		return err
	}
	if m.listener, err = net.Listen("tcp", cfg.Listen); err != nil {
		return fmt.Errorf("http listen: %w", err)
	}
	sec := m.web.Security()
	if !sec.Authenticated() && !webserve.IsLoopback(m.listener.Addr()) {
		m.log.Warn("serving the API and /metrics without authentication on a non-loopback address: "+
			"anyone who can reach it reads payment keys, customer ids and amounts; "+
			"set http.web_config_file (--web.config.file) with basic_auth_users or client certificates, or listen on 127.0.0.1",
			zap.String("address", m.listener.Addr().String()))
	}
	m.log.Info("http server", zap.String("address", m.listener.Addr().String()), zap.Bool("tls", sec.TLS),
		zap.Bool("basic_auth", sec.BasicAuth), zap.Bool("client_certificates", sec.ClientCertificates),
		zap.Bool("open_health_checks", cfg.OpenHealthChecks))
	return nil
}

// ready: the group is joined, state is loaded, and no broker refuses the
// monitor's credentials.
func (m *Monitor) ready() bool { return m.consumer.Ready() && m.kafkaHealth.Err() == nil }

// notReady explains an unready monitor without naming brokers: /readyz may
// be open to unauthenticated probes. The log and the metric name them.
func (m *Monitor) notReady() string {
	if m.kafkaHealth.Err() != nil {
		return "not ready: a Kafka broker refuses the monitor's credentials (see the log and invmon_kafka_credentials_rejected)"
	}
	return ""
}

// HTTPAddr returns the address the HTTP server listens on ("" if none).
func (m *Monitor) HTTPAddr() string {
	if m.listener == nil {
		return ""
	}
	return m.listener.Addr().String()
}

// Stats returns the consumer's progress.
func (m *Monitor) Stats() consumer.Stats { return m.consumer.Stats() }

// Gatherer is the monitor's metrics registry, what /metrics serves.
func (m *Monitor) Gatherer() prometheus.Gatherer { return m.reg }

// Violations lists the durable violations of the partitions this member
// evaluated (its state, not the group view the API serves).
func (m *Monitor) Violations(f joinstate.Filter) ([]violation.Violation, error) {
	return m.store.Violations(f)
}

// GroupViolations lists the group's violations as this member's group view
// holds them: what the API serves and alerting aggregates.
func (m *Monitor) GroupViolations(f joinstate.Filter) ([]violation.Violation, error) {
	return m.view.Violations(f)
}

// Rules returns the rules in force.
func (m *Monitor) Rules() *rules.RuleSet { return m.rules.Load() }

// Run consumes, evaluates and alerts until ctx is done or a component fails.
func (m *Monitor) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return m.consumer.Run(ctx) })
	g.Go(func() error {
		err := m.alerts.Run(ctx)
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	})
	g.Go(func() error { m.store.RunGC(ctx, 5*time.Minute); return nil })
	// Every member follows the whole group's violation changes into its
	// group view, and tells alerting what changed.
	g.Go(func() error {
		return changes.Follow(ctx, changes.FollowConfig{
			Brokers: m.opts.Config.Kafka.Brokers, Opts: m.kopts, Group: m.opts.Config.Kafka.Group,
			View: m.view, Retention: m.opts.Config.State.ViolationRetention, Now: m.opts.Now,
			Subscribers: []changes.Subscriber{m.alerts}, Log: m.log.Named("changes"),
		})
	})
	if m.outbox != nil {
		g.Go(func() error { return m.outbox.Run(ctx) })
	}
	if m.listener != nil {
		g.Go(func() error {
			if err := m.web.Serve(m.listener); err != nil {
				return fmt.Errorf("http server: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return m.web.Shutdown(sctx)
		})
	}
	return g.Wait()
}

// Close releases everything New acquired. Call it after Run returns.
func (m *Monitor) Close() {
	if m.consumer != nil {
		m.consumer.Close()
	}
	if m.outbox != nil {
		m.outbox.Close()
	}
	if m.alerts != nil {
		if err := m.alerts.Close(); err != nil {
			m.log.Warn("close alerts", zap.Error(err))
		}
	}
	if m.listener != nil {
		_ = m.listener.Close()
	}
	if m.store != nil {
		if err := m.store.Close(); err != nil {
			m.log.Warn("close state", zap.Error(err))
		}
	}
}

// FlushAlerts evaluates and sends the alerts now, instead of at the next tick.
func (m *Monitor) FlushAlerts(ctx context.Context) error { return m.alerts.Tick(ctx) }

// Reload reads the rule files again and, when every file is valid and the
// topics are co-partitioned, swaps the new rules in. On any failure the rules
// in force keep running and invmon_rules_last_reload_successful drops to 0.
func (m *Monitor) Reload(ctx context.Context) error {
	err := m.reload(ctx)
	if err != nil {
		m.reloadOK.Set(0)
		m.log.Error("rule reload failed; the previous rules stay in force", zap.Error(err))
		return err
	}
	m.reloadOK.Set(1)
	m.reloadTime.Set(float64(m.opts.Now().Unix()))
	rs := m.rules.Load()
	m.log.Info("rules reloaded", zap.Int("rules", len(rs.Rules)), zap.String("version", rs.Version))
	return nil
}

func (m *Monitor) reload(ctx context.Context) error {
	rs, err := rules.LoadFiles(m.opts.Config.RuleFiles...)
	if err != nil {
		return err
	}
	if err := m.bindSchemas(ctx, rs); err != nil {
		return err
	}
	specs := alert.SpecsOf(rs)
	for _, s := range specs {
		if err := s.Validate(); err != nil {
			return err
		}
	}
	if err := m.consumer.SetRules(ctx, rs); err != nil {
		return err
	}
	if err := m.alerts.SetRules(specs); err != nil {
		return err
	}
	m.rules.Store(rs)
	return nil
}

// onBlind raises one InvariantMonitorBlind alert per lagging stream, and
// resolves it when the stream catches up.
func (m *Monitor) onBlind(lags map[string]time.Duration) {
	m.blindMu.Lock()
	defer m.blindMu.Unlock()
	for name := range m.rules.Load().Streams {
		lag, blind := lags[name]
		m.inputLag.WithLabelValues(name).Set(lag.Seconds())
		if blind == m.blind[name] {
			continue
		}
		m.blind[name] = blind
		ann := map[string]string{
			"summary": fmt.Sprintf("invmon cannot see stream %s: it lags %s behind another input of its rules", name, lag.Round(time.Second)),
			"description": "Absence verdicts that depend on this stream are held until it catches up, " +
				"so a stalled producer is not reported as thousands of missing events. Check the producer of its topic.",
		}
		if !blind {
			ann["summary"] = fmt.Sprintf("invmon sees stream %s again", name)
		}
		if err := m.alerts.SetCondition(BlindAlert, map[string]string{"stream": name}, ann, blind); err != nil {
			m.log.Warn("blind alert", zap.String("stream", name), zap.Error(err))
		}
		m.log.Warn("input blindness changed", zap.String("stream", name), zap.Bool("blind", blind), zap.Duration("lag", lag))
	}
}

// BlindStreams returns the streams the monitor currently reports as blind.
func (m *Monitor) BlindStreams() []string {
	m.blindMu.Lock()
	defer m.blindMu.Unlock()
	var out []string
	for s, b := range m.blind {
		if b {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}
