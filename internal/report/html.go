package report

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"strings"
	"time"
)

//go:embed report.html.tmpl
var htmlSource string

// htmlTemplate is parsed once; html/template escapes every value for its
// context (text, attribute, SVG attribute), so entity keys and customer ids
// from the data cannot inject markup into the report.
var htmlTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"ts":      ts,
	"impact":  impact,
	"budget":  budget,
	"amounts": amounts,
	"limit":   limit,
	"join":    strings.Join,
	"short": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05.000")
	},
	"tsp": func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return ts(*t)
	},
	"upper": strings.ToUpper,
	"pct": func(read, planned int64) string {
		if planned <= 0 {
			return "100%"
		}
		return fmt.Sprintf("%.0f%%", 100*float64(read)/float64(planned))
	},
	"sub": func(a, b int64) int64 { return a - b },
}).Parse(htmlSource))

// HTML writes the report as one self-contained HTML page: inline CSS, the
// timeline as inline SVG, no script and no external asset (its Content
// Security Policy forbids loading any), so it can be attached to a ticket.
func HTML(w io.Writer, r *Report) error {
	return htmlTemplate.Execute(w, struct {
		*Report
		Chart chart
	}{r, timeline(r)})
}
