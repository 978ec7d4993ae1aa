package report

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/quantity"
)

var t0 = time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)

func finding(rule, key, state string, at time.Duration, impact float64) Finding {
	return Finding{ID: rule + "/" + key, Rule: rule, RuleVersion: "v1", Key: key, State: state, Impact: impact, Customer: "acct-" + key,
		TriggerEventID: key + "-ev", EventTime: t0.Add(at), Deadline: t0.Add(at + 30*time.Second), DetectedAt: t0.Add(at + 36*time.Second),
		Source: Source{Topic: "payments", Partition: 1, Offset: int64(at / time.Second)}}
}

func sample() *Report {
	return &Report{
		Format: FormatVersion,
		Run:    Run{ID: "rp-test", PlannedAt: t0.Add(48 * time.Hour), FinishedAt: t0.Add(49 * time.Hour), RecordsThisRun: 10, ReadSeconds: 1, RecordsPerSecond: 10},
		Window: Window{From: t0, To: t0.Add(10 * time.Minute), LeadIn: Duration(24 * time.Hour), ReadFrom: t0.Add(-24 * time.Hour),
			Horizon: Duration(30 * time.Second), FinalClock: t0.Add(11 * time.Minute), Rules: []string{"a_rule", "b_rule"}},
		RuleSetVersion: "abc",
		Verdict:        Fail,
		Rules: []Rule{
			{Name: "a_rule", Kind: "absence", Version: "v1", Topics: []string{"payments"}, Verdict: Fail, Reasons: []string{"2 findings still open"}, Open: 2, Resolved: 1,
				EntitiesChecked: 107, EntitiesViolating: 10, Objective: 0.999, ErrorRatio: 10.0 / 107, Budget: BudgetExhausted},
			{Name: "b_rule", Kind: "unique", Version: "v1", Topics: []string{"ledger"}, Verdict: Pass},
		},
		Coverage: []Coverage{{Topic: "payments", Partition: 1, Role: RoleInput, PlannedEnd: 10, RecordsRead: 10, Position: 10, Covered: true}},
		Findings: []Finding{
			finding("a_rule", "p1", "open", time.Minute, 10),
			finding("a_rule", "p2", "open", 2*time.Minute, 20),
			finding("a_rule", "p3", "resolved", 3*time.Minute, 30),
			finding("a_rule", "p4", "open", 4*time.Minute, 40),
			finding("b_rule", "<script>alert(1)</script>|x", "open", 9*time.Minute, 5),
		},
		Customers:   []Customer{{Customer: "acct-p1", Findings: 1, Open: 1, Impacts: []Amount{{Unit: "USD", Open: 10, Total: 10}}, Rules: []string{"a_rule"}}},
		DeadLetters: []DeadLetter{{Topic: "payments", Partition: 1, Reason: "malformed_json", Count: 1, Examples: []DeadLetterExample{{Offset: 3, Error: "bad"}}}},
		Notes:       []string{"a note"},
	}
}

