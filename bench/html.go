package bench

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
	"time"
)

// Plot geometry, in SVG user units.
const (
	plotW, plotH             = 900.0, 480.0
	plotLeft, plotRight      = 70.0, 40.0
	plotTop, plotBottom      = 20.0, 50.0
	maxNines                 = 5.0 // the x axis ends at 99.999%
	latencyFloor, latencyTop = time.Microsecond, time.Minute
)

// palette colours the curves, one per workload, in turn.
var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"}

// WriteHTML writes the report as one self-contained HTML page: the
// table, and each workload's latency by percentile as an SVG plot, HDR
// style (the x axis spreads the tail: 90%, 99%, 99.9%... are evenly
// spaced; the y axis is logarithmic). No script, no external file.
func (r *Report) WriteHTML(w io.Writer) error {
	var table strings.Builder
	if err := r.WriteTable(&table); err != nil {
		return err
	}
	lo, hi := latencyRange(r.Results)
	// From the median (the curves' first point) to 99.999%.
	minNines := math.Log10(2)
	x := func(p float64) float64 {
		nines := maxNines
		if p < 100 {
			nines = math.Min(-math.Log10(1-p/100), maxNines)
		}
		return plotLeft + (nines-minNines)/(maxNines-minNines)*(plotW-plotLeft-plotRight)
	}
	y := func(d time.Duration) float64 {
		v := math.Log10(float64(max(d, lo)))
		return plotH - plotBottom - (v-math.Log10(float64(lo)))/(math.Log10(float64(hi))-math.Log10(float64(lo)))*(plotH-plotTop-plotBottom)
	}
	type line struct {
		Name, Colour, Points string
		LegendY              float64
	}
	type tick struct {
		Label, At string
	}
	var lines []line
	for i, res := range r.Results {
		if len(res.Curve) == 0 {
			continue
		}
		var pts []string
		for _, p := range res.Curve {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.Percentile), y(p.Latency)))
		}
		lines = append(lines, line{Name: res.Name, Colour: palette[i%len(palette)], Points: strings.Join(pts, " "), LegendY: plotTop + 14 + 16*float64(len(lines))})
	}
	var xticks, yticks []tick
	for _, p := range []float64{50, 90, 99, 99.9, 99.99, 99.999} {
		xticks = append(xticks, tick{fmt.Sprintf("%g%%", p), fmt.Sprintf("%.1f", x(p))})
	}
	for d := lo; d <= hi; d *= 10 {
		yticks = append(yticks, tick{powerOfTen(d), fmt.Sprintf("%.1f", y(d))})
	}
	return htmlReport.Execute(w, map[string]any{
		"Table": table.String(), "Lines": lines, "XTicks": xticks, "YTicks": yticks,
		"W": plotW, "H": plotH, "Left": plotLeft, "Right": plotW - plotRight, "Top": plotTop, "Bottom": plotH - plotBottom,
		"LegendX": plotLeft + 12,
	})
}

// powerOfTen labels a power-of-ten duration: 100µs, 1ms, 10s.
func powerOfTen(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d/time.Microsecond)
	case d < time.Second:
		return fmt.Sprintf("%dms", d/time.Millisecond)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}

// latencyRange is the y axis: powers of ten that hold every curve.
func latencyRange(results []Result) (lo, hi time.Duration) {
	lo, hi = latencyTop, latencyFloor
	for _, res := range results {
		for _, p := range res.Curve {
			lo, hi = min(lo, p.Latency), max(hi, p.Latency)
		}
	}
	if lo > hi {
		return latencyFloor, time.Second
	}
	lo = time.Duration(math.Pow(10, math.Floor(math.Log10(float64(max(lo, latencyFloor))))))
	hi = time.Duration(math.Pow(10, math.Ceil(math.Log10(float64(max(hi, lo*10))))))
	return lo, hi
}

var htmlReport = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dflock bench</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:sans-serif;margin:2em} pre{font-size:12px;overflow-x:auto} svg{max-width:100%;height:auto} svg text{font-size:12px;font-family:sans-serif}</style>
</head><body>
<h1>dflock bench</h1>
<h2>Latency by percentile</h2>
<svg id="latency" xmlns="http://www.w3.org/2000/svg" width="{{.W}}" height="{{.H}}" viewBox="0 0 {{.W}} {{.H}}" role="img" aria-label="latency by percentile, one curve per workload">
<rect x="0" y="0" width="{{.W}}" height="{{.H}}" fill="white"/>
{{range .XTicks}}<line x1="{{.At}}" y1="{{$.Top}}" x2="{{.At}}" y2="{{$.Bottom}}" stroke="#ddd"/><text x="{{.At}}" y="{{$.Bottom}}" dy="16" text-anchor="middle">{{.Label}}</text>
{{end}}{{range .YTicks}}<line x1="{{$.Left}}" y1="{{.At}}" x2="{{$.Right}}" y2="{{.At}}" stroke="#ddd"/><text x="{{$.Left}}" y="{{.At}}" dx="-6" dy="4" text-anchor="end">{{.Label}}</text>
{{end}}<text x="{{$.Left}}" y="{{$.Bottom}}" dy="36">percentile (the tail spread out: each nine as wide as the next)</text>
{{range .Lines}}<polyline class="curve" data-name="{{.Name}}" fill="none" stroke="{{.Colour}}" stroke-width="2" points="{{.Points}}"/>
<line x1="{{$.LegendX}}" y1="{{.LegendY}}" x2="{{$.LegendX}}" y2="{{.LegendY}}" stroke="{{.Colour}}" stroke-width="10" stroke-linecap="round"/><text x="{{$.LegendX}}" y="{{.LegendY}}" dx="12" dy="4">{{.Name}}</text>
{{end}}</svg>
<h2>Figures</h2>
<pre>{{.Table}}</pre>
</body></html>
`))
