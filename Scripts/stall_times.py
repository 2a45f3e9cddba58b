#!/usr/bin/env python3
"""Detection times of a stuck (SIGSTOP) or dead (SIGKILL) rank (docs/RELIABILITY.md).

Runs `mpirun -n 2 gemma-node generate -p "Once upon a time" -n 400 --step-timeout T` on the
default model, waits until tokens flow, sends the signal to rank 1 and records, from the
moment of the signal: when rank 0's "fatal: rank 1 ..." line appears on mpirun's stderr
(what a user sees), when mpirun's own first message appears, and when mpirun exits.
Standard library only.

    Scripts/stall_times.py [--binary .build/release/gemma-node] [--trials 3] [--step-timeout 3] [--serve]

With --serve, also `mpirun -n 2 gemma-node serve` with a streaming and a non-streaming request
in flight (Scripts/test_stall_client.py inflight): times from SIGSTOP of rank 1 to /health
answering 503, to both requests having ended, and to mpirun's exit.
"""
import argparse
import json
import os
import subprocess
import threading
import time

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OPENBLAS_NUM_THREADS="1")


def rank_pid(parent, rank):
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            if ppid != parent:
                continue
            env = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
            if f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
                return int(entry)
        except (OSError, ValueError):
            continue
    return None


def trial(binary, sig, timeout):
    cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-n", "2", binary, "generate",
           "-p", "Once upon a time", "-n", "400", "--temp", "0", "-t", "1", "-c", "1024", "--step-timeout", str(timeout)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    lines = []  # (time, text)

    def read_err():
        for raw in p.stderr:
            lines.append((time.monotonic(), raw.decode(errors="replace").rstrip()))

    reader = threading.Thread(target=read_err)
    reader.start()
    got = 0
    while got < 40:
        chunk = p.stdout.read1(256)
        if not chunk:
            break
        got += len(chunk)
    threading.Thread(target=lambda: p.stdout.read(), daemon=True).start()
    victim = rank_pid(p.pid, 1)
    t0 = time.monotonic()
    os.kill(victim, sig)
    p.wait(120)
    t_exit = time.monotonic() - t0
    reader.join(10)
    try:
        os.kill(victim, 9)
    except ProcessLookupError:
        pass
    ours = next((t - t0 for t, l in lines if "fatal: rank 1" in l), None)
    theirs = next((t - t0 for t, l in lines if l.startswith("Primary job") or l.startswith("MPI_ABORT")
                   or "mpirun noticed" in l), None)
    text = next((l for _, l in lines if "fatal: rank 1" in l), "(no message)")
    return ours, theirs, t_exit, p.returncode, text


def serve_trial(binary, timeout):
    cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-n", "2", binary, "serve", "--port", "0",
           "-c", "4096", "-t", "1", "--parallel", "2", "--step-timeout", str(timeout)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    port = None
    for raw in p.stdout:
        line = raw.decode(errors="replace")
        if " on http://127.0.0.1:" in line:
            port = int(line.split(" on http://127.0.0.1:")[1].split()[0])
            break
    threading.Thread(target=lambda: p.stdout.read(), daemon=True).start()
    threading.Thread(target=lambda: p.stderr.read(), daemon=True).start()
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_stall_client.py")
    c = subprocess.Popen([os.environ.get("GEMMA_NODE_PYTHON", "python3"), script, "inflight", "--port", str(port),
                          "--max-tokens", "3000"], stdout=subprocess.PIPE)
    times = {}
    victim = None
    t0 = None
    for raw in c.stdout:
        line = raw.decode().strip()
        if line == "STARTED":
            victim = rank_pid(p.pid, 1)
            t0 = time.monotonic()
            os.kill(victim, 19)
        elif line.startswith("RESULT ") and t0 is not None:
            kind = json.loads(line[7:])
            times[kind["kind"]] = (time.monotonic() - t0, kind.get("status"))
    p.wait(120)
    t_exit = time.monotonic() - t0
    try:
        os.kill(victim, 9)
    except (ProcessLookupError, TypeError):
        pass
    return times, t_exit, p.returncode


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=".build/release/gemma-node")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--step-timeout", type=float, default=3)
    ap.add_argument("--serve", action="store_true")
    a = ap.parse_args()
    if a.serve:
        print("serve trial  health_503_s  requests_ended_s  exit_s  status")
        for i in range(a.trials):
            times, t_exit, status = serve_trial(a.binary, a.step_timeout)
            h = times.get("health", (None, None))
            ended = max(times.get("plain", (0, 0))[0], times.get("stream", (0, 0))[0])
            print(f"serve {i}  {h[0]:.2f} (status {h[1]})  {ended:.2f} (plain {times.get('plain', (0, '-'))[1]}, "
                  f"stream {times.get('stream', (0, '-'))[1]})  {t_exit:.2f}  {status}")
        return
    print("signal  trial  our_message_s  mpirun_first_message_s  exit_s  status")
    for name, sig in (("SIGSTOP", 19), ("SIGKILL", 9)):
        for i in range(a.trials):
            ours, theirs, t_exit, status, text = trial(a.binary, sig, a.step_timeout)
            f = lambda x: "-" if x is None else f"{x:.2f}"
            print(f"{name}  {i}  {f(ours)}  {f(theirs)}  {t_exit:.2f}  {status}")
            print(f"    {text}")


if __name__ == "__main__":
    main()
