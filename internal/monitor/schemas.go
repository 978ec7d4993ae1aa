package monitor

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promconfig "github.com/prometheus/common/config"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/schema"
)

// RuleBrokenAlert is the alert the monitor raises when a schema registered
// at run time no longer type-checks a rule: a field it reads was removed or
// changed type. Every record under that schema would otherwise fail the rule
// into the dead-letter topic one by one.
const RuleBrokenAlert = "InvariantRuleBroken"

// NewRegistry builds the Schema Registry client of a configuration; see
// schema.NewFromHTTPConfig.
func NewRegistry(cfg promconfig.HTTPClientConfig, urls []string, reg prometheus.Registerer, cacheDir string) (*schema.Registry, error) {
	return schema.NewFromHTTPConfig(cfg, urls, reg, cacheDir)
}

// bindSchemas gives rs the registry's decoders and type-checks it against
// the latest schema of each stream's subject. A rule that does not check is
// an error, as a broken rule file is; a registry that cannot be reached is
// only logged: records wait for it anyway.
func (m *Monitor) bindSchemas(ctx context.Context, rs *rules.RuleSet) error {
	if len(rs.SchemaStreams()) == 0 {
		return nil
	}
	if m.registry == nil {
		s := rs.SchemaStreams()[0]
		return fmt.Errorf("stream %q reads format %s: configure schema_registry.urls", s.Name, s.Format)
	}
	if err := rs.BindFormats(m.registry.Formats()); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	errs, err := m.registry.TypeCheck(cctx, rs)
	if err != nil {
		if schema.IsUnavailable(err) {
			m.log.Warn("schema registry unreachable: rules are not type-checked now, and records wait for their schemas", zap.Error(err))
			return nil
		}
		return err
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// onSchema type-checks the rules reading topic against a schema seen there
// for the first time, and reports each rule it breaks (or no longer breaks)
// by metric, log and the InvariantRuleBroken alert.
func (m *Monitor) onSchema(topic string, id int, t *rules.EventType) {
	rs := m.rules.Load()
	types := map[string]rules.EventType{}
	var streams []string
	for _, s := range rs.Streams {
		if s.Topic == topic && t != nil {
			types[s.Name] = *t
			streams = append(streams, s.Name)
		}
	}
	if len(types) == 0 {
		return
	}
	errs := rs.TypeCheck(types)
	broken := map[string]bool{}
	for _, r := range rs.BrokenRules(errs) {
		broken[r] = true
	}
	m.brokenMu.Lock()
	defer m.brokenMu.Unlock()
	for _, s := range streams {
		for _, r := range rs.RulesReading(s) {
			key := r + "\x00" + s
			if broken[r] == m.broken[key] {
				continue
			}
			m.broken[key] = broken[r]
			m.ruleBroken.WithLabelValues(r, s).Set(b2f(broken[r]))
			var msgs []string
			for _, e := range errs {
				if e.Rule == r || e.Rule == "" {
					msgs = append(msgs, e.Error())
				}
			}
			ann := map[string]string{
				"summary": fmt.Sprintf("rule %s no longer type-checks against schema id %d of topic %s", r, id, topic),
				"description": "A field the rule reads was removed or changed type in a new schema version; " +
					"records under it fail the rule into the dead-letter topic. " + strings.Join(msgs, "; "),
			}
			if !broken[r] {
				ann["summary"] = fmt.Sprintf("rule %s type-checks again against schema id %d of topic %s", r, id, topic)
				delete(ann, "description")
				m.log.Info("rule type-checks again", zap.String("rule", r), zap.String("topic", topic), zap.Int("schema_id", id))
			} else {
				m.log.Error("rule broken by a schema change", zap.String("rule", r), zap.String("topic", topic),
					zap.Int("schema_id", id), zap.Error(errors.Join(asErrors(errs)...)))
			}
			if err := m.alerts.SetCondition(RuleBrokenAlert, map[string]string{"rule": r, "stream": s}, ann, broken[r]); err != nil {
				m.log.Warn("rule broken alert", zap.String("rule", r), zap.Error(err))
			}
		}
	}
}

// BrokenRules returns the rules a schema seen at run time broke, sorted.
func (m *Monitor) BrokenRules() []string {
	m.brokenMu.Lock()
	defer m.brokenMu.Unlock()
	set := map[string]bool{}
	for k, b := range m.broken {
		if b {
			set[strings.SplitN(k, "\x00", 2)[0]] = true
		}
	}
	out := make([]string, 0, len(set))
	for r := range set {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

func asErrors(es rules.Errors) []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
