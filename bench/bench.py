#!/usr/bin/env python3
"""The side-by-side benchmark's driver; run it through bench/run.sh, which checks the tools and
builds the release binaries first.

For each case it starts a docker-registry on a free loopback port (access log on), pushes a
generated Spack build cache with the `demo-cache` example, and then, over several rounds with
the order rotated, times:

- product:  a cold `spack-mirrord sync --now` into an empty mirror, then `sync -f` (durable);
- skopeo:   `skopeo sync --src docker --dest dir` of the repository, then `sync -f`;
- curl:     `curl -Z --parallel-max 8` of exactly the requests the product made, then `sync -f`;
- floor:    (the `many` case) 8 keep-alive python clients over the same requests, bodies dropped.

Besides: the product's no-op run (time and requests), one new spec among many (requests and
bytes), peak RSS from /usr/bin/time -v, and the product through a proxy that delays every
request. The requests of a run are the lines the registry's access log gained during it.
Writes bench/results/<date>.md and <date>.svg.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from chart import ratio_chart

HERE = Path(__file__).resolve().parent
ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
SEED = 1
CONCURRENCY = 8
MIB = 1 << 20

# name: (specs, payload bytes per spec, description)
FULL = {
    "bulk": (40, 15_000_000, "40 specs, ~600 MB, shared dependency layers"),
    "many": (10_000, 256, "10,000 tiny specs"),
    "blob": (1, 1 << 30, "one 1 GiB blob"),
}
QUICK = {
    "bulk": (8, 7_500_000, "8 specs, ~60 MB, shared dependency layers"),
    "many": (500, 256, "500 tiny specs"),
    "blob": (1, 64 << 20, "one 64 MiB blob"),
}
# The case whose repository the latency run and the one-new-spec run use.
MANY = "many"

LOG_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>\d{3}) (?P<size>\d+|-)')


class BenchError(Exception):
    pass


def say(msg):
    print(msg, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, log, **kw):
    """Runs cmd with its output appended to log; raises BenchError naming the log on failure."""
    with open(log, "ab") as out:
        r = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
    if r.returncode != 0:
        tail = Path(log).read_text(errors="replace").splitlines()[-15:]
        raise BenchError(f"{cmd[0]} exited {r.returncode}; last lines of {log}:\n  " + "\n  ".join(tail))


def timed(cmd, log, durable_dir=None):
    """Runs cmd under /usr/bin/time -v, then `sync -f durable_dir`; returns (seconds, peak RSS bytes)."""
    tfile = Path(str(log) + ".time")
    t0 = time.monotonic()
    run(["/usr/bin/time", "-v", "-o", str(tfile), *cmd], log)
    if durable_dir is not None:
        subprocess.run(["sync", "-f", str(durable_dir)], check=True)
    elapsed = time.monotonic() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", tfile.read_text())
    rss = int(m.group(1)) * 1024 if m else 0
    tfile.unlink()
    return elapsed, rss


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                total += os.stat(p).st_blocks * 512
    return total


class Registry:
    """A docker-registry on a free loopback port, with its access log in a file."""

    def __init__(self, workdir):
        self.dir = workdir
        self.port = free_port()
        self.access_log = workdir / "access.log"
        cfg = workdir / "registry.yml"
        cfg.write_text(
            "version: 0.1\n"
            "log: {level: error, accesslog: {disabled: false}}\n"
            f"storage: {{filesystem: {{rootdirectory: {workdir / 'data'}}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: 127.0.0.1:{self.port}, secret: bench-only}}\n"
        )
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", str(cfg)],
            stdout=open(self.access_log, "wb"),
            stderr=open(workdir / "registry.log", "wb"),
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"docker-registry exited {self.proc.returncode}; see {workdir / 'registry.log'}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(f"docker-registry did not answer on port {self.port} within 15 s")
                time.sleep(0.05)
        self.mark()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _settled_size(self):
        """The access log's size once it stopped growing (the last lines of a run are in)."""
        last = -1
        while True:
            size = self.access_log.stat().st_size
            if size == last:
                return size
            last = size
            time.sleep(0.1)

    def mark(self):
        self.offset = self._settled_size()

    def since_mark(self):
        """The requests logged since the last mark, as (method, path, status, bytes); marks again."""
        end = self._settled_size()
        with open(self.access_log, "rb") as f:
            f.seek(self.offset)
            text = f.read(end - self.offset).decode(errors="replace")
        self.offset = end
        out = []
        for line in text.splitlines():
            m = LOG_LINE.search(line)
            if m:
                size = 0 if m["size"] == "-" else int(m["size"])
                out.append((m["method"], m["path"], int(m["status"]), size))
        return out


