//go:build !linux

package pool

import "net"

// socketUnread cannot ask the kernel on this system: only the reader's
// own state tells (see Conn.arriving).
func socketUnread(net.Conn) (int, bool) { return 0, false }
