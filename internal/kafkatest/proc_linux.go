package kafkatest

import "syscall"

// sysProcAttr puts the child in a process group of its own, so that stop can
// signal the whole group, and asks the kernel to SIGKILL it when the test
// binary dies (a panic, `go test -timeout`, Ctrl-C): without that, an
// orphaned JVM would keep its ports and 768 MiB of heap until someone notices.
//
// Pdeathsig fires when the OS thread that forked the child exits, not the
// process; the Go runtime only ends threads that a goroutine locked and never
// unlocked, which the harness does not do.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// signalGroup signals the process group whose leader is pid.
func signalGroup(pid int, sig syscall.Signal) error { return syscall.Kill(-pid, sig) }
