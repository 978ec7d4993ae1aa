package console

import (
	"fmt"
	"math"
	"time"

	"github.com/invmon/invmon/internal/quantity"
	"github.com/invmon/invmon/internal/violation"
)

// chart is a rule's violations over time, drawn by the template as inline
// SVG: bars per time bucket by the triggering event's time, open ones solid
// and resolved ones pale, stacked.
type chart struct {
	Empty                      bool
	Width, Height              int
	PlotX, PlotY, PlotW, PlotH float64
	Bars                       []chartBar
	YTicks, XTicks             []chartTick
	From, To                   time.Time
	Buckets                    int
	BucketWidth                time.Duration
}

type chartBar struct {
	X, Y, W, H float64
	Class      string
	Title      string
}

type chartTick struct {
	X, Y   float64
	Label  string
	Anchor string
}

const chartBuckets = 48

func violationChart(vs []violation.Violation) chart {
	c := chart{Width: 900, Height: 220, PlotX: 56, PlotY: 10, PlotH: 170, Buckets: chartBuckets}
	c.PlotW = float64(c.Width) - c.PlotX - 16
	if len(vs) == 0 {
		c.Empty = true
		return c
	}
	from, to := vs[0].EventTime, vs[0].EventTime
	for _, v := range vs {
		if v.EventTime.Before(from) {
			from = v.EventTime
		}
		if v.EventTime.After(to) {
			to = v.EventTime
		}
	}
	span := to.Sub(from)
	if span < time.Minute {
		span = time.Minute
	}
	width := ((span + chartBuckets - 1) / chartBuckets).Round(time.Second)
	if width*chartBuckets < span {
		width += time.Second
	}
	from = from.Truncate(time.Second)
	c.From, c.To, c.BucketWidth = from, from.Add(width*chartBuckets), width
	open := make([]int, chartBuckets)
	resolved := make([]int, chartBuckets)
	for _, v := range vs {
		i := min(int(v.EventTime.Sub(from)/width), chartBuckets-1)
		if v.State == violation.Open {
			open[i]++
		} else {
			resolved[i]++
		}
	}
	top := 0
	for i := range chartBuckets {
		top = max(top, open[i]+resolved[i])
	}
	yMax := quantity.NiceCeil(float64(top))
	bw := c.PlotW / chartBuckets
	bottom := c.PlotY + c.PlotH
	for i := range chartBuckets {
		y := bottom
		start := from.Add(time.Duration(i) * width)
		for _, part := range []struct {
			n     int
			class string
		}{{open[i], "open"}, {resolved[i], "resolved"}} {
			if part.n == 0 {
				continue
			}
			h := float64(part.n) / yMax * c.PlotH
			y -= h
			c.Bars = append(c.Bars, chartBar{X: round1(c.PlotX + float64(i)*bw + 1), Y: round1(y), W: round1(math.Max(bw-2, 1)), H: round1(h),
				Class: part.class, Title: fmt.Sprintf("%s %s, triggers from %s", quantity.Int(part.n), part.class, formatTime(start))})
		}
	}
	// Whole numbers up to 5, fifths above (quarters of a 2×10ⁿ maximum):
	// every tick is a whole count.
	steps := 5
	switch {
	case yMax <= 5:
		steps = int(yMax)
	case yMax/math.Pow(10, math.Floor(math.Log10(yMax))) == 2:
		steps = 4
	}
	for i := 0; i <= steps; i++ {
		v := yMax * float64(i) / float64(steps)
		c.YTicks = append(c.YTicks, chartTick{X: c.PlotX - 6, Y: round1(bottom - v/yMax*c.PlotH + 4), Label: quantity.Int(int(math.Round(v))), Anchor: "end"})
	}
	layout := "15:04:05"
	if c.To.Sub(c.From) > 24*time.Hour {
		layout = "01-02 15:04"
	}
	for i := 0; i <= 4; i++ {
		t := c.From.Add(time.Duration(float64(c.To.Sub(c.From)) * float64(i) / 4))
		anchor := "middle"
		switch i {
		case 0:
			anchor = "start"
		case 4:
			anchor = "end"
		}
		c.XTicks = append(c.XTicks, chartTick{X: round1(c.PlotX + c.PlotW*float64(i)/4), Y: bottom + 16, Label: t.UTC().Format(layout), Anchor: anchor})
	}
	return c
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }
