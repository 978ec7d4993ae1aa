package alert

// One Tick of the reconcile loop: desired alerts from the open violations
// and conditions, reconciled with what was sent, the due ones sent to every
// Alertmanager, and the outcome recorded.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

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
	m.refreshAggregatesLocked(now)
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
	ready := m.readyLocked()
	current := make(map[string]bool, len(m.rules))
	for _, cr := range m.rules {
		name := cr.spec.Name
		current[name] = true
		agg, ok := m.aggs[name]
		if !ok {
			continue // not read yet: ready is false, nothing is resolved
		}
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

// readyLocked reports whether the rules and their open violations are
// known, so that a rule alert missing from the desired set may be resolved.
func (m *Manager) readyLocked() bool {
	if !m.rulesSet || !m.caughtUp {
		return false
	}
	for _, cr := range m.rules {
		if _, ok := m.aggs[cr.spec.Name]; !ok {
			return false
		}
	}
	return true
}

// refreshAggregatesLocked reads again, from the source of open violations,
// the aggregates of the rules observed to change, of rules not read yet,
// and of every rule each ResendInterval (what an Observe could have missed
// is then corrected within one resend). A rule whose read fails keeps its
// previous aggregate: a state read error must not resolve a page.
func (m *Manager) refreshAggregatesLocked(now time.Time) {
	if !m.rulesSet {
		return
	}
	full := m.refreshed.IsZero() || now.Sub(m.refreshed) >= m.cfg.ResendInterval
	complete := true
	current := make(map[string]bool, len(m.rules))
	for _, cr := range m.rules {
		name := cr.spec.Name
		current[name] = true
		if _, ok := m.aggs[name]; ok && !full && !m.stale[name] {
			continue
		}
		agg, err := readAggregate(m.source, name, cr.spec.Impact)
		if err != nil {
			m.logger.Error("cannot read open violations; keeping the rule's alert as it was", zap.String("rule", name), zap.Error(err))
			complete = false
			continue
		}
		m.aggs[name] = agg
		delete(m.stale, name)
	}
	for name := range m.aggs {
		if !current[name] {
			delete(m.aggs, name)
		}
	}
	for name := range m.stale {
		if !current[name] {
			delete(m.stale, name)
		}
	}
	if full && complete {
		m.refreshed = now
	}
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
	ready := m.readyLocked()
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
