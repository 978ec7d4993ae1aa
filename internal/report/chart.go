package report

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/invmon/invmon/internal/quantity"
)

// The timeline chart is computed here and drawn by the HTML template as
// inline SVG: no script, no external asset, so the report renders the same
// from a mail attachment as from a file server.

// palette holds distinguishable colours for up to eight rules; more rules
// cycle through it.
var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"}

type chart struct {
	Width, Height              int
	PlotX, PlotY, PlotW, PlotH float64
	Bars                       []chartBar
	Lines                      []chartLine
	XTicks, YTicks, Y2Ticks    []chartTick
	Legend                     []chartLegend
	Empty                      bool
	YLabel, Y2Label            string
	// Totals state the cumulative impact per unit in words, under the chart.
	Totals []string
	// LabelY is the baseline of the axis titles, between legend and plot.
	LabelY float64
}

type chartBar struct {
	X, Y, W, H float64
	Fill       string
	Opacity    float64
	Title      string
}

type chartLine struct {
	Points, Stroke, Dash, Title string
}

// chartTick is an axis label at (TX, TY) with an optional grid line from
// (X1, Y1) to (X2, Y2).
type chartTick struct {
	X1, Y1, X2, Y2 float64
	TX, TY         float64
	Anchor, Label  string
}

// chartLegend is a swatch (a square, or a line when IsLine) and its label.
type chartLegend struct {
	X, Y, X2, TX, TY   float64
	Fill, Stroke, Dash string
	Label              string
	IsLine             bool
}

// unitStrokes tell the cumulative impact lines of different units apart.
var unitStrokes = []string{"#000", "#7a4f00", "#00507a", "#6b006b"}

// unitSeries is the impact of one unit per time bucket.
type unitSeries struct {
	unit      quantity.Unit
	open, all []float64
}

