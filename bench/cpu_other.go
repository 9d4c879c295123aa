//go:build !unix

package bench

import "time"

// cpuTime reports no figure where getrusage is missing, so that the report
// prints "-" rather than a wrong number.
func cpuTime() (time.Duration, bool) { return 0, false }
