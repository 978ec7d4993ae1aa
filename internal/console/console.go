// Package console serves the monitor's web console for people: which
// invariants are broken now, for whom, how much, since when, and which
// input lags; a rule's definition, history and open violations; and a
// violation's every field down to the Kafka record that triggered it.
//
// Pages are rendered on the server with html/template from embedded files;
// nothing is loaded from elsewhere, no script runs, and a strict
// Content-Security-Policy says so to the browser. Filters and pagination are
// plain links and GET forms, so every view has a URL to paste into a ticket.
package console

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/invmon/invmon/internal/buildinfo"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/quantity"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/slo"
	"github.com/invmon/invmon/internal/violation"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// PageSize is how many violations a rule's page lists at once.
const PageSize = 50

// ContentSecurityPolicy allows the console's own stylesheet and nothing
// else: no script, no inline style, no frame, no form posting elsewhere.
const ContentSecurityPolicy = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

var pages = map[string]*template.Template{}

func init() {
	funcs := template.FuncMap{
		"ts":      formatTime,
		"tsp":     func(t *time.Time) string { return formatTimePtr(t) },
		"ago":     ago,
		"int":     func(n int) string { return quantity.Int(n) },
		"text":    func(u quantity.Unit, v float64) string { return u.Text(v) },
		"number":  func(u quantity.Unit, v float64) string { return u.Number(v) },
		"ruleURL": ruleURL,
		"vioURL":  func(id string) string { return "/violations/" + url.PathEscape(id) },
		"version": buildinfo.Short,
		"join":    strings.Join,
		"span":    span,
		// percent prints an objective as people write it: 99.9 %.
		"percent": func(r float64) string { return strconv.FormatFloat(r*100, 'f', -1, 64) + " %" },
		// share prints a ratio such as a remaining budget in whole percent.
		"share": func(r *float64) string { return strconv.FormatFloat(*r*100, 'f', 0, 64) + " %" },
		"rate":  func(r *float64) string { return strconv.FormatFloat(*r, 'f', 1, 64) + "×" },
		"deref": func(r *float64) float64 { return *r },
	}
	for _, name := range []string{"overview", "rule", "violation", "error"} {
		pages[name] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html"))
	}
}

// Register adds the console's routes to mux: "/" (the overview),
// "/rules/{name}", "/violations/{id}" and "/static/". Whatever wraps mux
// (authentication, TLS) covers the console as it covers the API.
func Register(mux *http.ServeMux, src Sources) {
	if src.Now == nil {
		src.Now = time.Now
	}
	if src.Blind == nil {
		src.Blind = func() []string { return nil }
	}
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", secure(http.StripPrefix("/static/", http.FileServerFS(static))))
	mux.Handle("GET /{$}", secure(http.HandlerFunc(src.overview)))
	mux.Handle("GET /rules/{name}", secure(http.HandlerFunc(src.rule)))
	mux.Handle("GET /violations/{id}", secure(http.HandlerFunc(src.violationPage)))
}

// secure sets the headers every console response carries.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", ContentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
		h.ServeHTTP(w, r)
	})
}

func ruleURL(name string) string { return "/rules/" + url.PathEscape(name) }

