"""The sandbox built from kernel namespaces, for machines without bubblewrap.

Run as `python -I -c <this file's text> CONFIG_JSON` (stdlib only: ctypes for unshare/mount/
pivot_root), with the program on stdin. It builds what `bwrap` builds, in the same order:
  * new user, mount, network, PID, IPC and UTS namespaces (no user namespace only for root on a
    kernel that refuses them: root holds the rights to make the others itself);
  * a new root on a small tmpfs holding read-only binds of the system directories and the Python
    install, a fresh /proc, a minimal /dev, and private tmpfs /tmp and /dev/shm; `pivot_root` into
    it, so the project, its data, the benchmark folder and every home directory are simply absent;
  * the program runs as PID 1 of the new PID namespace: when it ends (or is killed), the kernel
    kills every process it started, `setsid` orphans included; this launcher forwards its exit
    status, and if the launcher dies the program gets SIGKILL (parent-death signal);
  * the program keeps no privilege: a root caller's program runs as `nobody` on the host (a
    helper outside the namespace maps that uid); anyone else's runs as themselves in a nested user
    namespace, so exec drops every capability; no_new_privs is set.
Exit status 125 with a line on stderr means the sandbox itself could not be built.
"""

import ctypes
import json
import os
import platform
import pwd
import select
import signal
import sys

cfg = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.syscall.argtypes = [ctypes.c_long, ctypes.c_char_p, ctypes.c_char_p]

NEWNS, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET = 0x20000, 0x4000000, 0x8000000, 0x10000000, 0x20000000, 0x40000000
RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, REC, PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
# statvfs flag -> mount flag: a read-only remount inside a user namespace must keep these (locked) flags
KEEP = ((os.ST_NOSUID, NOSUID), (os.ST_NODEV, NODEV), (os.ST_NOEXEC, NOEXEC), (os.ST_NOATIME, 1024),
        (os.ST_NODIRATIME, 2048), (os.ST_RELATIME, 1 << 21))
MNT_DETACH, PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 2, 1, 38
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41}.get(platform.machine())


def fail(what):
    os.write(2, f"{what}\n".encode())
    os._exit(125)


def check(ret, what):
    if ret != 0:
        fail(f"{what}: {os.strerror(ctypes.get_errno())}")


def mount(src, dst, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    check(libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)), f"mount {dst}")


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


uid, gid = os.geteuid(), os.getegid()
root = uid == 0
try:
    nobody = pwd.getpwnam("nobody")
    nob_uid, nob_gid = nobody.pw_uid, nobody.pw_gid
except KeyError:
    nob_uid = nob_gid = 65534
if cfg["parent"] != os.getppid():
    fail("started by a process that is already gone")
libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

# -- namespaces. Root maps itself and nobody through a helper that stays outside (it keeps the right
# to map another uid); anyone else maps only itself, which the kernel allows from inside.
from_launcher, to_helper = os.pipe()  # (read end, write end)
from_helper, to_launcher = os.pipe()
helper = os.fork() if root else 0
if root and helper == 0:
    os.close(to_helper)
    os.close(from_helper)
    said = os.read(from_launcher, 1)
    try:
        if said == b"u":
            pid = os.getppid()
            maps = f"0 0 1\n{nob_uid} {nob_uid} 1\n", f"0 0 1\n{nob_gid} {nob_gid} 1\n"
            write(f"/proc/{pid}/uid_map", maps[0])
            write(f"/proc/{pid}/gid_map", maps[1])
        os.write(to_launcher, b"k")
    except OSError as e:
        os.write(to_launcher, f"e{e}".encode())
    os._exit(0)
for fd in (from_launcher, to_launcher):
    os.close(fd)
flags = NEWNS | NEWNET | NEWPID | NEWIPC | NEWUTS
userns = libc.unshare(flags | NEWUSER) == 0
if not userns:
    err = os.strerror(ctypes.get_errno())
    if not root or libc.unshare(flags) != 0:
        fail(f"unshare: {err}" + ("" if not root else f"; without a user namespace: {os.strerror(ctypes.get_errno())}"))
