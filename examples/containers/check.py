#!/usr/bin/env python3
"""check.py: runs what the compose files in this directory run, without Docker.

    sudo python3 examples/containers/check.py --bin DIR [COMPOSE_FILE ...]

DIR holds the image's two programs under their image names, bips-producer and
bips-consumer (std-shim/examples/{producer,consumer}, `cargo build --release -p
bips --examples`); scripts/test-c.sh prepares it. Needs root, util-linux
(unshare, nsenter, setpriv) and PyYAML. Without a file argument it checks
docker-compose.yml and docker-compose.memfd.yml.

Each compose file is read with yaml.safe_load, and each service's `command`,
`user`, `group_add`, `environment`, `ipc`, `shm_size` and `volumes` are turned
into what Docker would set up:
  * every service gets its own mount, PID (with its own /proc) and IPC
    namespace, a fresh tmpfs at /dev/shm (`shm_size`), and the image's
    programs at /usr/local/bin (DIR bind-mounted there);
  * `ipc: "service:producer"` joins the producer's IPC namespace and
    bind-mounts the producer's /dev/shm, as Docker does; nothing else is shared;
  * a named volume of the `local` driver with `type: tmpfs` is one tmpfs
    mounted with the volume's `o` options and bind-mounted into every service
    that lists it;
  * `init: true` keeps a process (the setup shell) at PID 1 with the command
    as its child, as Docker's init does;
  * `user: "UID:GID"` and `group_add` become `setpriv --reuid --regid
    --groups`, `environment` the only variables the command sees.
Then, for each file:
  1. as written: both services exit 0, the consumer received frames until
     the producer left, and nothing is left in the producer's /dev/shm or in
     the volumes;
  2. the consumer without its `group_add`: it fails with "permission denied";
  3. the consumer without `--trust-owner UID`: it fails naming the untrusted
     owner (the uid check of README.md, "Trust").
So 2 and 3 show that each setting of the compose file is needed, and 1 that
they suffice. Prints "N passed, M failed"; exit 1 on a failure.
"""

import argparse
import copy
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAMS = ("bips-producer", "bips-consumer")


def load(path):
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    services = doc.get("services") or {}
    if set(services) != {"producer", "consumer"}:
        raise SystemExit(f"{path}: expected services producer and consumer, got {sorted(services)}")
    for name, svc in services.items():
        cmd = svc.get("command")
        if not isinstance(cmd, list) or cmd[0] not in PROGRAMS:
            raise SystemExit(f"{path}: {name}.command must be a list starting with one of {PROGRAMS}")
        if "user" not in svc:
            raise SystemExit(f"{path}: {name} has no user")
    return doc


def shm_size(svc):
    size = str(svc.get("shm_size", "64mb")).lower()  # Docker's default
    m = re.fullmatch(r"(\d+)\s*([kmg]?)b?", size)
    if not m:
        raise SystemExit(f"shm_size {size!r} not understood")
    return m.group(1) + m.group(2)


