"""The seccomp filter every sandbox runs under, compiled by libseccomp (the library Docker,
systemd and Flatpak use) and handed to bubblewrap as BPF (`bwrap --seccomp FD`).

Default: allow. Denied with EPERM: what a task agent, an evaluator or a kernel never needs and
what sandbox escapes are made of: new namespaces (unshare, setns, clone with CLONE_NEWUSER),
mount and the new mount API, ptrace and cross-process memory access, bpf, perf_event_open,
keyrings, module and kexec loading, userfaultfd, open_by_handle_at. clone3 answers ENOSYS, so
libc falls back to clone, whose flags the filter can inspect (clone3 passes them in memory).
System calls of other architectures (the 32-bit x86 ABI on x86_64) kill the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from functools import lru_cache

DENIED = (
    "unshare", "setns", "mount", "umount", "umount2", "pivot_root", "chroot", "fsopen", "fsmount", "fsconfig",
    "fspick", "move_mount", "open_tree", "mount_setattr", "ptrace", "process_vm_readv", "process_vm_writev",
    "kcmp", "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "init_module", "finit_module",
    "delete_module", "kexec_load", "kexec_file_load", "userfaultfd", "open_by_handle_at", "name_to_handle_at",
    "swapon", "swapoff", "reboot", "syslog", "acct", "quotactl", "lookup_dcookie", "personality",
)
CLONE_NEWUSER = 0x10000000
_ACT_ALLOW = 0x7FFF0000
_CMP_MASKED_EQ = 7


def _act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):  # struct scmp_arg_cmp
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


class SeccompUnavailable(RuntimeError):
    """libseccomp is not installed (Debian: libseccomp2)."""


@lru_cache(maxsize=1)
def filter_bpf() -> bytes:
    """The compiled filter (cached: the same bytes serve every sandbox of this process)."""
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SeccompUnavailable(f"libseccomp not found ({exc}); install libseccomp2") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        def deny(syscall: str, action: int, *cmps: _ArgCmp) -> None:
            number = lib.seccomp_syscall_resolve_name(syscall.encode())
            if number < 0:
                return  # not a system call on this architecture (e.g. umount on aarch64)
            array = (_ArgCmp * len(cmps))(*cmps) if cmps else None
            if (rc := lib.seccomp_rule_add_array(ctx, action, number, len(cmps), array)) < 0:
                raise SeccompUnavailable(f"seccomp rule for {syscall}: {os.strerror(-rc)}")

        for syscall in DENIED:
            deny(syscall, _act_errno(errno.EPERM))
        deny("clone", _act_errno(errno.EPERM), _ArgCmp(0, _CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
        deny("clone3", _act_errno(errno.ENOSYS))
        fd = os.memfd_create("sia-seccomp-export", 0)
        try:
            if (rc := lib.seccomp_export_bpf(ctx, fd)) < 0:
                raise SeccompUnavailable(f"seccomp_export_bpf: {os.strerror(-rc)}")
            return os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


def filter_fd() -> int:
    """A fresh inheritable file descriptor holding the filter at offset 0 (bwrap reads it once)."""
    fd = os.memfd_create("sia-seccomp", 0)
    os.write(fd, filter_bpf())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