func TestReplayReportDiff(t *testing.T) {
	before := sample()
	after := sample()
	after.Run.ID = "rp-after"
	after.Findings = []Finding{
		finding("a_rule", "p1", "resolved", time.Minute, 10), // repaired
		finding("a_rule", "p2", "open", 2*time.Minute, 20),   // still open
		finding("a_rule", "p3", "open", 3*time.Minute, 30),   // broken again
		// p4 no longer found
		finding("a_rule", "p5", "open", 5*time.Minute, 50), // new
		finding("b_rule", "<script>alert(1)</script>|x", "open", 9*time.Minute, 5),
	}
	d := Compare(before, after)
	keys := func(items []DiffItem) []string {
		var out []string
		for _, it := range items {
			out = append(out, it.Key+":"+it.Before+"->"+it.After)
		}
		return out
	}
	for name, c := range map[string]struct{ got, want []string }{
		"fixed":      {keys(d.Fixed), []string{"p1:open->resolved", "p4:open->absent"}},
		"still open": {keys(d.StillOpen), []string{"p2:open->open", "<script>alert(1)</script>|x:open->open"}},
		"new":        {keys(d.New), []string{"p3:resolved->open", "p5:absent->open"}},
	} {
		if !slices.Equal(c.got, c.want) {
			t.Errorf("%s: %v, want %v", name, c.got, c.want)
		}
	}
	if d.Before.Open != 4 || d.After.Open != 4 || len(d.Warnings) != 0 {
		t.Errorf("sides %+v %+v, warnings %v", d.Before, d.After, d.Warnings)
	}
	var text bytes.Buffer
	if err := d.Text(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "fixed 2, still open 2, new 2") {
		t.Errorf("text:\n%s", text.String())
	}

	after.Window.To = after.Window.To.Add(time.Minute)
	after.Rules[1].Version = "v2"
	after.Coverage[0].Covered, after.Coverage[0].Problem = false, "deleted"
	w := strings.Join(Compare(before, after).Warnings, "\n")
	for _, want := range []string{"windows differ", "rule b_rule changed", "did not cover payments[1]"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings %q lack %q", w, want)
		}
	}
}

func TestReplayReportWriteLoad(t *testing.T) {
	dir := t.TempDir()
	r := sample()
	if err := Write(dir, r); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		a, _ := json.Marshal(got)
		b, _ := json.Marshal(r)
		t.Errorf("round trip changed the report:\n%s\n%s", a, b)
	}
	for _, name := range []string{JSONFile, MDFile, HTMLFile} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", name, err)
		}
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".*tmp*"))
	if len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

