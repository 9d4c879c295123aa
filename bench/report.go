package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is one workload's measurement.
type Result struct {
	// Name is the workload's name, with "/rN" for a replica count and
	// "/SETTING" for a metrics setting when the run compares several.
	Name string `json:"name"`
	// Op says what one operation is, for the reader.
	Op string `json:"op"`
	// Ops is how many operations succeeded in the measured phase; failed
	// ones are in Errors.
	Ops int64 `json:"ops"`
	// Seconds is how long the measured phase lasted (Config.Duration).
	Seconds float64 `json:"seconds"`
	// PerSecond is operations per second.
	PerSecond float64 `json:"per_second"`
	// VsRaw is PerSecond over the raw baseline's (0 for the baseline).
	VsRaw float64 `json:"vs_raw"`
	// Mean is the mean latency of a successful operation; it and the
	// percentiles below are 0 when none succeeded.
	Mean time.Duration `json:"mean_ns"`
	// P50 is the median latency of a successful operation.
	P50 time.Duration `json:"p50_ns"`
	// P90 is the latency 90% of successful operations took at most.
	P90 time.Duration `json:"p90_ns"`
	// P99 is the latency 99% of successful operations took at most.
	P99 time.Duration `json:"p99_ns"`
	// P999 is the latency 99.9% of successful operations took at most.
	P999 time.Duration `json:"p999_ns"`
	// Max is the longest latency of a successful operation.
	Max time.Duration `json:"max_ns"`
	// CPUPerOp is this process's CPU time (user and system, from
	// getrusage) over the measured phase, divided by Ops; failed
	// operations' CPU counts too. It is the client's own cost unless
	// Report.ServersInProcess. 0 when unknown.
	CPUPerOp time.Duration `json:"cpu_per_op_ns"`
	// ReqPerOp is the requests the client sent to the servers over the
	// measured phase, renewals and keep-alives included, per op: the work
	// it asked of them. 0 when unknown (the raw baseline).
	ReqPerOp float64 `json:"requests_per_op"`
	// Errors counts failed operations by kind.
	Errors map[string]int64 `json:"errors"`
	// Extra holds workload-specific figures (hold-many: lost, renewals/s).
	Extra map[string]float64 `json:"extra,omitempty"`
	// Curve is the latency by percentile, from the median to the
	// maximum, as HDR histograms plot it (see Report.WriteHTML).
	Curve []CurvePoint `json:"curve,omitempty"`
}

// CurvePoint is one point of a latency curve: the latency at or below
// which Percentile percent of the ops took.
type CurvePoint struct {
	// Percentile is the share of operations, in percent (50 to 100).
	Percentile float64 `json:"percentile"`
	// Latency is the longest latency of that share of operations.
	Latency time.Duration `json:"latency_ns"`
}

// Report is a whole run.
type Report struct {
	// Servers are the servers measured: Config.Servers, or the embedded
	// fleet's addresses.
	Servers []string `json:"servers"`
	// Embedded says the servers were an embedded fleet of fakeservers,
	// not servers given in Config.Servers.
	Embedded bool `json:"embedded"`
	// ServersInProcess says the embedded fleet ran in the measuring
	// process, so every CPUPerOp counts the servers' CPU as well.
	ServersInProcess bool `json:"servers_in_process"`
	// Strategy is the sharding strategy the clients used.
	Strategy string `json:"strategy"`
	// Workers is the number of closed-loop workers of each workload.
	Workers int `json:"workers"`
	// Results holds one entry per workload run, in the order they ran.
	Results []Result `json:"results"`
	// Failed names the workload that failed as a whole (see
	// WorkloadError), the last of Results; the run stopped there.
	Failed string `json:"failed,omitempty"`
	// Interrupted names the workload that was running when the run was
	// cancelled. It is not in Results: it did not run its course.
	Interrupted string `json:"interrupted,omitempty"`
}

