package demo

// Waiting on the monitor the demo runs, and reading its verdict back
// through the HTTP API.

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/invmon/invmon/internal/monitor"
	"github.com/invmon/invmon/internal/server"
	"github.com/invmon/invmon/internal/violation"
)

// waitRead waits until the monitor has handled records records.
func waitRead(ctx context.Context, m *monitor.Monitor, records int64) error {
	for m.Stats().Records < records {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d records: %w", records, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// waitBlind waits until the monitor reports stream as blind.
func waitBlind(ctx context.Context, m *monitor.Monitor, stream string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for !slices.Contains(m.BlindStreams(), stream) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("the monitor never reported %s as blind: %w", stream, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

func fetchViolations(ctx context.Context, addr string) ([]violation.Violation, error) {
	return server.FetchViolations(ctx, nil, "http://"+addr, url.Values{"state": {"all"}})
}

// delays computes per rule the event-time detection delay percentiles of
// violations judged at a deadline after their trigger (absence, state).
func delays(vs []violation.Violation, delay func(violation.Violation) time.Duration) map[string]Delay {
	per := map[string][]time.Duration{}
	for _, v := range vs {
		if v.Deadline.After(v.EventTime) {
			per[v.Rule] = append(per[v.Rule], delay(v))
		}
	}
	out := map[string]Delay{}
	for rule, ds := range per {
		slices.Sort(ds)
		out[rule] = Delay{P50Seconds: ds[len(ds)/2].Seconds(), P99Seconds: ds[(len(ds)*99)/100].Seconds(), N: len(ds)}
	}
	return out
}

// waitSettled waits until every produced record has been handled, durably,
// and every rule's watermark has passed watermark.
func waitSettled(ctx context.Context, m *monitor.Monitor, records int64, watermark time.Time) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		s := m.Stats()
		if s.Records >= records && s.CaughtUp && s.Durable && s.Partitions > 0 && s.MinWatermark.After(watermark) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("demo did not settle: %d of %d records handled, watermark %s: %w", s.Records, records, s.MinWatermark, ctx.Err())
		case <-t.C:
		}
	}
}

// fetchSLICounters scrapes the monitor's /metrics, as Prometheus would, and
// returns per rule invmon_checks_total and invmon_violations_total.
func fetchSLICounters(ctx context.Context, addr string) (map[string][2]int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	out := map[string][2]int{}
	for i, name := range []string{"invmon_checks_total", "invmon_violations_total"} {
		f := families[name]
		if f == nil {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "rule" {
					c := out[l.GetValue()]
					c[i] += int(m.GetCounter().GetValue())
					out[l.GetValue()] = c
				}
			}
		}
	}
	return out, nil
}
