package deploycheck

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/invmon/invmon/internal/demo"
)

const dashboardFile = "../../deploy/grafana/invmon.json"

// dashboardQueries returns every PromQL expression of the dashboard: each
// panel's targets (rows nest panels) and the template variables' queries.
func dashboardQueries(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	out := map[string]string{}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out[p.Title+" "+tg.RefID] = tg.Expr
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	// label_values(METRIC, label) queries name a metric too.
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Fatalf("variable %s: query %q is not label_values(selector, label)", v.Name, q.Query)
		}
		out["variable "+v.Name] = m[1]
	}
	return out
}

type panel struct {
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// grafanaVariables are the dashboard's variables as Grafana substitutes them
// before sending a query.
var grafanaVariables = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$job", ".*")

// metricNames parses expr with the Prometheus parser and returns the metric
// names its selectors name.
func metricNames(t *testing.T, where, expr string) []string {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(grafanaVariables.Replace(expr))
	if err != nil {
		t.Errorf("%s: %q does not parse: %v", where, expr, err)
		return nil
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		if name == "" {
			t.Errorf("%s: a selector without a metric name in %q", where, expr)
		}
		names = append(names, name)
		return nil
	})
	return names
}

// TestDashboard parses every PromQL expression of deploy/grafana/invmon.json
// and checks that every metric it names is exported by a running monitor:
// the demo's, after an incident with poison records (so the labelled series
// of violations, dead letters and detection delays exist).
func TestDashboard(t *testing.T) {
	want := map[string][]string{}
	for where, expr := range dashboardQueries(t) {
		for _, n := range metricNames(t, where, expr) {
			want[n] = append(want[n], where)
		}
	}
	if len(want) < 15 {
		t.Fatalf("the dashboard names %d metrics; it should cover the monitor's", len(want))
	}
	var exported map[string]bool
	_, err := demo.Run(context.Background(), demo.Options{
		Scenario: "friday-rollback", Seed: 1, Payments: 1500, Poison: 0.01, Timeout: 3 * time.Minute,
		Inspect: func(ctx context.Context, addr string) error {
			exported = scrape(t, "http://"+addr+"/metrics")
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !exported[n] {
			t.Errorf("metric %s (in %s) is not exported by the running monitor", n, strings.Join(want[n], "; "))
		}
	}
	t.Logf("the dashboard names %d metrics: %s", len(names), strings.Join(names, " "))
}

// scrape returns the series names the endpoint exposes (histograms as their
// _bucket, _sum and _count series, as PromQL names them).
func scrape(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	tp := expfmt.NewTextParser(model.UTF8Validation)
	families, err := tp.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	out := map[string]bool{}
	for name, f := range families {
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			out[name+"_bucket"], out[name+"_sum"], out[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			out[name], out[name+"_sum"], out[name+"_count"] = true, true, true
		default:
			if len(f.GetMetric()) > 0 {
				out[name] = true
			}
		}
	}
	return out
}
