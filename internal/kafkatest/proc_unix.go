//go:build unix && !linux

package kafkatest

import "syscall"

// sysProcAttr puts the child in a process group of its own, so that stop can
// signal the whole group. Only Linux can also tie the child's life to ours
// (see proc_linux.go); elsewhere a test binary that dies without cleanups
// leaves its peers running.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// signalGroup signals the process group whose leader is pid.
func signalGroup(pid int, sig syscall.Signal) error { return syscall.Kill(-pid, sig) }