// WriteJSON writes the report as JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report as an aligned table.
func (r *Report) WriteTable(w io.Writer) error {
	where := strings.Join(r.Servers, ", ")
	cpuCol, cpuNote := "cpu/op", "cpu/op: the client's CPU time (user+system, getrusage) in the measured phase, per op; the servers run in another process"
	switch {
	case r.ServersInProcess:
		// Marked on the column itself, so that the figure is never read
		// as the client's alone.
		cpuCol, cpuNote = "cpu/op*", "cpu/op*: this process's CPU time (user+system, getrusage) in the measured phase, per op, INCLUDING the embedded servers', which run in this process"
		where = fmt.Sprintf("embedded fleet of %d fakeservers in this process (%s)", len(r.Servers), where)
	case r.Embedded:
		where = fmt.Sprintf("embedded fleet of %d fakeservers in a child process (%s)", len(r.Servers), where)
	}
	fmt.Fprintf(w, "dflock bench: %s; strategy %s; %d workers\n\n", where, r.Strategy, r.Workers)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "workload\top/s\tvs raw\t%s\treq/op\tmean\tp50\tp90\tp99\tp99.9\tmax\terrors\t\n", cpuCol)
	for _, res := range r.Results {
		vs := "-"
		if res.VsRaw > 0 {
			vs = fmt.Sprintf("%.0f%%", 100*res.VsRaw)
		}
		req := "-"
		if res.ReqPerOp > 0 {
			req = fmt.Sprintf("%.2f", res.ReqPerOp)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", res.Name, res.PerSecond, vs, cpuShort(res.CPUPerOp), req,
			short(res.Mean), short(res.P50), short(res.P90), short(res.P99), short(res.P999), short(res.Max), errorsText(res.Errors))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, cpuNote)
	fmt.Fprintln(w, "req/op: requests the client sent to the servers per op, renewals and keep-alives included: the work asked of the servers")
	fmt.Fprintln(w, "mean, p50 ... max: the latency of one op, its mean and percentiles")
	if slices.ContainsFunc(r.Results, func(res Result) bool { return strings.Contains(res.Name, "/r") }) {
		fmt.Fprintln(w, "workload/rN: the workload with every key on N servers (lock.Config.Replicas = N, --replicas)")
	}
	// Rows of one op (a workload at several replica counts, the phases
	// of a fleet change) share a line; their own figures follow.
	var names []string
	for i, res := range r.Results {
		names = append(names, res.Name)
		if next := i + 1; next < len(r.Results) && r.Results[next].Op == res.Op {
			continue
		}
		which := strings.Join(names, ", ")
		if len(names) == len(r.Results) && len(names) > 3 {
			which = "every row"
		}
		fmt.Fprintln(w, which+": one op = "+res.Op)
		names = names[:0]
	}
	if slices.ContainsFunc(r.Results, func(res Result) bool { return res.Extra["extra requests %"] > 0 }) {
		fmt.Fprintln(w, "A → B before, during, after: a fleet change from A servers to B, with clients moving through its steps at their own moments; during runs from the first client's Reconfigure to the last one's Commit")
		fmt.Fprintln(w, "extra requests %: the share of the requests sent during the change beyond what as many ops cost before it: keys that move taken on two servers, held locks taken on their new one")
	}
	for _, res := range r.Results {
		if len(res.Extra) == 0 {
			continue
		}
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(res.Extra)) {
			parts = append(parts, fmt.Sprintf("%s %s", k, number(res.Extra[k])))
		}
		fmt.Fprintf(w, "%s: %s\n", res.Name, strings.Join(parts, "; "))
	}
	switch {
	case r.Failed != "":
		fmt.Fprintf(w, "\nRUN STOPPED at %s, which failed: see its errors\n", r.Failed)
	case r.Interrupted != "":
		fmt.Fprintf(w, "\nRUN INTERRUPTED during %s: the figures of %s and of any workload after it are missing\n", r.Interrupted, r.Interrupted)
	}
	return nil
}

func short(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

// cpuShort keeps a digit more than short below 100µs, where per-op CPU
// figures sit and a rounded 4µs against 5µs hides a 25% difference.
func cpuShort(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < 100*time.Microsecond:
		return fmt.Sprintf("%.1fµs", float64(d)/float64(time.Microsecond))
	}
	return short(d)
}

func number(v float64) string {
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.1f", v)
}

func errorsText(errs map[string]int64) string {
	if len(errs) == 0 {
		return "0"
	}
	parts := []string{}
	for _, k := range slices.Sorted(maps.Keys(errs)) {
		parts = append(parts, fmt.Sprintf("%s:%d", k, errs[k]))
	}
	return strings.Join(parts, ",")
}