def environment(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {str(k): str(v) for k, v in env.items()}


def credentials(svc):
    uid, _, gid = str(svc["user"]).partition(":")
    groups = [str(g) for g in svc.get("group_add", [])]
    args = ["setpriv", f"--reuid={uid}", f"--regid={gid or uid}"]
    args.append(f"--groups={','.join(groups)}" if groups else "--clear-groups")
    return args


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


class Run:
    """One `docker compose up` of a compose file, the equivalent way."""

    def __init__(self, doc, bindir, work, tag):
        self.doc, self.bindir, self.work, self.tag = doc, bindir, work, tag
        self.volumes = {}
        self.shms = {}
        self.procs = {}
        self.inner = {}

    def mount_volumes(self):
        for name, vol in (self.doc.get("volumes") or {}).items():
            opts = (vol or {}).get("driver_opts") or {}
            if (vol or {}).get("driver", "local") != "local" or opts.get("type") != "tmpfs":
                raise SystemExit(f"volume {name}: only local tmpfs volumes are reproduced here")
            path = os.path.join(self.work, f"{self.tag}-vol-{name}")
            os.mkdir(path)
            subprocess.run(["mount", "-t", "tmpfs", "-o", opts.get("o", ""), "tmpfs", path], check=True)
            self.volumes[name] = path

    def shm(self, name, svc):
        """A service's /dev/shm: a tmpfs made out here and bind-mounted in, as Docker does."""
        path = os.path.join(self.work, f"{self.tag}-{name}-shm")
        os.mkdir(path)
        opts = f"size={shm_size(svc)},mode=1777,nosuid,nodev,noexec"
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", path], check=True)
        self.shms[name] = path
        return path

    def script(self, name, svc, shm):
        """The shell run as root inside the service's new namespaces, ending in exec of its command."""
        lines = ["set -eu", f"mount --bind {shlex.quote(shm)} /dev/shm"]
        lines.append(f"mount --bind {shlex.quote(self.bindir)} /usr/local/bin")
        for spec in svc.get("volumes", []):
            vol, target = spec.split(":")[:2]
            if vol not in self.volumes:
                raise SystemExit(f"{name}: volume {vol} is not declared")
            t = shlex.quote(target)
            parent = shlex.quote(os.path.dirname(target))
            # The mount point exists in the image; here make it without touching the host.
            lines.append(f"[ -d {t} ] || {{ mount -t tmpfs tmpfs {parent}; mkdir -p {t}; }}")
            lines.append(f"mount --bind {shlex.quote(self.volumes[vol])} {t}")
        env = ["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/"]
        env += [f"{k}={v}" for k, v in environment(svc).items()]
        cmd = credentials(svc) + env + [str(a) for a in svc["command"]]
        # init: true puts an init process at PID 1 and the command under it; here the shell
        # stays PID 1 (it forwards no signal, but none is sent in these runs).
        lines.append(shlex.join(cmd) if svc.get("init") else "exec " + shlex.join(cmd))
        return "\n".join(lines)

    def start(self, name, svc):
        wrapper = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc", "--ipc"]
        ipc = svc.get("ipc")
        if ipc == "service:producer":
            # The producer's IPC namespace, and its /dev/shm.
            wrapper = ["nsenter", f"--ipc=/proc/{self.inner['producer']}/ns/ipc", "--"] + wrapper[:-1]
            shm = self.shms["producer"]
        elif ipc in (None, "private", "shareable"):
            shm = self.shm(name, svc)
        else:
            raise SystemExit(f"{name}: ipc {ipc!r} is not reproduced here")
        p = subprocess.Popen(wrapper + ["sh", "-c", self.script(name, svc, shm)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs[name] = p
        deadline = time.monotonic() + 10
        while not children(p.pid):  # unshare's child: the service's PID 1
            if p.poll() is not None:
                return  # ended at once: its exit status and output tell why
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} did not start in 10 s")
            time.sleep(0.01)
        pid1 = children(p.pid)[0]
        # Docker sets up a container's mounts before its command runs: wait until the
        # setup script runs the command (PID 1 or, under init, its child).
        want = os.path.basename(str(svc["command"][0]))[:15]
        while True:
            pid = next((q for q in [pid1, *children(pid1)] if comm(q) == want), None)
            if pid is not None:
                self.inner[name] = pid
                break
            if p.poll() is not None:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} did not start in 10 s")
            time.sleep(0.01)

    def leftovers(self):
        left = []
        for name, path in self.volumes.items():
            left += [f"volume {name}: {f}" for f in os.listdir(path)]
        for name, path in self.shms.items():
            left += [f"{name}'s /dev/shm: {f}" for f in os.listdir(path)]
        return left

    def cleanup(self):
        for name, p in self.procs.items():
            if p.poll() is None:
                try:
                    os.kill(self.inner[name], signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.kill()
            p.wait()
        for path in [*self.shms.values(), *self.volumes.values()]:
            if os.path.ismount(path):
                subprocess.run(["umount", "-l", path], check=False)


def up(doc, bindir, work, tag, expect):
    """Runs producer then consumer; expect is None (success) or a regex the consumer's failure matches."""
    run = Run(doc, bindir, work, tag)
    try:
        run.mount_volumes()
        run.start("producer", doc["services"]["producer"])
        # depends_on: the producer's container is up; the consumer retries while the channel is not there yet.
        run.start("consumer", doc["services"]["consumer"])
        cout, cerr = run.procs["consumer"].communicate(timeout=60)
        print(f"  consumer exit {run.procs['consumer'].returncode}\n" + indent(cout + cerr))
        if expect is not None:
            ok = run.procs["consumer"].returncode != 0 and re.search(expect, cerr, re.I) is not None
            if not ok:
                print(f"  expected the consumer to fail with /{expect}/")
            return ok
        pout, perr = run.procs["producer"].communicate(timeout=60)
        print(f"  producer exit {run.procs['producer'].returncode}\n" + indent(pout + perr))
        m = re.search(r"producer gone after (\d+) frames", cout)
        ok = run.procs["producer"].returncode == 0 and run.procs["consumer"].returncode == 0
        ok = ok and m is not None and int(m.group(1)) > 0
        left = run.leftovers()
        if left:
            print(f"  left behind: {left}")
        return ok and not left
    except subprocess.TimeoutExpired:
        print("  timed out")
        return False
    finally:
        run.cleanup()


def indent(text):
    lines = text.strip().splitlines()
    if len(lines) > 8:
        lines = lines[:4] + ["..."] + lines[-3:]
    return "\n".join("    | " + line for line in lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="directory with bips-producer and bips-consumer")
    ap.add_argument("files", nargs="*")
    a = ap.parse_args()
    files = a.files or [os.path.join(HERE, "docker-compose.yml"), os.path.join(HERE, "docker-compose.memfd.yml")]
    bindir = os.path.abspath(a.bin)
    for p in PROGRAMS:
        if not os.access(os.path.join(bindir, p), os.X_OK):
            raise SystemExit(f"{bindir}/{p} missing")
    if os.geteuid() != 0:
        raise SystemExit("check.py needs root (namespaces, mounts, setpriv)")
    if os.environ.get("BIPS_CHECK_NS") != "1":
        # Every mount made here lives in a private mount namespace of its own, gone when it ends.
        os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", "env", "BIPS_CHECK_NS=1",
                              sys.executable, *sys.argv])
    os.chmod(bindir, 0o755)  # the services' users must reach their programs
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="bips-compose-") as work:
        for path in files:
            doc = load(path)
            base = os.path.basename(path)
            cases = [("as written", doc, None)]
            no_group = copy.deepcopy(doc)
            no_group["services"]["consumer"].pop("group_add", None)
            cases.append(("consumer without group_add", no_group, r"permission denied"))
            no_trust = copy.deepcopy(doc)
            cmd = no_trust["services"]["consumer"]["command"]
            if "--trust-owner" in cmd:
                i = cmd.index("--trust-owner")
                del cmd[i:i + 2]
            cases.append(("consumer without --trust-owner", no_trust, r"is not trusted"))
            for i, (what, d, expect) in enumerate(cases):
                print(f"{base}: {what}")
                if up(d, bindir, work, f"{i}-{base}", expect):
                    passed += 1
                    print(f"ok    {base}: {what}")
                else:
                    failed += 1
                    print(f"FAIL  {base}: {what}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