class Proxy:
    def __init__(self, upstream_port, delay_ms, log):
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "proxy.py"), str(upstream_port), str(delay_ms)],
            stdout=subprocess.PIPE,
            stderr=open(log, "wb"),
            stdin=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            raise BenchError(f"the delaying proxy did not start; see {log}")
        self.port = int(line)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def summary(requests):
    return {"requests": len(requests), "bytes": sum(r[3] for r in requests)}


class Case:
    def __init__(self, name, specs, payload, about, work, args):
        self.name, self.specs, self.payload, self.about = name, specs, payload, about
        self.work = work / name
        self.work.mkdir()
        self.args = args
        self.repo = f"bench/{name}"
        self.samples = {}  # tool -> list of dicts
        self.extra = {}
        self.registry = None
        self.proxy = None
        # Set while `--compare-bin` runs: a binary that may not know every key.
        self.older = False

    def url(self, port=None):
        return f"oci+http://127.0.0.1:{port or self.registry.port}/{self.repo}"

    def log(self, what):
        return self.work / f"{what}.log"

    def push(self, specs):
        t0 = time.monotonic()
        run([self.args.push, self.url(), str(specs), str(self.payload), str(SEED)], self.log("push"))
        self.registry.since_mark()
        return time.monotonic() - t0

    def config(self, out, port=None):
        cfg = out / "config.toml"
        cfg.write_text(
            f'[source]\nurl = "{self.url(port)}"\n'
            f'[mirror]\nroot = "{out / "mirror"}"\n'
            f'[state]\ndir = "{out / "state"}"\n'
            f"[sync]\nconcurrency = {self.args.concurrency}\n"
            + (f"max_concurrency = {self.args.max_concurrency}\n" if self.args.max_concurrency and not self.older else "")
            +             '[log]\nlevel = "warn"\n'
        )
        return cfg

    def product_sync(self, cfg, out, label):
        """One `sync --now`; returns its sample and the requests it made."""
        secs, rss = timed(
            [self.args.compare_bin if self.older else self.args.bin, "--config", str(cfg), "sync", "--now", "--quiet"],
            self.log(label),
            out,
        )
        reqs = self.registry.since_mark()
        return {"seconds": secs, "rss": rss, **summary(reqs)}, reqs

    def status(self, cfg):
        r = subprocess.run(
            [self.args.bin, "--config", str(cfg), "status", "--json"], capture_output=True, text=True, check=True
        )
        return json.loads(r.stdout)["last_run"]

    def check_run(self, cfg, expect_specs):
        last = self.status(cfg)
        if last["outcome"] != "success" or last["specs_total"] != expect_specs:
            raise BenchError(
                f"{self.name}: the product's run was {last['outcome']} with {last['specs_total']} specs "
                f"(expected success with {expect_specs}): {last.get('error')}"
            )
        return last

    # The tools. Each returns its sample; `keep` leaves its output for the one-new-spec step.

    def product(self, rnd, keep=False):
        out = self.work / f"product-{rnd}"
        out.mkdir()
        cfg = self.config(out)
        cold, _ = self.product_sync(cfg, out, f"product-{rnd}")
        last = self.check_run(cfg, self.specs)
        cold["written"] = du(out / "mirror")
        cold["bytes_fetched"] = last["bytes_fetched"]
        noop, _ = self.product_sync(cfg, out, f"product-{rnd}-noop")
        if self.status(cfg)["blobs_fetched"] != 0:
            raise BenchError(f"{self.name}: the no-op run fetched blobs")
        self.samples.setdefault("noop", []).append(noop)
        if not keep:
            shutil.rmtree(out)
        return cold

    def skopeo(self, rnd, keep=False):
        out = self.work / f"skopeo-{rnd}"
        out.mkdir()
        src = f"127.0.0.1:{self.registry.port}/{self.repo}"
        secs, rss = timed(
            ["skopeo", "sync", "--src", "docker", "--dest", "dir", "--src-tls-verify=false", src, str(out)],
            self.log(f"skopeo-{rnd}"),
            out,
        )
        reqs = self.registry.since_mark()
        sample = {"seconds": secs, "rss": rss, "written": du(out), **summary(reqs)}
        if not keep:
            shutil.rmtree(out)
        return sample

    def curl(self, rnd, keep=False):
        out = self.work / f"curl-{rnd}"
        out.mkdir()
        cfg = self.work / "curl.cfg"
        with open(cfg, "w") as f:
            for i, path in enumerate(self.paths):
                f.write(f'url = "http://127.0.0.1:{self.registry.port}{path}"\noutput = "{out}/{i}"\n')
        secs, rss = timed(
            ["curl", "-Z", "--parallel-max", str(CONCURRENCY), "-sS", "--fail", "-H", f"Accept: {ACCEPT}", "-K", str(cfg)],
            self.log(f"curl-{rnd}"),
            out,
        )
        reqs = self.registry.since_mark()
        sample = {"seconds": secs, "rss": rss, "written": du(out), **summary(reqs)}
        shutil.rmtree(out)
        return sample

    def floor(self, rnd, keep=False):
        secs, rss = timed(
            [sys.executable, str(HERE / "floor.py"), str(self.registry.port), str(self.work / "paths.txt"), str(CONCURRENCY)],
            self.log(f"floor-{rnd}"),
        )
        reqs = self.registry.since_mark()
        return {"seconds": secs, "rss": rss, "written": 0, **summary(reqs)}

    def learn_requests(self):
        """A warm-up cold run whose access-log lines are the requests curl and floor replay."""
        out = self.work / "warmup"
        out.mkdir()
        cfg = self.config(out)
        _, reqs = self.product_sync(cfg, out, "warmup")
        self.check_run(cfg, self.specs)
        shutil.rmtree(out)
        methods = sorted({r[0] for r in reqs})
        if methods != ["GET"]:
            raise BenchError(f"{self.name}: the product sent {methods}, the replay only knows GET")
        bad = [r for r in reqs if r[2] != 200]
        if bad:
            raise BenchError(f"{self.name}: the product's requests include non-200 answers, e.g. {bad[:3]}")
        self.paths = [r[1] for r in reqs]
        (self.work / "paths.txt").write_text("".join(p + "\n" for p in self.paths))
        self.extra["requests_by_kind"] = kinds(self.paths)

    def measure(self):
        reg_dir = self.work / "registry"
        reg_dir.mkdir()
        self.registry = Registry(reg_dir)
        say(f"== {self.name}: {self.about}; registry on 127.0.0.1:{self.registry.port}")
        self.extra["push_seconds"] = self.push(self.specs)
        self.extra["registry_bytes"] = du(reg_dir / "data")
        self.learn_requests()
        tools = ["product", "skopeo", "curl"] + (["floor"] if self.name == MANY else [])
        tools = [t for t in tools if t not in self.args.skip]
        for rnd in range(self.args.rounds):
            order = tools[rnd % len(tools):] + tools[: rnd % len(tools)]
            last = rnd == self.args.rounds - 1
            for tool in order:
                keep = last and self.name == MANY and tool == "product"
                sample = getattr(self, tool)(rnd, keep=keep)
                self.samples.setdefault(tool, []).append(sample)
                say(f"   round {rnd + 1}: {tool:8} {sample['seconds']:8.2f} s  {sample['requests']:6} requests")
        if self.name == MANY:
            self.one_new_spec(self.args.rounds - 1)
            if "latency" not in self.args.skip:
                self.latency()

    def one_new_spec(self, rnd):
        self.push(self.specs + 1)
        out = self.work / f"product-{rnd}"
        cfg = out / "config.toml"
        sample, _ = self.product_sync(cfg, out, "new-spec-product")
        last = self.check_run(cfg, self.specs + 1)
        sample["specs_fetched"] = last["specs_fetched"]
        sample["bytes_fetched"] = last["bytes_fetched"]
        shutil.rmtree(out)
        self.extra["new_spec_product"] = sample

    def latency(self, expect_specs=None, rounds=None, tag=""):
        expect_specs = self.specs + 1 if expect_specs is None else expect_specs
        ms = self.args.latency_ms
        self.proxy = Proxy(self.registry.port, ms, self.log("proxy"))
        say(f"== {self.name} through a proxy adding {ms} ms per request (127.0.0.1:{self.proxy.port})")
        samples = []
        for rnd in range(rounds or self.args.rounds):
            out = self.work / f"latency-{tag}{rnd}"
            out.mkdir()
            cfg = self.config(out, self.proxy.port)
            sample, _ = self.product_sync(cfg, out, f"latency-{tag}{rnd}")
            self.check_run(cfg, expect_specs)
            shutil.rmtree(out)
            samples.append(sample)
            say(f"   round {rnd + 1}: product  {sample['seconds']:8.2f} s  {sample['requests']:6} requests")
        self.proxy.stop()
        self.proxy = None
        self.samples["latency"] = samples
        self.extra["latency_ms"] = ms

    def close(self):
        for p in (self.proxy, self.registry):
            if p is not None:
                p.stop()


