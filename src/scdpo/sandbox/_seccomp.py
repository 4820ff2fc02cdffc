"""Sandbox worker, part 2 of 7: the child's seccomp filter (classic BPF, x86_64, no library).

What it stops: system calls that let state outlive a solution (SysV IPC, POSIX message queues,
keyrings), hold memory outside files and processes (memfd), use up a host-wide resource (AIO
contexts, huge pages) or widen the attack surface (new namespaces, ptrace, bpf, io_uring,
userfaultfd, perf, the kernel log); and sockets of any family but unix, inet and inet6.
"""

import ctypes
import os
import struct

DENIED_SYSCALLS = {
    29,  # shmget
    30,  # shmat
    31,  # shmctl
    64,  # semget
    65,  # semop
    66,  # semctl
    67,  # shmdt
    68,  # msgget
    69,  # msgsnd
    70,  # msgrcv
    71,  # msgctl
    220,  # semtimedop
    240,  # mq_open
    241,  # mq_unlink
    242,  # mq_timedsend
    243,  # mq_timedreceive
    244,  # mq_notify
    245,  # mq_getsetattr
    248,  # add_key
    249,  # request_key
    250,  # keyctl
    319,  # memfd_create
    447,  # memfd_secret
    272,  # unshare
    308,  # setns
    101,  # ptrace
    310,  # process_vm_readv
    311,  # process_vm_writev
    165,  # mount
    166,  # umount2
    155,  # pivot_root
    161,  # chroot
    298,  # perf_event_open
    321,  # bpf
    323,  # userfaultfd
    425,  # io_uring_setup
    426,  # io_uring_enter
    427,  # io_uring_register
    # AIO contexts are a host-wide pool (fs.aio-max-nr); the pipeline's own I/O needs them.
    206,  # io_setup
    207,  # io_destroy
    208,  # io_getevents
    209,  # io_submit
    210,  # io_cancel
    333,  # io_pgetevents
    103,  # syslog: the kernel log holds earlier solutions' OOM kills
}
SYS_CLONE, SYS_CLONE3, SYS_SOCKET, SYS_SOCKETPAIR, SYS_MMAP = 56, 435, 41, 53, 9
CLONE_NAMESPACES = 0x7E020000  # CLONE_NEW{NS,CGROUP,UTS,IPC,USER,PID,NET}
MAP_HUGETLB = 0x40000  # huge pages come from a host-wide pool no memory cgroup v1 counts
SOCKET_FAMILIES = (1, 2, 10)  # AF_UNIX, AF_INET, AF_INET6 (not AF_VSOCK, AF_NETLINK, ...)
AUDIT_ARCH_X86_64 = 0xC000003E
LIBC = ctypes.CDLL(None, use_errno=True)
RETURNS = {
    "allow": 0x7FFF0000,
    "eperm": 0x00050000 | 1,
    "enosys": 0x00050000 | 38,
    "eafnosupport": 0x00050000 | 97,
}


def seccomp_program() -> bytes:
    """The filter: denied calls fail with EPERM, clone3 with ENOSYS (so libc falls back to
    clone, whose flags a classic filter can read), other socket families with EAFNOSUPPORT,
    other ABIs are refused."""
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    prog: list = [
        (ld, 0, 0, 4),  # seccomp_data.arch
        (jeq, 0, "enosys", AUDIT_ARCH_X86_64),
        (ld, 0, 0, 0),  # seccomp_data.nr
        (jge, "eperm", 0, 0x40000000),  # the x32 ABI
        *((jeq, "eperm", 0, nr) for nr in sorted(DENIED_SYSCALLS)),
        (jeq, "enosys", 0, SYS_CLONE3),
        (jeq, "clone", 0, SYS_CLONE),
        (jeq, "family", 0, SYS_SOCKET),
        (jeq, "family", 0, SYS_SOCKETPAIR),
        (jeq, "mmap", "allow", SYS_MMAP),
        "clone",
        (ld, 0, 0, 16),  # low half of args[0]: clone's flags
        (jset, "eperm", "allow", CLONE_NAMESPACES),
        "family",
        (ld, 0, 0, 16),  # low half of args[0]: the socket's family
        *((jeq, "allow", 0, family) for family in SOCKET_FAMILIES),
        (ret, 0, 0, RETURNS["eafnosupport"]),
        "mmap",
        (ld, 0, 0, 16 + 3 * 8),  # low half of args[3]: mmap's flags
        (jset, "eperm", "allow", MAP_HUGETLB),
    ]
    for name, value in RETURNS.items():
        prog += [name, (ret, 0, 0, value)]
    return assemble(prog)


def assemble(prog: list) -> bytes:
    """Classic BPF from instructions and label names (strings); jumps go to labels ahead."""
    at: dict[str, int] = {}
    code = []
    for item in prog:
        if isinstance(item, str):
            at[item] = len(code)
        else:
            code.append(item)
    out = bytearray()
    for i, (op, jt, jf, k) in enumerate(code):
        jt, jf = (at[j] - i - 1 if isinstance(j, str) else j for j in (jt, jf))
        if not (0 <= jt < 256 and 0 <= jf < 256):
            raise ValueError(f"seccomp jump out of range at {i}")
        out += struct.pack("<HBBI", op, jt, jf, k)
    return bytes(out)


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def install_seccomp(program: bytes) -> None:
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.addressof(buf))
    check(LIBC.prctl(38, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
    check(LIBC.prctl(22, 2, ctypes.byref(fprog), 0, 0), "PR_SET_SECCOMP")
