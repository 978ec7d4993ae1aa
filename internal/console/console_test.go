package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/invmon/invmon/internal/alert"
	"github.com/invmon/invmon/internal/console"
	"github.com/invmon/invmon/internal/demo"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/kafkatest"
	"github.com/invmon/invmon/internal/quantity"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/server"
	"github.com/invmon/invmon/internal/slo"
	"github.com/invmon/invmon/internal/violation"
	"github.com/invmon/invmon/internal/webserve"
	examplerules "github.com/invmon/invmon/rules"
)

// artifactsDir keeps the screenshots and rendered pages of the last run for
// people to look at (ignored by git).
const artifactsDir = "testdata/artifacts"

// TestConsoleOnTheDemo runs the friday-rollback demo and, while its monitor
// still serves, looks at the console the way a person's browser shows it:
// the overview, the rule page of the rule with the most open violations and
// the page of one of its violations, rendered in headless Chromium. The
// counts, customers and impact on the pages equal what the JSON API says;
// the alerts' generatorURL opens the rule's page; no figure a person reads
// (console, alert annotations) has more decimals than its unit.
func TestConsoleOnTheDemo(t *testing.T) {
	chrome := kafkatest.NewChromium(t)
	if err := os.MkdirAll(artifactsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	names, sources, err := examplerules.Files()
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Parse(names, sources)
	if err != nil {
		t.Fatal(err)
	}
	am := newAlertRecorder(t)
	inspected := false
	res, err := demo.Run(context.Background(), demo.Options{
		Scenario: "friday-rollback", Seed: 1, Timeout: 4 * time.Minute,
		AlertmanagerURLs: []string{am.URL},
		Inspect: func(ctx context.Context, addr string) error {
			inspected = true
			inspectConsole(t, chrome, "http://"+addr, rs, am)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !inspected {
		t.Fatal("the demo never let the console be inspected")
	}
	for name, s := range res.Rules {
		if s.Missed+s.FalsePositives > 0 {
			t.Errorf("demo rule %s: %+v", name, s)
		}
	}
}

func inspectConsole(t *testing.T, chrome *kafkatest.Chromium, base string, rs *rules.RuleSet, am *alertRecorder) {
	// What the API says is open, per rule.
	var api server.ViolationList
	all, err := server.FetchViolations(context.Background(), nil, base, url.Values{"state": {"open"}})
	if err != nil {
		t.Fatal(err)
	}
	api.Violations = all
	if len(api.Violations) == 0 {
		t.Fatal("the demo left no open violation to look at")
	}
	type sums struct {
		open      int
		impact    float64
		customers map[string]bool
	}
	want := map[string]*sums{}
	for _, r := range rs.Rules {
		want[r.Name] = &sums{customers: map[string]bool{}}
	}
	for _, v := range api.Violations {
		s := want[v.Rule]
		s.open++
		s.impact += v.Impact
		if v.Customer != "" {
			s.customers[v.Customer] = true
		}
	}

	// 1. The overview: one row per rule with the API's figures.
	dom := render(t, chrome, base+"/", "overview")
	busiest := ""
	for _, r := range rs.Rules {
		s, u := want[r.Name], r.Impact.Quantity()
		row := cellsOf(t, dom, r.Name)
		if got, w := row["open"], quantity.Int(s.open); got != w {
			t.Errorf("overview %s: open %q, the API has %q", r.Name, got, w)
		}
		if got, w := row["customers"], quantity.Int(len(s.customers)); got != w {
			t.Errorf("overview %s: customers %q, the API has %q", r.Name, got, w)
		}
		if u.Counted {
			if strings.ContainsAny(row["impact"], "0123456789") {
				t.Errorf("overview %s: a rule without impact.value shows an amount %q", r.Name, row["impact"])
			}
		} else {
			if got, w := row["impact"], u.Text(s.impact); got != w {
				t.Errorf("overview %s: impact %q, the API's open impact is %q", r.Name, got, w)
			}
			if got := parseAmount(t, row["impact"]); abs(got-s.impact) > 0.005 {
				t.Errorf("overview %s: impact reads %v, the API sums %v", r.Name, got, s.impact)
			}
		}
		if busiest == "" || s.open > want[busiest].open {
			busiest = r.Name
		}
	}
	if !strings.Contains(dom, `id="version"`) || !strings.Contains(dom, "invmon ") {
		t.Error("the overview has no version in its footer")
	}

	// 2. The busiest rule's page: the YAML with file and version, the chart,
	// the open violations paginated, and the filters.
	rule := rs.Rules[0]
	for _, r := range rs.Rules {
		if r.Name == busiest {
			rule = r
		}
	}
	ruleURL := base + "/rules/" + url.PathEscape(rule.Name)
	dom = render(t, chrome, ruleURL, "rule")
	if got, w := textOf(t, dom, "match-total"), quantity.Int(want[rule.Name].open); got != w {
		t.Errorf("rule page: %s open, the API has %s", got, w)
	}
	if rows := strings.Count(sectionOf(dom, `id="violations"`), `<td><a href="/violations/`); rows != min(want[rule.Name].open, 50) {
		t.Errorf("rule page lists %d violations, want %d (the first page)", rows, min(want[rule.Name].open, 50))
	}
	if want[rule.Name].open > 50 && !strings.Contains(dom, `rel="next"`) {
		t.Error("rule page: more than a page of violations and no next link")
	}
	for _, w := range []string{"name: " + rule.Name, rule.Version, rule.Pos.File, `<svg id="chart"`, `class="bar open"`} {
		if !strings.Contains(dom, html.EscapeString(w)) && !strings.Contains(dom, w) {
			t.Errorf("rule page has no %q", w)
		}
	}
	// Filters: a customer, and resolved ones, equal the API's counts.
	var someOpen violation.Violation
	for _, v := range api.Violations {
		if v.Rule == rule.Name && v.Customer != "" {
			someOpen = v
			break
		}
	}
	for _, f := range []url.Values{{"state": {"open"}, "customer": {someOpen.Customer}}, {"state": {"resolved"}}, {"state": {"all"}}} {
		q := url.Values{"rule": {rule.Name}}
		for k, v := range f {
			q[k] = v
		}
		fl, err := server.FetchViolations(context.Background(), nil, base, q)
		if err != nil {
			t.Fatal(err)
		}
		dom := fetch(t, ruleURL+"?"+f.Encode())
		if got, w := textOf(t, dom, "match-total"), quantity.Int(len(fl)); got != w {
			t.Errorf("rule page filtered by %v: %s matches, the API has %s", f, got, w)
		}
	}
	// The second page, by the first page's next link, starts where the
	// first ended and holds the API's next violations.
	if want[rule.Name].open > 50 {
		m := regexp.MustCompile(`rel="next" href="([^"]+)"`).FindStringSubmatch(dom)
		if m == nil {
			t.Fatal("rule page: no next link")
		}
		second := fetch(t, base+html.UnescapeString(m[1]))
		if !strings.Contains(second, "showing 51–") {
			t.Errorf("second page does not show 51 onwards")
		}
		var ruleOpen []violation.Violation
		for _, v := range api.Violations {
			if v.Rule == rule.Name {
				ruleOpen = append(ruleOpen, v)
			}
		}
		if !strings.Contains(second, "/violations/"+ruleOpen[50].ID) || strings.Contains(second, "/violations/"+ruleOpen[49].ID+`"`) {
			t.Errorf("second page does not start with the API's 51st open violation %s", ruleOpen[50].ID)
		}
		if resp, err := http.Get(ruleURL + "?after=%21%21"); err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("a bad cursor: %v %v, want 400", resp.Status, err)
		}
	}

	// 3. A violation's page: every field, the source, the timeline, kcat.
	v := someOpen
	dom = render(t, chrome, base+"/violations/"+url.PathEscape(v.ID), "violation")
	u := rule.Impact.Quantity()
	for _, w := range []string{v.ID, v.Key, v.Customer, v.TriggerEventID, string(v.State), v.RuleVersion,
		fmt.Sprintf("topic <code>%s</code> partition <code>%d</code> offset <code>%d</code>", v.Source.Topic, v.Source.Partition, v.Source.Offset),
		fmt.Sprintf("-t %s -p %d -o %d -c 1", v.Source.Topic, v.Source.Partition, v.Source.Offset),
		`id="timeline"`, "detected", "deadline"} {
		if !strings.Contains(dom, w) {
			t.Errorf("violation page has no %q", w)
		}
	}
	if !u.Counted {
		if got, w := textOf(t, dom, "impact"), u.Text(v.Impact); got != w {
			t.Errorf("violation page: impact %q, the API has %v (%q)", got, v.Impact, w)
		}
	}
	// The kcat line fetches the very record that triggered it.
	kcat := html.UnescapeString(textOf(t, dom, "kcat"))
	if out, err := exec.Command("sh", "-c", kcat).CombinedOutput(); err != nil {
		t.Errorf("%s: %v\n%s", kcat, err, out)
	} else if !strings.Contains(string(out), v.TriggerEventID) {
		t.Errorf("%s\nfetched a record without the trigger event id %s:\n%s", kcat, v.TriggerEventID, out)
	}

	// 4. The alerts' generatorURL opens the rule's page.
	alerts := am.alerts()
	if len(alerts) == 0 {
		t.Fatal("the demo sent no alert")
	}
	for _, a := range alerts {
		if a.Labels["alertname"] == "" || a.GeneratorURL == "" {
			continue
		}
		gu, err := url.Parse(a.GeneratorURL)
		if err != nil {
			t.Fatal(err)
		}
		dom := fetch(t, base+gu.EscapedPath())
		if !strings.Contains(dom, "<h1>"+a.Labels["alertname"]+"</h1>") {
			t.Errorf("generatorURL %s does not open the rule's page", a.GeneratorURL)
		}
		// 5. No figure in the annotations has more decimals than the unit.
		for k, text := range a.Annotations {
			if k == "runbook_url" {
				continue
			}
			if bad := quantity.ExcessDecimals(text, 2); len(bad) > 0 {
				t.Errorf("alert %s annotation %s has float noise %v: %q", a.Labels["alertname"], k, bad, text)
			}
		}
	}
}

// render loads a console page in headless Chromium, saves a screenshot and
// the rendered DOM as artifacts, and returns the DOM. The page must log
// nothing to the browser console (its CSP blocks anything it did not mean to
// load), and its figures carry no float noise.
func render(t *testing.T, chrome *kafkatest.Chromium, pageURL, name string) string {
	t.Helper()
	dom, console := chrome.DOM(t, pageURL)
	for _, l := range console {
		t.Errorf("%s logged to the browser console: %s", name, l)
	}
	if err := os.WriteFile(filepath.Join(artifactsDir, name+".html"), []byte(dom), 0o644); err != nil {
		t.Fatal(err)
	}
	shot, _ := filepath.Abs(filepath.Join(artifactsDir, name+".png"))
	img := chrome.Screenshot(t, pageURL, shot, 1280, 1400)
	if n := kafkatest.Colours(img); n < 10 {
		t.Errorf("screenshot %s has %d colours: not a rendered page", shot, n)
	}
	t.Logf("screenshot %s", shot)
	if bad := quantity.ExcessDecimals(figures(dom), 2); len(bad) > 0 {
		t.Errorf("%s shows float noise: %v", name, bad)
	}
	return dom
}

// figures is the text of a page without what is not a figure: tags,
// timestamps, the rule's YAML source, code (ids, versions) and the footer.
func figures(dom string) string {
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`(?s)<pre.*?</pre>`), regexp.MustCompile(`(?s)<code.*?</code>`),
		regexp.MustCompile(`(?s)<footer.*?</footer>`), regexp.MustCompile(`(?s)<title>.*?</title>`),
		regexp.MustCompile(`(?s)<[^>]*>`), regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+`),
	} {
		dom = re.ReplaceAllString(dom, " ")
	}
	return html.UnescapeString(dom)
}

// cellsOf returns the overview row of a rule by the class of its cells.
func cellsOf(t *testing.T, dom, rule string) map[string]string {
	t.Helper()
	row := sectionOf(dom, `data-rule="`+rule+`"`)
	if row == "" {
		t.Fatalf("overview has no row for %s", rule)
	}
	row = row[:strings.Index(row, "</tr>")]
	out := map[string]string{}
	for _, m := range regexp.MustCompile(`(?s)<td class="n (\w+)">(.*?)</td>`).FindAllStringSubmatch(row, -1) {
		out[m[1]] = strings.TrimSpace(html.UnescapeString(regexp.MustCompile(`<[^>]*>`).ReplaceAllString(m[2], "")))
	}
	return out
}

// textOf returns the text inside the element with the id.
func textOf(t *testing.T, dom, id string) string {
	t.Helper()
	m := regexp.MustCompile(`(?s)id="` + regexp.QuoteMeta(id) + `"[^>]*>(.*?)</`).FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("no element with id %s", id)
	}
	return strings.TrimSpace(m[1])
}

func sectionOf(dom, marker string) string {
	i := strings.Index(dom, marker)
	if i < 0 {
		return ""
	}
	s := dom[i:]
	if j := strings.Index(s, "</table>"); j >= 0 {
		s = s[:j]
	}
	return s
}

// parseAmount reads "60,736.68 USD" back as 60736.68.
func parseAmount(t *testing.T, s string) float64 {
	t.Helper()
	num, _, _ := strings.Cut(s, " ")
	f, err := strconv.ParseFloat(strings.ReplaceAll(num, ",", ""), 64)
	if err != nil {
		t.Fatalf("amount %q: %v", s, err)
	}
	return f
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

func fetch(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", u, resp.Status, b)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("GET %s: Content-Security-Policy %q", u, csp)
	}
	return string(b)
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// alertRecorder is an HTTP receiver of Alertmanager's POST /api/v2/alerts
// that keeps what was posted, to read the alerts a person would be paged with.
type alertRecorder struct {
	*httptest.Server
	mu   sync.Mutex
	last map[string]alert.Alert
}

func newAlertRecorder(t *testing.T) *alertRecorder {
	r := &alertRecorder{last: map[string]alert.Alert{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var as []alert.Alert
		if err := json.NewDecoder(req.Body).Decode(&as); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, a := range as {
			r.last[a.Labels["alertname"]+"/"+a.Labels["severity"]] = a
		}
		r.mu.Unlock()
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *alertRecorder) alerts() []alert.Alert {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []alert.Alert
	for _, a := range r.last {
		out = append(out, a)
	}
	return out
}

// TestConsoleSitsBehindTheAPIsAuth serves the monitor's handler the way the
// monitor does, through the web configuration with basic auth: every console
// page is refused without credentials, and served with them.
func TestConsoleSitsBehindTheAPIsAuth(t *testing.T) {
	store, err := joinstate.Open(t.TempDir(), joinstate.Options{InMemory: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	names, sources, err := examplerules.Files()
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Parse(names, sources)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webConfig := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(webConfig, []byte("basic_auth_users:\n  oncall: "+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	handler := server.New(server.Sources{Sources: console.Sources{Store: store, Rules: func() *rules.RuleSet { return rs },
		Gatherer: prometheus.NewRegistry()}, Ready: func() bool { return true }})
	web, err := webserve.New(handler, webserve.Options{WebConfigFile: webConfig})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = web.Serve(l) }()
	t.Cleanup(func() { _ = web.Shutdown(context.Background()) })
	base := "http://" + l.Addr().String()
	for _, path := range []string{"/", "/rules/" + rs.Rules[0].Name, "/violations/0123456789abcdef01234567", "/static/console.css"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without credentials: %s, want 401 Unauthorized", path, resp.Status)
		}
		if strings.Contains(string(body), rs.Rules[0].Name) {
			t.Errorf("GET %s without credentials shows the rules", path)
		}
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.SetBasicAuth("oncall", "s3cret")
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := http.StatusOK
		if strings.HasPrefix(path, "/violations/") {
			want = http.StatusNotFound // authenticated, and no such violation
		}
		if resp.StatusCode != want {
			t.Errorf("GET %s with credentials: %s, want %d", path, resp.Status, want)
		}
	}
}

// The overview and a rule's page show a rule's error budget as the rules
// API has it: the share left and the burn rate, or why they are unknown.
func TestConsoleShowsErrorBudgets(t *testing.T) {
	store, err := joinstate.Open(t.TempDir(), joinstate.Options{InMemory: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	names, sources, err := examplerules.Files()
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Parse(names, sources)
	if err != nil {
		t.Fatal(err)
	}
	left, burn := -0.126, 14.44
	budgets := func(context.Context) map[string]slo.Status {
		return map[string]slo.Status{
			"captured_payment_has_ledger_entry": {Objective: 0.999, ErrorBudget: 0.001, BudgetRemaining: &left, BurnRate: &burn, Source: "prometheus"},
			"no_duplicate_ledger_effect":        {Objective: 0.999, ErrorBudget: 0.001, Source: "unknown: set slo.prometheus_url"},
		}
	}
	srv := httptest.NewServer(server.New(server.Sources{Sources: console.Sources{Store: store, Rules: func() *rules.RuleSet { return rs },
		Gatherer: prometheus.NewRegistry(), SLO: budgets}, Ready: func() bool { return true }}))
	t.Cleanup(srv.Close)
	overview := fetch(t, srv.URL+"/")
	for _, want := range []string{">-13 %</span>", "burning 14.4×", "objective 99.9 %", "no objective"} {
		if !strings.Contains(overview, want) {
			t.Errorf("overview has no %q", want)
		}
	}
	if got := textOf(t, fetch(t, srv.URL+"/rules/captured_payment_has_ledger_entry"), "budget"); got != "-13 % of the window's budget left, burning at 14.4× the sustainable rate" {
		t.Errorf("rule page budget %q", got)
	}
}