// timeline builds the chart: per time bucket of the window, findings per
// rule stacked by trigger event time (open solid, resolved pale), and the
// cumulative impact of all findings and of those still open on a second
// axis, one pair of lines per impact unit: amounts in different units are
// never summed. With one unit the axis is in that unit; with several, each
// unit's lines are drawn to their own scale (the axis reads as a share of
// the unit's total) and the totals are stated under the chart. Rules
// without impact.value have counts, drawn by the bars, and no line.
func timeline(r *Report) chart {
	c := chart{Width: 960, PlotX: 64, PlotH: 220, YLabel: "findings", Y2Label: "cumulative impact"}
	c.PlotW = float64(c.Width) - c.PlotX - 88
	span := r.Window.To.Sub(r.Window.From)
	if span <= 0 || len(r.Findings) == 0 {
		c.Empty = true
		return c
	}
	const buckets = 48
	width := span / buckets
	if width <= 0 {
		width = 1
	}
	colour := map[string]string{}
	for i, rule := range r.Rules {
		colour[rule.Name] = palette[i%len(palette)]
	}
	type cell struct{ open, resolved int }
	counts := make([]map[string]*cell, buckets)
	var series []*unitSeries
	seriesOf := map[string]*unitSeries{}
	for _, f := range r.Findings {
		i := int(f.EventTime.Sub(r.Window.From) / width)
		if i < 0 || i >= buckets {
			continue
		}
		if counts[i] == nil {
			counts[i] = map[string]*cell{}
		}
		cl := counts[i][f.Rule]
		if cl == nil {
			cl = &cell{}
			counts[i][f.Rule] = cl
		}
		u := r.UnitOf(f.Rule)
		s := seriesOf[u.Key()]
		if s == nil && !u.Counted {
			s = &unitSeries{unit: u, open: make([]float64, buckets), all: make([]float64, buckets)}
			seriesOf[u.Key()] = s
			series = append(series, s)
		}
		if s != nil {
			s.all[i] += f.Impact
		}
		if f.State == "open" {
			cl.open++
			if s != nil {
				s.open[i] += f.Impact
			}
		} else {
			cl.resolved++
		}
		if _, ok := colour[f.Rule]; !ok {
			colour[f.Rule] = palette[len(colour)%len(palette)]
		}
	}
	maxStack := 0
	for _, m := range counts {
		n := 0
		for _, cl := range m {
			n += cl.open + cl.resolved
		}
		maxStack = max(maxStack, n)
	}
	yMax := quantity.NiceCeil(float64(maxStack))
	for _, s := range series {
		var cumAll, cumOpen float64
		for i := range buckets {
			cumAll += s.all[i]
			cumOpen += s.open[i]
			s.all[i], s.open[i] = cumAll, cumOpen
		}
	}
	y2Max := 1.0 // a share of each unit's total, when there are several
	switch len(series) {
	case 0:
		c.Y2Label = ""
	case 1:
		y2Max = quantity.NiceCeil(series[0].all[buckets-1])
		if series[0].unit.Name != "" {
			c.Y2Label = "cumulative impact (" + series[0].unit.Name + ")"
		}
	default:
		c.Y2Label = "cumulative impact, share of each unit's total"
	}
	bw := c.PlotW / buckets
	// Rules stack in the report's order; a finding of a rule the report does
	// not list (a hand-edited file) still shows, after them.
	ruleOrder := make([]string, 0, len(colour))
	var extra []string
	for _, rule := range r.Rules {
		ruleOrder = append(ruleOrder, rule.Name)
	}
	for name := range colour {
		if r.RuleNamed(name) == nil {
			extra = append(extra, name)
		}
	}
	sort.Strings(extra)
	ruleOrder = append(ruleOrder, extra...)
	// The legend wraps into rows above the plot; the plot starts below it.
	x, row := c.PlotX, 0.0
	place := func(w float64) (float64, float64) {
		if x+w > float64(c.Width) && x > c.PlotX {
			x, row = c.PlotX, row+18
		}
		at := x
		x += w
		return at, 6 + row
	}
	for _, name := range ruleOrder {
		lx, ly := place(16 + float64(len(name))*6.2 + 18)
		c.Legend = append(c.Legend, chartLegend{X: round1(lx), Y: ly, TX: round1(lx + 16), TY: ly + 10, Fill: colour[name], Label: name})
	}
	for i, s := range series {
		stroke, suffix := unitStrokes[i%len(unitStrokes)], ""
		if len(series) > 1 {
			suffix = " (" + s.unit.Name + ")"
		}
		for _, l := range []chartLegend{{Stroke: stroke, Label: "open impact" + suffix}, {Stroke: stroke, Dash: "6 4", Label: "all impact" + suffix}} {
			lx, ly := place(30 + float64(len(l.Label))*6.2 + 18)
			l.IsLine, l.X, l.X2, l.Y, l.TX, l.TY = true, round1(lx), round1(lx+24), ly+6, round1(lx+30), ly+10
			c.Legend = append(c.Legend, l)
		}
	}
	c.LabelY = 6 + row + 34
	c.PlotY = c.LabelY + 10
	c.Height = int(c.PlotY + c.PlotH + 30)
	for i, m := range counts {
		y := c.PlotY + c.PlotH
		x := c.PlotX + float64(i)*bw
		start := r.Window.From.Add(time.Duration(i) * width)
		for _, name := range ruleOrder {
			cl := m[name]
			if cl == nil {
				continue
			}
			for _, part := range []struct {
				n       int
				state   string
				opacity float64
			}{{cl.open, "open", 1}, {cl.resolved, "resolved", 0.4}} {
				if part.n == 0 {
					continue
				}
				h := float64(part.n) / yMax * c.PlotH
				y -= h
				c.Bars = append(c.Bars, chartBar{X: round1(x + 1), Y: round1(y), W: round1(math.Max(bw-2, 1)), H: round1(h),
					Fill: colour[name], Opacity: part.opacity,
					Title: fmt.Sprintf("%s: %d %s, triggers from %s", name, part.n, part.state, start.UTC().Format(time.RFC3339))})
			}
		}
	}
	line := func(pts []float64, scale float64) string {
		s := fmt.Sprintf("%.1f,%.1f", c.PlotX, c.PlotY+c.PlotH)
		for i, v := range pts {
			s += fmt.Sprintf(" %.1f,%.1f", c.PlotX+float64(i+1)*bw, c.PlotY+c.PlotH-v/scale*c.PlotH)
		}
		return s
	}
	for i, s := range series {
		stroke := unitStrokes[i%len(unitStrokes)]
		all, open := s.all[buckets-1], s.open[buckets-1]
		scale := y2Max
		if len(series) > 1 {
			scale = math.Max(all, math.SmallestNonzeroFloat64)
		}
		c.Lines = append(c.Lines,
			chartLine{Points: line(s.all, scale), Stroke: stroke, Dash: "6 4", Title: "impact of all findings: " + s.unit.Text(all)},
			chartLine{Points: line(s.open, scale), Stroke: stroke, Title: "impact of findings still open: " + s.unit.Text(open)})
		c.Totals = append(c.Totals, fmt.Sprintf("%s of all findings, %s still open", s.unit.Text(all), s.unit.Text(open)))
	}
	bottom := c.PlotY + c.PlotH
	right := c.PlotX + c.PlotW
	for _, v := range ticks(yMax) {
		y := round1(bottom - v/yMax*c.PlotH)
		c.YTicks = append(c.YTicks, chartTick{X1: c.PlotX, Y1: y, X2: right, Y2: y, TX: c.PlotX - 6, TY: y + 4, Anchor: "end", Label: trimNum(v)})
	}
	switch len(series) {
	case 0:
	case 1:
		for _, v := range ticks(y2Max) {
			y := round1(bottom - v/y2Max*c.PlotH)
			c.Y2Ticks = append(c.Y2Ticks, chartTick{X1: right, Y1: y, X2: right + 4, Y2: y, TX: right + 8, TY: y + 4, Anchor: "start", Label: trimNum(v)})
		}
	default:
		for i := 0; i <= 4; i++ {
			y := round1(bottom - float64(i)/4*c.PlotH)
			c.Y2Ticks = append(c.Y2Ticks, chartTick{X1: right, Y1: y, X2: right + 4, Y2: y, TX: right + 8, TY: y + 4, Anchor: "start", Label: fmt.Sprintf("%d%%", i*25)})
		}
	}
	layout := "15:04:05"
	if span > 24*time.Hour {
		layout = "01-02 15:04"
	}
	for i := 0; i <= 6; i++ {
		t := r.Window.From.Add(time.Duration(float64(span) * float64(i) / 6))
		x := round1(c.PlotX + c.PlotW*float64(i)/6)
		c.XTicks = append(c.XTicks, chartTick{X1: x, Y1: bottom, X2: x, Y2: bottom + 4, TX: x, TY: bottom + 18, Anchor: "middle", Label: t.UTC().Format(layout)})
	}
	return c
}

// ticks returns axis values from 0 to a niceCeil maximum in round steps:
// whole numbers up to 5, otherwise fifths (or quarters of a 2×10ⁿ maximum).
func ticks(top float64) []float64 {
	n := 5
	switch {
	case top <= 5:
		n = int(top)
	case top/math.Pow(10, math.Floor(math.Log10(top))) == 2:
		n = 4
	}
	out := make([]float64, 0, n+1)
	for i := 0; i <= n; i++ {
		out = append(out, top*float64(i)/float64(n))
	}
	return out
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }

func trimNum(f float64) string {
	if f == math.Trunc(f) {
		return fmt.Sprintf("%.0f", f)
	}
	return fmt.Sprintf("%.1f", f)
}
