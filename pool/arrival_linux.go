package pool

import (
	"net"
	"syscall"
	"unsafe"
)

// socketUnread asks the kernel how many bytes wait in nc's receive
// queue (FIONREAD), if nc is a socket.
func socketUnread(nc net.Conn) (int, bool) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var n int32
	var errno syscall.Errno
	// Control, not Read: it does not wait for the reader's hold on the
	// socket, which a parked reader keeps.
	if err := raw.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&n)))
	}); err != nil || errno != 0 {
		return 0, false
	}
	return int(n), true
}
