package joinstate

import "golang.org/x/sys/unix"

// dontNeed is madvise(MADV_DONTNEED) of [start, start+length). The address
// comes from /proc/self/maps, not from a Go pointer, hence the raw call.
func dontNeed(start, length uintptr) error {
	if _, _, errno := unix.Syscall(unix.SYS_MADVISE, start, length, unix.MADV_DONTNEED); errno != 0 {
		return errno
	}
	return nil
}