def kinds(paths):
    out = {}
    for p in paths:
        if p.rstrip("/") == "/v2":
            k = "/v2/ probe"
        elif "/tags/list" in p:
            k = "tags/list"
        elif "/manifests/" in p:
            k = "manifests"
        elif "/blobs/" in p:
            k = "blobs"
        else:
            k = "other"
        out[k] = out.get(k, 0) + 1
    return out


def med(samples, key="seconds"):
    return statistics.median(s[key] for s in samples)


def spread(samples, key="seconds"):
    vals = [s[key] for s in samples]
    return f"{statistics.median(vals):.2f} ({min(vals):.2f}–{max(vals):.2f})"


def mb(n):
    return f"{n / 1e6:.1f} MB"


def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{os.cpu_count()} cores ({cpu}), {mem / (1 << 30):.0f} GiB RAM, {platform.system()} {platform.release()}"


def versions(args):
    def first(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    rev = first(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"])
    return {
        "spack-mirrord": f"{first([args.bin, '--version'])} (git {rev})",
        "skopeo": first(["skopeo", "--version"]),
        "curl": first(["curl", "--version"]),
        "docker-registry": first(["docker-registry", "--version"]),
        "python3": platform.python_version(),
    }


def report(cases, args, started, workdir_fs):
    variant = "quick" if args.quick else "full"
    lines = [
        f"# Side-by-side benchmark, {started:%Y-%m-%d} ({variant} variant)",
        "",
        f"Made by `bench/run.sh{' --quick' if args.quick else ''}` ({args.rounds} round{'s' if args.rounds != 1 else ''}, order rotated each round) "
        f"on {machine()}; temporary data on {workdir_fs}.",
    ]
    if args.note:
        lines += ["", args.note]
    lines += ["", "Versions: " + "; ".join(f"{k} {v}" for k, v in versions(args).items()) + ".", ""]
    lines += [
        "Seconds are medians (min–max) over the rounds; ratios are the other tool's median time over the "
        "product's (above 1: the product is faster). Times include `sync -f` on the output's file system.",
        "",
        "| case | spack-mirrord sync --now | skopeo sync | curl -Z (same requests) | 8 keep-alive clients | skopeo ÷ product | curl ÷ product | floor ÷ product |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for c in cases:
        p = med(c.samples["product"])
        row = [c.about] + [spread(c.samples[t]) if t in c.samples else "–" for t in ("product", "skopeo", "curl", "floor")]
        rs = {}
        for t in ("skopeo", "curl", "floor"):
            if t in c.samples:
                rs[t] = med(c.samples[t]) / p
        row += [f"{rs[t]:.2f}" if t in rs else "–" for t in ("skopeo", "curl", "floor")]
        lines.append("| " + " | ".join(row) + " |")
        ratios.append((c.name, rs))
    lines += [
        "",
        "Requests (from the registry's access log), bytes served, bytes written and peak RSS (medians):",
        "",
        "| case | tool | requests | bytes served | bytes written | peak RSS |",
        "|---|---|---|---|---|---|",
    ]
    for c in cases:
        for t in ("product", "skopeo", "curl", "floor"):
            if t in c.samples:
                s = c.samples[t]
                lines.append(
                    f"| {c.name} | {t} | {int(med(s, 'requests'))} | {mb(med(s, 'bytes'))} | "
                    f"{mb(med(s, 'written')) if t != 'floor' else '–'} | {med(s, 'rss') / MIB:.0f} MiB |"
                )
    lines += [
        "",
        "The product's requests in a cold run, by kind: "
        + "; ".join(f"{c.name}: " + ", ".join(f"{v} {k}" for k, v in sorted(c.extra["requests_by_kind"].items())) for c in cases)
        + ".",
        "",
        "No-op run (`sync --now` again, nothing changed upstream):",
        "",
        "| case | seconds | requests | bytes served |",
        "|---|---|---|---|",
    ]
    for c in cases:
        s = c.samples["noop"]
        lines.append(f"| {c.name} | {spread(s)} | {int(med(s, 'requests'))} | {mb(med(s, 'bytes'))} |")
    many = next((c for c in cases if c.name == MANY), None)
    if many is not None:
        np_ = many.extra["new_spec_product"]
        lines += [
            "",
            f"One new spec among {many.specs} (one more pushed, with a new index; one run onto the last round's mirror):",
            "",
            "| tool | seconds | requests | bytes served |",
            "|---|---|---|---|",
            f"| spack-mirrord sync --now | {np_['seconds']:.2f} | {np_['requests']} | {mb(np_['bytes'])} "
            f"(specs fetched {np_['specs_fetched']}, tarball bytes {np_['bytes_fetched']}) |",
            "| skopeo sync | – | – | – (it refuses to sync into a directory it wrote before, "
            '"Refusing to overwrite destination directory"; an update is a fresh sync, as in the first table) |',
        ]
        lat = many.samples.get("latency")
        ms = many.extra.get("latency_ms", 0)
        reqs = med(lat, "requests") if lat else 0
        bound = reqs * ms / 1000 / CONCURRENCY
        lines += [] if not lat else [
            "",
            f"Latency: the {many.specs + 1}-spec repository through a proxy adding {ms} ms to every request "
            f"(cold runs, concurrency {CONCURRENCY}); the bound is requests × latency ÷ concurrency:",
            "",
            "| seconds | requests | requests × latency ÷ concurrency | seconds ÷ bound | without the proxy |",
            "|---|---|---|---|---|",
            f"| {spread(lat)} | {int(reqs)} | {bound:.2f} | {med(lat) / bound:.2f} | {med(many.samples['product']):.2f} |",
        ]
    lines += ["", "Sizes and set-up:", "", "| case | specs | payload per spec | registry data | push seconds |", "|---|---|---|---|---|"]
    for c in cases:
        lines.append(f"| {c.name} | {c.specs} | {c.payload} B | {mb(c.extra['registry_bytes'])} | {c.extra['push_seconds']:.1f} |")
    lines += [
        "",
        "How it is measured: each case has its own docker-registry on 127.0.0.1 with the access log on; "
        "a run's requests are the lines the log gained during it. Before the rounds, one untimed cold run of "
        "the product records its requests (method, path); curl (`-Z --parallel-max 8`, Accept headers for "
        "manifests) and the 8 keep-alive clients replay exactly those. skopeo syncs every tag into a directory "
        "per image, so it fetches and writes a shared dependency layer once per image that has it. "
        "Peak RSS is /usr/bin/time -v's maximum resident set size of the tool's process.",
        "",
        "All samples:",
        "",
        "| case | tool | round | seconds | requests | peak RSS |",
        "|---|---|---|---|---|---|",
    ]
    for c in cases:
        for t, ss in c.samples.items():
            for i, s in enumerate(ss):
                lines.append(f"| {c.name} | {t} | {i + 1} | {s['seconds']:.2f} | {s['requests']} | {s['rss'] / MIB:.0f} MiB |")
    return "\n".join(lines) + "\n", ratios


def latency_only(args, work):
    """`--latency-specs N`: N tiny specs, cold runs through the delaying proxy only."""
    n, ms = args.latency_specs, args.latency_ms
    case = Case("latency", n, 256, f"{n} tiny specs behind {ms} ms", work, args)
    try:
        reg_dir = case.work / "registry"
        reg_dir.mkdir()
        case.registry = Registry(reg_dir)
        say(f"== {case.about}; registry on 127.0.0.1:{case.registry.port}")
        case.push(n)
        runs = [(args.bin, False)] + ([(args.compare_bin, True)] if args.compare_bin else [])
        results = []
        for rnd in range(args.rounds):
            for binary, older in runs if rnd % 2 == 0 else runs[::-1]:
                case.older = older
                case.latency(expect_specs=n, rounds=1, tag=f"{'older' if older else 'bin'}-{rnd}")
                results.append((binary, case.samples.pop("latency")[0]))
    finally:
        case.close()
    max_c = args.max_concurrency or "unset"
    lines = [
        f"# Latency: {n} specs behind {ms} ms ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)",
        "",
        f"{machine()}; sync.concurrency {args.concurrency}, sync.max_concurrency {max_c} "
        f"(not written for --compare-bin); the bound is requests × latency ÷ {CONCURRENCY}. {args.note}",
        "",
        "| binary | seconds (median, spread) | requests | bound | seconds ÷ bound |",
        "|---|---|---|---|---|",
    ]
    for binary, _ in runs:
        lat = [x for b, x in results if b == binary]
        reqs = med(lat, "requests")
        bound = reqs * ms / 1000 / CONCURRENCY
        lines.append(f"| {binary} | {spread(lat)} | {int(reqs)} | {bound:.2f} | {med(lat) / bound:.2f} |")
    lines.append("")
    lines += [f"- {b}: {x['seconds']:.2f} s, {x['requests']} requests" for b, x in results]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="the spack-mirrord binary")
    ap.add_argument("--push", required=True, help="the demo-cache example binary")
    ap.add_argument("--quick", action="store_true", help="reduced sizes")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", default="bulk,many,blob", help="comma-separated: bulk, many, blob")
    ap.add_argument("--latency-ms", type=int, default=50)
    ap.add_argument("--latency-specs", type=int, default=0, help="run only the latency case, with N specs")
    ap.add_argument("--concurrency", type=int, default=CONCURRENCY, help="sync.concurrency of the product")
    ap.add_argument("--max-concurrency", type=int, default=0, help="sync.max_concurrency (default: unset)")
    ap.add_argument("--compare-bin", default="", help="with --latency-specs: another spack-mirrord to run in turn")
    ap.add_argument(
        "--skip",
        default="",
        type=lambda v: {t for t in v.split(",") if t},
        help="comma-separated parts to leave out: skopeo, curl, floor, or latency (the many case's proxy runs); the results file is named for it",
    )
    ap.add_argument("--tmpdir", default=os.environ.get("BENCH_TMPDIR") or tempfile.gettempdir())
    ap.add_argument("--results", default=str(HERE / "results"))
    ap.add_argument("--note", default=os.environ.get("BENCH_NOTE", ""), help="a line for the results file")
    ap.add_argument("--keep", action="store_true", help="leave the temporary directory")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    table = QUICK if args.quick else FULL
    names = [n for n in args.cases.split(",") if n]
    unknown = [n for n in names if n not in table]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; known: {list(table)}")
    known = {"skopeo", "curl", "floor", "latency"}
    if args.skip - known:
        ap.error(f"--skip names {sorted(args.skip - known)}; known: skopeo, curl, floor, latency")

    # Room: the registry's copy plus one tool's output at a time, per case, and slack; skopeo
    # writes a shared layer once per image (3.4 times the payload in the quick bulk case).
    need = sum(6 * table[n][0] * table[n][1] for n in names) + 512 * MIB
    free = shutil.disk_usage(args.tmpdir).free
    if free < need:
        raise BenchError(
            f"{args.tmpdir} has {free / MIB:.0f} MiB free, the benchmark needs about {need / MIB:.0f} MiB; "
            "set BENCH_TMPDIR to a roomier directory"
        )
    if args.latency_specs:
        work = Path(tempfile.mkdtemp(prefix="spack-mirrord-bench.", dir=args.tmpdir))
        try:
            text = latency_only(args, work)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        results = Path(args.results)
        results.mkdir(parents=True, exist_ok=True)
        out = results / f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}-latency-{args.latency_specs}.md"
        with open(out, "a") as f:
            f.write(text + "\n")
        say(text)
        say(f"== appended to {out}")
        return
    work = Path(tempfile.mkdtemp(prefix="spack-mirrord-bench.", dir=args.tmpdir))
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(work)], capture_output=True, text=True).stdout.strip()
    started = datetime.datetime.now(datetime.timezone.utc)
    say(f"== working in {work} ({fs}); {args.rounds} round{'s' if args.rounds != 1 else ''}; {'quick' if args.quick else 'full'} sizes")
    cases = []
    try:
        for n in names:
            specs, payload, about = table[n]
            case = Case(n, specs, payload, about, work, args)
            cases.append(case)
            try:
                case.measure()
            finally:
                case.close()
        text, ratios = report(cases, args, started, f"{fs} ({args.tmpdir})")
    finally:
        if args.keep:
            say(f"== left {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    stem = f"{started:%Y-%m-%d}"
    if args.cases != "bulk,many,blob" or args.skip:
        stem += "-" + "-".join(names) + "".join(f"-no-{t}" for t in sorted(args.skip))
    svg = results / f"{stem}.svg"
    svg.write_text(ratio_chart(ratios, f"Other tools' time ÷ spack-mirrord's ({'quick' if args.quick else 'full'} variant, {stem})"))
    text += f"\n![ratios]({svg.name})\n"
    (results / f"{stem}.md").write_text(text)
    say("")
    say(text)
    say(f"== wrote {results / (stem + '.md')} and {svg}")


def on_term(signum, frame):
    raise SystemExit(f"bench: stopped by signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_term)
    try:
        main()
    except BenchError as e:
        sys.exit(f"bench: error: {e}")