if root:
    os.write(to_helper, b"u" if userns else b"n")
    answer = os.read(from_helper, 4096)
    os.waitpid(helper, 0)
    if answer != b"k":
        fail(f"writing the uid/gid maps: {answer[1:].decode(errors='replace')}")
elif userns:
    try:
        write("/proc/self/setgroups", "deny")
        write("/proc/self/uid_map", f"0 {uid} 1\n")
        write("/proc/self/gid_map", f"0 {gid} 1\n")
    except OSError as e:
        fail(f"writing the uid/gid maps: {e}")
os.close(to_helper)
os.close(from_helper)

# -- the program's process: PID 1 of the new PID namespace
alive_r, alive_w = os.pipe()
child = os.fork()
if child:
    os.close(alive_r)

    def _stop(signum, frame):
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)  # returns once the namespace and everything in it is gone
        os._exit(137)

    signal.signal(signal.SIGTERM, _stop)
    _, status = os.waitpid(child, 0)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))

os.close(alive_w)
new = cfg["root"]
mount(None, "/", None, REC | PRIVATE)
mount("tmpfs", new, "tmpfs", NOSUID | NODEV, "mode=0755,size=1m")
for src in cfg["ro"]:
    dst = new + src
    if os.path.islink(src):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.symlink(os.readlink(src), dst)
    elif os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
        mount(src, dst, None, BIND | REC)
        kept = os.statvfs(src).f_flag
        mount(None, dst, None, REMOUNT | BIND | RDONLY | sum(m for st, m in KEEP if kept & st))
os.makedirs(new + "/proc")
if libc.mount(b"proc", (new + "/proc").encode(), b"proc", NOSUID | NODEV | NOEXEC, None) != 0:
    os.rmdir(new + "/proc")  # a container that masks parts of its /proc refuses a new one: go without
os.makedirs(new + "/dev")
mount("tmpfs", new + "/dev", "tmpfs", NOSUID | NOEXEC, "mode=0755,size=64k")
for name in ("null", "zero", "full", "random", "urandom"):
    open(f"{new}/dev/{name}", "w").close()
    mount(f"/dev/{name}", f"{new}/dev/{name}", None, BIND)
for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                     ("stderr", "/proc/self/fd/2")):
    os.symlink(target, f"{new}/dev/{name}")
tmp_opts = f"mode=1777,size={cfg['tmpfs_bytes']}"
for d in ("/dev/shm", "/tmp"):
    os.makedirs(new + d, exist_ok=True)
    mount("tmpfs", new + d, "tmpfs", NOSUID | NODEV, tmp_opts)
os.mkdir(new + "/.oldroot")
if PIVOT_ROOT is None:
    fail(f"pivot_root: no syscall number known for {platform.machine()}")
check(libc.syscall(PIVOT_ROOT, new.encode(), (new + "/.oldroot").encode()), "pivot_root")
os.chdir("/")
check(libc.umount2(b"/.oldroot", MNT_DETACH), "detach the old root")
os.rmdir("/.oldroot")
mount(None, "/", None, REMOUNT | BIND | RDONLY | NOSUID | NODEV)

# -- give up every privilege before running the program
if root:
    os.setgroups([])
    os.setresgid(nob_gid, nob_gid, nob_gid)
    os.setresuid(nob_uid, nob_uid, nob_uid)
elif userns:
    check(libc.unshare(NEWUSER), "unshare a nested user namespace")
    try:
        write("/proc/self/uid_map", f"{uid} 0 1\n")
        write("/proc/self/gid_map", f"{gid} 0 1\n")
    except OSError as e:
        fail(f"writing the nested uid/gid maps: {e}")
check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL), "parent-death signal")  # after setuid, which clears it
if select.select([alive_r], [], [], 0)[0]:  # the launcher died before the signal was armed
    os._exit(137)
os.chdir("/tmp")
os.execve(cfg["python"], [cfg["python"], "-I", "-c", cfg["runner"], *cfg["args"]], cfg["env"])