// render executes a page into a buffer first, so a template error becomes a
// 500 and never half a page.
func render(w http.ResponseWriter, code int, name string, data any) {
	var b bytes.Buffer
	if err := pages[name].Execute(&b, data); err != nil {
		http.Error(w, "render "+name+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(b.Bytes())
}

func renderError(w http.ResponseWriter, code int, msg string) {
	render(w, code, "error", struct {
		Title, Message string
	}{http.StatusText(code), msg})
}

// ruleRow is one rule in the overview.
type ruleRow struct {
	Name, Kind, Description string
	Open, Customers         int
	Impact                  float64
	Unit                    quantity.Unit
	Severity                string
	// WatermarkDelay is how far the rule's lowest watermark trails the
	// clock; HasWatermark is false before the rule has one here.
	WatermarkDelay time.Duration
	HasWatermark   bool
	Blind          []string
	Objective      float64
	// Budget is the rule's error budget, when it has an objective.
	Budget *slo.Status
}

// topicLag is one topic's consumer lag.
type topicLag struct {
	Topic   string
	Records float64
}

type overviewPage struct {
	Title      string
	Now        time.Time
	RuleSet    string
	Rules      []ruleRow
	Lag        []topicLag
	Blind      []string
	OpenTotal  int
	Totals     []amountText
	ReadyError string
}

// amountText is a sum in one unit, as read.
type amountText struct{ Text string }

func (s Sources) overview(w http.ResponseWriter, r *http.Request) {
	rs := s.Rules()
	open, err := s.open()
	if err != nil {
		renderError(w, http.StatusInternalServerError, err.Error())
		return
	}
	g, err := s.gauges()
	if err != nil {
		renderError(w, http.StatusInternalServerError, "metrics: "+err.Error())
		return
	}
	now := s.Now()
	blind := s.Blind()
	rows := map[string]*ruleRow{}
	customers := map[string]map[string]bool{}
	p := overviewPage{Title: "Overview", Now: now, RuleSet: rs.Version, Blind: blind}
	for _, rule := range rs.Rules {
		row := &ruleRow{Name: rule.Name, Kind: rule.Kind, Description: rule.Description, Unit: rule.Impact.Quantity(),
			Severity: g.severity[rule.Name], Objective: rule.Objective}
		if wm, ok := g.watermark[rule.Name]; ok {
			row.HasWatermark, row.WatermarkDelay = true, now.Sub(wm)
		}
		for _, st := range rule.Inputs() {
			if slices.Contains(blind, st.Name) {
				row.Blind = append(row.Blind, st.Name)
			}
		}
		rows[rule.Name] = row
		customers[rule.Name] = map[string]bool{}
	}
	for _, v := range open {
		row := rows[v.Rule]
		if row == nil {
			continue // a rule no longer loaded
		}
		row.Open++
		row.Impact += v.Impact
		if v.Customer != "" {
			customers[v.Rule][v.Customer] = true
		}
	}
	for name, b := range s.budgets(r.Context()) {
		if row := rows[name]; row != nil {
			b := b
			row.Budget = &b
		}
	}
	sums := map[string]float64{}
	var units []quantity.Unit
	for _, row := range rows {
		row.Customers = len(customers[row.Name])
		row.Impact = row.Unit.Round(row.Impact)
		p.OpenTotal += row.Open
		if !row.Unit.Counted && row.Open > 0 {
			if _, ok := sums[row.Unit.Key()]; !ok {
				units = append(units, row.Unit)
			}
			sums[row.Unit.Key()] += row.Impact
		}
		p.Rules = append(p.Rules, *row)
	}
	sort.Slice(units, func(i, j int) bool { return units[i].Name < units[j].Name })
	for _, u := range units {
		p.Totals = append(p.Totals, amountText{u.Text(sums[u.Key()])})
	}
	sort.Slice(p.Rules, func(i, j int) bool { return ranksBefore(p.Rules[i], p.Rules[j]) })
	for topic, n := range g.lag {
		p.Lag = append(p.Lag, topicLag{topic, n})
	}
	sort.Slice(p.Lag, func(i, j int) bool { return p.Lag[i].Topic < p.Lag[j].Topic })
	render(w, http.StatusOK, "overview", p)
}

// ranksBefore sorts the overview by impact: rules with an amount first,
// largest first (amounts in different units are compared as numbers, the
// best a single order can do), then counted rules by open violations,
// then by name.
func ranksBefore(a, b ruleRow) bool {
	if a.Unit.Counted != b.Unit.Counted {
		return !a.Unit.Counted
	}
	if a.Impact != b.Impact {
		return a.Impact > b.Impact
	}
	if a.Open != b.Open {
		return a.Open > b.Open
	}
	return a.Name < b.Name
}

type rulePage struct {
	Title   string
	Rule    *rules.Rule
	Unit    quantity.Unit
	Inputs  []string
	Streams []string
	Chart   chart
	Filter  filterForm
	Page    page
	// OpenImpact sums the impact of the listed filter's matches.
	MatchImpact float64
	From, To    int
	Prev, Next  string
	APIURL      string
	Budget      *slo.Status
}

// filterForm holds a rule page's filters as submitted.
type filterForm struct {
	State, Customer, Since, Until string
	Error                         string
	from                          int
}

func (s Sources) rule(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	rs := s.Rules()
	i := slices.IndexFunc(rs.Rules, func(x *rules.Rule) bool { return x.Name == name })
	if i < 0 {
		renderError(w, http.StatusNotFound, fmt.Sprintf("No rule named %q is loaded.", name))
		return
	}
	rule := rs.Rules[i]
	q, form, err := parseFilter(r.URL.Query())
	q.Rule = rule.Name
	if err != nil {
		form.Error = err.Error()
	}
	pg, err := s.violations(q)
	if errors.Is(err, joinstate.ErrBadCursor) {
		renderError(w, http.StatusBadRequest, "after: not a page cursor of this console (follow its next link)")
		return
	}
	if err != nil {
		renderError(w, http.StatusInternalServerError, err.Error())
		return
	}
	all, err := s.allOf(rule.Name)
	if err != nil {
		renderError(w, http.StatusInternalServerError, err.Error())
		return
	}
	p := rulePage{Title: rule.Name, Rule: rule, Unit: rule.Impact.Quantity(), Filter: form, Page: pg,
		Chart: violationChart(all)}
	for _, st := range rule.Inputs() {
		p.Inputs = append(p.Inputs, st.Name+" ("+st.Topic+")")
	}
	for _, st := range rule.Streams() {
		p.Streams = append(p.Streams, st.Name)
	}
	if b, ok := s.budgets(r.Context())[rule.Name]; ok {
		p.Budget = &b
	}
	if len(pg.Violations) > 0 {
		p.From, p.To = form.from, form.from+len(pg.Violations)-1
	}
	// Pages follow the store's cursor forwards; "from" only numbers the
	// rows. Back is the first page (the browser's back button the
	// previous one).
	if q.After != "" {
		v := r.URL.Query()
		v.Del("after")
		v.Del("from")
		p.Prev = ruleURL(rule.Name) + "?" + v.Encode()
	}
	if pg.Next != "" {
		v := r.URL.Query()
		v.Set("after", pg.Next)
		v.Set("from", strconv.Itoa(p.To+1))
		p.Next = ruleURL(rule.Name) + "?" + v.Encode()
	}
	api := url.Values{"rule": {rule.Name}}
	if q.State != "" {
		api.Set("state", string(q.State))
	} else {
		api.Set("state", "all")
	}
	for k, v := range map[string]string{"customer": form.Customer} {
		if v != "" {
			api.Set(k, v)
		}
	}
	if !q.Since.IsZero() {
		api.Set("since", q.Since.Format(time.RFC3339))
	}
	if !q.Until.IsZero() {
		api.Set("until", q.Until.Format(time.RFC3339))
	}
	p.APIURL = "/api/v1/violations?" + api.Encode()
	render(w, http.StatusOK, "rule", p)
}

// parseFilter reads a rule page's query: state (open by default; resolved,
// all), customer, since and until (RFC 3339, or a date, or the
// datetime-local form "2006-01-02T15:04", all UTC), after (a page cursor)
// and from (the number of the page's first row). A bad value is reported on
// the page and ignored.
func parseFilter(v url.Values) (violationQuery, filterForm, error) {
	q := violationQuery{State: violation.Open, Limit: PageSize}
	f := filterForm{State: "open", Customer: strings.TrimSpace(v.Get("customer")), Since: v.Get("since"), Until: v.Get("until")}
	q.Customer = f.Customer
	var errs []error
	switch st := v.Get("state"); st {
	case "", "open":
	case "resolved":
		q.State, f.State = violation.Resolved, st
	case "all":
		q.State, f.State = "", st
	default:
		errs = append(errs, fmt.Errorf("state must be open, resolved or all, not %q", st))
	}
	var err error
	if q.Since, err = parseWhen(f.Since); err != nil {
		errs = append(errs, fmt.Errorf("since: %w", err))
	}
	if q.Until, err = parseWhen(f.Until); err != nil {
		errs = append(errs, fmt.Errorf("until: %w", err))
	}
	q.After, f.from = v.Get("after"), 1
	if o := v.Get("from"); o != "" && q.After != "" {
		if f.from, err = strconv.Atoi(o); err != nil || f.from < 1 {
			f.from = 1
		}
	}
	return q, f, errors.Join(errs...)
}

func parseWhen(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time (RFC 3339, or 2006-01-02T15:04 in UTC)", s)
}

type violationPageData struct {
	Title    string
	V        violation.Violation
	Rule     *rules.Rule
	Unit     quantity.Unit
	Timeline []timelineEntry
	Kcat     string
	APIURL   string
}

// timelineEntry is one moment in a violation's life.
type timelineEntry struct {
	At    time.Time
	Clock string // "event time" or "monitor clock"
	What  string
}

func (s Sources) violationPage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	v, ok, err := s.violation(id)
	if err != nil {
		renderError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if !ok {
		renderError(w, http.StatusNotFound, fmt.Sprintf("No violation with id %q is stored here (resolved violations expire after their retention).", id))
		return
	}
	p := violationPageData{Title: "Violation " + v.ID, V: v, Unit: quantity.Count,
		Timeline: timeline(v), Kcat: kcatCommand(s.Brokers, v.Source),
		APIURL: "/api/v1/violations/" + url.PathEscape(v.ID)}
	rs := s.Rules()
	if i := slices.IndexFunc(rs.Rules, func(x *rules.Rule) bool { return x.Name == v.Rule }); i >= 0 {
		p.Rule, p.Unit = rs.Rules[i], rs.Rules[i].Impact.Quantity()
	}
	render(w, http.StatusOK, "violation", p)
}

// timeline orders a violation's moments: the trigger and the deadline in
// event time, the detection and resolution on the monitor's clock.
func timeline(v violation.Violation) []timelineEntry {
	out := []timelineEntry{
		{v.EventTime, "event time", "triggering event " + v.TriggerEventID},
		{v.Deadline, "event time", "deadline: the invariant had to hold by now"},
		{v.Watermark, "event time", "the rule's watermark when the violation was decided"},
		{v.DetectedAt, "monitor clock", "detected"},
	}
	if v.ResolvedByEventTime != nil {
		out = append(out, timelineEntry{*v.ResolvedByEventTime, "event time", "the event that resolved it"})
	}
	if v.ResolvedAt != nil {
		out = append(out, timelineEntry{*v.ResolvedAt, "monitor clock", "resolved"})
	}
	out = slices.DeleteFunc(out, func(e timelineEntry) bool { return e.At.IsZero() })
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out
}

// kcatCommand fetches exactly the trigger record with its key, headers and
// timestamp. TLS or SASL settings are the reader's to add (-X options).
func kcatCommand(brokers []string, src violation.Source) string {
	b := strings.Join(brokers, ",")
	if b == "" {
		b = "BROKER:9092"
	}
	return fmt.Sprintf("kcat -C -b %s -t %s -p %d -o %d -c 1 -e -f 'topic %%t partition %%p offset %%o timestamp %%T\\nkey %%k\\nheaders %%h\\n%%s\\n'",
		shellQuote(b), shellQuote(src.Topic), src.Partition, src.Offset)
}

// shellQuote quotes s for a POSIX shell when it holds anything but safe
// characters.
func shellQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.,:/@+=", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000 UTC")
}

func formatTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return formatTime(*t)
}

// span prints a rule's window as written in rule files: 28d, 30s, 1h30m.
func span(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
	return strings.TrimSuffix(strings.TrimSuffix(d.String(), "0s"), "0m")
}

// ago says how long before now t was, in whole seconds or coarser.
func ago(d time.Duration) string {
	switch {
	case d < 0:
		return "ahead of the clock by " + (-d).Round(time.Second).String()
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}
