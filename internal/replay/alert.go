package replay

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"sort"
	"time"

	"github.com/invmon/invmon/internal/alert"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/privacy"
	"github.com/invmon/invmon/internal/report"
)

// SourceLabel is the label that sets a replay's alerts apart from the live
// monitor's: alert identity is the label set, and without it a replay's page
// and the live monitor's alert for the same rule would be one alert that
// each side fires and resolves in turn.
const SourceLabel = "invmon_source"

// page sends, through the configured Alertmanagers, one alert per rule with
// findings still open at the end of the replay, with the live monitor's
// severity tiers and annotations plus the replay's run id, window and report.
// Resolved findings page nobody: they are already repaired. It is a single
// send: the alert's endsAt is now + 4 × resend_interval, after which
// Alertmanager resolves it; the report is the lasting record. The alert
// state lives in the replay's own database, so resuming a finished replay
// does not page twice within the resend interval.
func page(ctx context.Context, o Options, r *runner, rep *report.Report) ([]string, error) {
	cfg := alert.ConfigFrom(o.Config.Alertmanager)
	if len(cfg.URLs) == 0 {
		return nil, errors.New("replay: --alert needs alertmanager.urls (or static_configs) in the configuration")
	}
	cfg.Now = o.Now
	minimize, err := privacy.New(o.Config.Privacy)
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	cfg.Minimize = minimize
	// The findings are the complete set of open violations to page on.
	mgr, err := alert.NewManager(cfg, r.store.Namespace(joinstate.AlertNamespace), alert.Violations(r.open), nil, r.log.Named("alert"))
	if err != nil {
		return nil, fmt.Errorf("replay: alert manager: %w", err)
	}
	defer mgr.Close()
	htmlPath, err := filepath.Abs(filepath.Join(o.ReportDir, report.HTMLFile))
	if err != nil {
		htmlPath = filepath.Join(o.ReportDir, report.HTMLFile)
	}
	specs := alert.SpecsOf(r.rs)
	for i := range specs {
		specs[i].Labels = maps.Clone(specs[i].Labels)
		if specs[i].Labels == nil {
			specs[i].Labels = map[string]string{}
		}
		specs[i].Labels[SourceLabel] = "replay"
		specs[i].Annotations = maps.Clone(specs[i].Annotations)
		if specs[i].Annotations == nil {
			specs[i].Annotations = map[string]string{}
		}
		specs[i].Annotations["replay_run"] = rep.Run.ID
		specs[i].Annotations["replay_window"] = rep.Window.From.Format(time.RFC3339) + " to " + rep.Window.To.Format(time.RFC3339)
		specs[i].Annotations["replay_report"] = htmlPath
	}
	if err := mgr.SetRules(specs); err != nil {
		return nil, fmt.Errorf("replay: alert rules: %w", err)
	}
	mgr.CaughtUp()
	if err := mgr.Tick(ctx); err != nil {
		return nil, fmt.Errorf("replay: page: %w", err)
	}
	paged := map[string]bool{}
	for _, v := range r.open {
		paged[v.Rule] = true
	}
	out := make([]string, 0, len(paged))
	for name := range paged {
		out = append(out, name)
	}
	sort.Strings(out)
	return out, nil
}