func TestReplayReportLoadRefusesOtherFormats(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, JSONFile)
	if err := os.WriteFile(p, []byte(`{"format": 99}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "format 99") {
		t.Errorf("format 99: %v", err)
	}
	if err := os.WriteFile(p, []byte(`{"format": 1, "surprise": true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "surprise") {
		t.Errorf("unknown field: %v", err)
	}
}

func TestReplayReportHTMLSelfContained(t *testing.T) {
	var b bytes.Buffer
	if err := HTML(&b, sample()); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	if strings.Contains(page, "<script>alert(1)") {
		t.Error("a finding's key was not escaped")
	}
	for _, banned := range []string{"<script", "<link", " src=", "@import", "url("} {
		if strings.Contains(page, banned) {
			t.Errorf("the page contains %q: it must not load or run anything", banned)
		}
	}
	// The only URL is the SVG namespace, which browsers never fetch.
	for _, u := range regexp.MustCompile(`https?://[^"' <]+`).FindAllString(page, -1) {
		if u != "http://www.w3.org/2000/svg" {
			t.Errorf("external reference %s", u)
		}
	}
	if !strings.Contains(page, "Content-Security-Policy") || !strings.Contains(page, "default-src 'none'") {
		t.Error("no Content Security Policy forbidding external loads")
	}
	// The chart is well-formed XML with a bar per rule, state and bucket and
	// both impact lines.
	svg := page[strings.Index(page, "<svg"):]
	svg = svg[:strings.Index(svg, "</svg>")+len("</svg>")]
	var doc struct {
		Rects     []struct{} `xml:"rect"`
		Polylines []struct {
			Points string `xml:"points,attr"`
		} `xml:"polyline"`
	}
	if err := xml.Unmarshal([]byte(svg), &doc); err != nil {
		t.Fatalf("timeline SVG: %v\n%s", err, svg)
	}
	// 1 background + 5 bars (one per finding bucket) + 2 rule legend swatches.
	if len(doc.Rects) != 8 || len(doc.Polylines) != 2 {
		t.Errorf("%d rects, %d polylines", len(doc.Rects), len(doc.Polylines))
	}
}

func TestReplayReportMarkdown(t *testing.T) {
	var b bytes.Buffer
	if err := Markdown(&b, sample()); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{"# invmon replay rp-test: FAIL", "| a_rule | absence | `v1` | **fail** |", `<script>alert(1)</script>\|x`, "payments[1]@540", "a note"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestReplayReportChartTicks(t *testing.T) {
	for _, c := range []struct {
		max  float64
		want []float64
	}{
		{quantity.NiceCeil(0), []float64{0, 1}},
		{quantity.NiceCeil(3), []float64{0, 1, 2, 3, 4, 5}},
		{quantity.NiceCeil(17), []float64{0, 5, 10, 15, 20}},
		{quantity.NiceCeil(420), []float64{0, 100, 200, 300, 400, 500}},
		{quantity.NiceCeil(101), []float64{0, 50, 100, 150, 200}},
	} {
		if got := ticks(c.max); !slices.Equal(got, c.want) {
			t.Errorf("ticks(%v) = %v, want %v", c.max, got, c.want)
		}
	}
}

// Amounts in different units are never summed: the chart draws and states
// the cumulative impact per unit, a rule without impact.value contributes
// no amount, and no figure carries more decimals than its unit.
func TestImpactPerUnit(t *testing.T) {
	r := sample()
	r.Rules = []Rule{
		{Name: "a_rule", Kind: "absence", Version: "v1", ImpactUnit: "USD", Verdict: Fail, Open: 2, OpenImpact: 0.30},
		{Name: "b_rule", Kind: "state", Version: "v1", ImpactUnit: "JPY", Verdict: Fail, Open: 1, OpenImpact: 1234567},
		{Name: "c_rule", Kind: "unique", Version: "v1", ImpactCounted: true, Verdict: Fail, Open: 1, OpenImpact: 1},
	}
	r.Findings = []Finding{
		finding("a_rule", "p1", "open", time.Minute, 0.1),
		finding("a_rule", "p2", "open", 2*time.Minute, 0.2),
		finding("b_rule", "s1", "open", 3*time.Minute, 1234567.4),
		finding("c_rule", "d1", "open", 4*time.Minute, 1),
	}
	r.Customers = []Customer{{Customer: "acct-x", Findings: 3, Open: 3, Impacts: []Amount{{Unit: "USD", Open: 0.3, Total: 0.3}, {Unit: "JPY", Open: 1234567, Total: 1234567}}}}
	c := timeline(r)
	if got, want := strings.Join(c.Totals, "; "), "0.30 USD of all findings, 0.30 USD still open; 1,234,567 JPY of all findings, 1,234,567 JPY still open"; got != want {
		t.Errorf("totals %q, want %q", got, want)
	}
	if len(c.Lines) != 4 {
		t.Errorf("%d impact lines, want one pair per unit (4)", len(c.Lines))
	}
	var md, page bytes.Buffer
	if err := Markdown(&md, r); err != nil {
		t.Fatal(err)
	}
	if err := HTML(&page, r); err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{"markdown": md.String(), "html": page.String()} {
		for _, want := range []string{"0.30 USD", "1,234,567 JPY", "0.30 USD; 1,234,567 JPY"} {
			if !strings.Contains(text, want) {
				t.Errorf("%s has no %q", name, want)
			}
		}
		// Figures only: timestamps and the SVG's coordinates are not read as amounts.
		figures := regexp.MustCompile(`(?s)\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?Z?|<svg.*?</svg>|points="[^"]*"`).ReplaceAllString(text, "")
		if bad := quantity.ExcessDecimals(figures, 2); len(bad) > 0 {
			t.Errorf("%s has figures with more than 2 decimals: %v", name, bad)
		}
		if strings.Contains(text, "1234567.7") || strings.Contains(text, "1,234,567.70") {
			t.Errorf("%s sums USD and JPY", name)
		}
	}
}

// The budget verdict stands beside the zero-violation verdict, its figures
// with no more decimals than any other.
func TestMarkdownShowsTheBudgetVerdict(t *testing.T) {
	var b strings.Builder
	if err := Markdown(&b, sample()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| **fail** | 9.35 % failing, objective 99.9 %: budget exhausted |", "| **pass** | none |"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report.md lacks %q:\n%s", want, b.String())
		}
	}
}
