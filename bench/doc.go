// Package bench measures dflock: workloads run through the public lock API
// by closed-loop workers, beside a raw pipelining baseline measured on the
// same servers in the same run, with latency percentiles from HDR
// histograms. The dflock bench command is a thin layer over it.
//
//	rep, err := bench.Run(ctx, bench.Config{}) // embedded fleet of 3 fakeservers
//	rep.WriteTable(os.Stdout)
package bench
