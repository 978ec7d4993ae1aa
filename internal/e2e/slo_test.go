package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/demo"
	"github.com/invmon/invmon/internal/kafkatest"
	"github.com/invmon/invmon/internal/sim"
	"github.com/invmon/invmon/internal/slo"
)

// sloScale runs the generated burn-rate rules sixty times faster than in
// production: the 1h window is a minute, 5m five seconds, 3d 72 minutes. The
// factors (14.4, 6, 3, 1) are shares of the budget and do not change, so the
// test checks the same alert logic in seconds that production runs in hours.
const sloScale = 1.0 / 60

// TestBurnRateAlertsInPrometheus produces the friday-rollback incident live
// (event time is wall time) to the real broker, with a real Prometheus
// scraping the monitor every second and evaluating the rules that `monitor
// slo rules` generates (windows scaled by sloScale). The page-level burn
// alert for the ledger rule must fire while the incident's violations are
// being detected; on clean traffic Prometheus must list no alert at all.
func TestBurnRateAlertsInPrometheus(t *testing.T) {
	brokers := kafkatest.Kafka(t)
	bin := buildMonitor(t)
	rulesFile := filepath.Join(t.TempDir(), "slo.rules.yml")
	out, err := exec.Command(bin, "slo", "rules", "--rule-files", "../../rules/*.yaml",
		"--window-scale", fmt.Sprint(sloScale), "--evaluation-interval", "1s", "--out", rulesFile).CombinedOutput()
	if err != nil {
		t.Fatalf("monitor slo rules: %v\n%s", err, out)
	}
	// 3600 payments at 40 a second: 90 seconds of traffic, the incident in
	// the middle 30. Its first missing ledger entries are judged 35 seconds
	// after it starts (the 30s deadline, 5s lateness); at 9 % of captures
	// failing, the scaled 1h window passes 14.4 × 0.1 % some ten seconds
	// later, while traffic still flows.
	const payments, rate = 3600, 40.0
	span := time.Duration(payments / rate * float64(time.Second))
	for _, scenario := range []string{"friday-rollback", "clean"} {
		t.Run(scenario, func(t *testing.T) {
			t.Parallel()
			addr := fmt.Sprintf("127.0.0.1:%d", kafkatest.FreePort(t))
			prom := kafkatest.StartPrometheus(t, kafkatest.PrometheusOptions{Targets: []string{addr}, RuleFiles: []string{rulesFile}})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			start := time.Now().Add(2 * time.Second) // demo.Run starts live traffic 2s ahead
			done := make(chan error, 1)
			go func() {
				_, err := demo.Run(ctx, demo.Options{
					Scenario: scenario, Seed: 11, Payments: payments, Rate: rate, Partitions: 4, Live: true,
					Brokers: kafkatest.Seeds(brokers), TopicPrefix: fmt.Sprintf("slo%d-", time.Now().UnixNano()),
					HTTPListen: addr, Timeout: 10 * time.Minute,
				})
				done <- err
			}()
			defer func() {
				cancel()
				<-done
			}()

			incidentFrom, incidentTo := start.Add(span/3), start.Add(2*span/3)
			// Watch until every capture's deadline has passed and been scraped
			// and evaluated (clean), or the incident's last violations are
			// judged (friday-rollback).
			until := start.Add(span + 45*time.Second)
			if scenario == "friday-rollback" {
				until = incidentTo.Add(45 * time.Second)
			}
			var paged time.Time
			seen := map[string]bool{}
			for time.Now().Before(until) && paged.IsZero() {
				select {
				case err := <-done:
					done <- err // for the deferred wait
					t.Fatalf("the demo ended while Prometheus was watching: %v", err)
				default:
				}
				alerts, err := prom.Alerts(ctx)
				if err != nil {
					t.Fatalf("prometheus: %v", err)
				}
				for _, a := range alerts {
					if !seen[a.String()] {
						seen[a.String()] = true
						t.Logf("%5.1fs after the traffic began: %s (value %s)", time.Since(start).Seconds(), a, a.Value)
					}
					if a.State == "firing" && a.Labels["alertname"] == slo.AlertName &&
						a.Labels["rule"] == sim.RuleCapturedPaymentHasLedgerEntry && a.Labels["severity"] == "page" {
						paged = time.Now()
					}
				}
				time.Sleep(250 * time.Millisecond)
			}
			// The rules had data: the monitor was scraped and the error ratio
			// recorded, so "no alert" below is a verdict, not an empty server.
			q := fmt.Sprintf(`max_over_time(%s5m{rule=%q}[10m])`, slo.ErrorRatioRecord, sim.RuleCapturedPaymentHasLedgerEntry)
			samples, err := prom.Query(context.Background(), q)
			if err != nil {
				t.Fatal(err)
			}
			if len(samples) != 1 {
				var state []string
				for _, dq := range []string{`max_over_time(up[10m])`, `sum by (rule) (max_over_time(invmon_checks_total[10m]))`, `sum(max_over_time(invmon_events_consumed_total[10m]))`} {
					got, err := prom.Query(context.Background(), dq)
					state = append(state, fmt.Sprintf("%s = %v (%v)", dq, got, err))
				}
				t.Fatalf("%s: %v; the rules never saw the monitor's counters:\n%s\nprometheus log:\n%s", q, samples, strings.Join(state, "\n"), prom.LogTail())
			}
			t.Logf("highest 5m (scaled: 5s) error ratio of %s: %.4f", sim.RuleCapturedPaymentHasLedgerEntry, samples[0].Value)

			switch scenario {
			case "friday-rollback":
				if paged.IsZero() {
					t.Fatalf("no page-level burn alert for %s by %s after the incident ended (alerts seen: %v)",
						sim.RuleCapturedPaymentHasLedgerEntry, 45*time.Second, seen)
				}
				// The first violations are judged 35s after the incident starts;
				// the page must come while the incident's violations are being
				// judged, not before them.
				if paged.Before(incidentFrom.Add(35 * time.Second)) {
					t.Errorf("paged %.1fs after the traffic began, before the incident's first deadline (%.1fs)",
						paged.Sub(start).Seconds(), incidentFrom.Add(35*time.Second).Sub(start).Seconds())
				}
				t.Logf("page fired %.1fs after the incident began (its violations are judged from 35s on)", paged.Sub(incidentFrom).Seconds())
			case "clean":
				if len(seen) != 0 {
					t.Errorf("clean traffic raised %d alert(s) in Prometheus: %v", len(seen), seen)
				}
			}
		})
	}
}
