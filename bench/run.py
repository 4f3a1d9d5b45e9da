"""Runs each candle benchmark next to its PyTorch equivalent and tabulates the ratio.

    python bench/run.py [--python PY] [--only train,generate,embed,policy,serve] [--write] [--no-build]

Builds `cargo build --release -p mismatch-bench`, then for every pair whose files exist
(train: bench-train vs bench/torch_train.py; generate: bench-generate vs
bench/torch_generate.py; embed: bench-embed vs bench/torch_embed.py; policy-{ppo,rloo,dpo}
and policy-{ppo,rloo,dpo}-t1 (`--only policy` for all six): bench-policy vs
bench/torch_policy.py at 2 and 1 threads; smollm2-{ppo,rloo} (`--only smollm2`): the same on
SmolLM2-135M, plus smollm2-rloo-long with ~100-token prompts; serve-{1,4,16} (`--only serve`):
bench-serve, `mismatch serve` under that many concurrent clients, vs bench/torch_generate.py at
that batch; rm-smollm2: bench-rm on SmolLM2-135M vs bench/torch_rm_decoder.py, minutes) runs both with the same
arguments, each printing one JSON line with `tokens_per_s`. Prints a table of both numbers
and candle/PyTorch; with --write appends a dated section (machine, command, numbers, raw JSON)
to docs/benchmarks-history.md. docs/benchmarks.md holds the current result of each benchmark.
"""
import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# PyTorch side: `--python PY`, else $MISMATCH_TORCH_PYTHON, else python3 (`pip install -r bench/requirements.txt`).
DEFAULT_PYTHON = os.environ.get("MISMATCH_TORCH_PYTHON", "python3")

# name -> (binary, python script, shared arguments)
PAIRS = {
    "train": ("bench-train", "bench/torch_train.py",
              ["--n-layer", "4", "--n-embd", "256", "--n-head", "4", "--block", "128", "--batch", "16", "--vocab", "96"]),
    "generate": ("bench-generate", "bench/torch_generate.py", ["--batch", "8", "--new-tokens", "64"]),
    "embed": ("bench-embed", "bench/torch_embed.py", ["--batch", "32", "--n", "256"]),
    "rm": ("bench-rm", "bench/torch_rm.py", ["--pairs", "16", "--batch", "8", "--seq", "128"]),
    # SmolLM2-135M reward model, full fine-tune, 8 pairs × 512 tokens per step, gradient
    # checkpointing on both sides (bench/torch_rm_decoder.py: AutoModelForSequenceClassification).
    "rm-smollm2": ("bench-rm", "bench/torch_rm_decoder.py",
                   ["--backbone", "smollm2-135m", "--pairs", "16", "--batch", "8", "--seq", "512", "--runs", "1",
                    "--gradient-checkpointing", "on"]),
}
# Policy-optimisation steps (rollout + update) on the tiny GPT, 16 prompts × 4 samples, 24 new
# tokens, at 2 and 1 threads: bench-policy vs bench/torch_policy.py.
for _algo in ("ppo", "rloo", "dpo"):
    for _t in ("2", "1"):
        PAIRS[f"policy-{_algo}" + ("" if _t == "2" else "-t1")] = (
            "bench-policy", "bench/torch_policy.py", ["--algo", _algo, "--threads", _t])
# The same loops on SmolLM2-135M (f32 from the cached Q4_1 GGUF), on a smaller batch: 4 prompts ×
# 2 samples, 16 new tokens, 2 threads. Not in the `policy` group (minutes per run).
for _algo in ("ppo", "rloo"):
    PAIRS[f"smollm2-{_algo}"] = ("bench-policy", "bench/torch_policy.py",
                                 ["--algo", _algo, "--model", "smollm2-135m", "--prompts", "4", "--samples", "2",
                                  "--new-tokens", "16", "--steps", "3", "--warmup", "1"])
# RLOO with prompts as long as real RLHF prompts (the sentence 8 times, ~100 tokens) and 4
# samples each: where scoring each prompt once for its samples pays.
PAIRS["smollm2-rloo-long"] = ("bench-policy", "bench/torch_policy.py",
                              ["--algo", "rloo", "--model", "smollm2-135m", "--prompts", "2", "--samples", "4",
                               "--new-tokens", "16", "--prompt-repeat", "8", "--steps", "3", "--warmup", "1"])
# Serving: `mismatch serve` with 1, 4 and 16 clients at once (bench-serve) against transformers'
# generate over the same prompts as one batch of that size (torch_generate.py).
for _c in ("1", "4", "16"):
    PAIRS[f"serve-{_c}"] = ("bench-serve", "bench/torch_generate.py", ["--batch", _c, "--new-tokens", "32"])
# Names for --only that stand for several pairs.
GROUPS = {"policy": [n for n in PAIRS if n.startswith("policy-")],
          "serve": [n for n in PAIRS if n.startswith("serve-")],
          "smollm2": [n for n in PAIRS if n.startswith("smollm2-")]}


def run_json(cmd):
    """Runs `cmd` and returns the last stdout line that parses as a JSON object."""
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited with {p.returncode}:\n{p.stderr.strip()}")
    for line in reversed(p.stdout.strip().splitlines()):
        try:
            obj = json.loads(line)
            # The embedding pair counts sentences, not tokens: one throughput column serves all.
            if isinstance(obj, dict) and "tokens_per_s" not in obj and "sentences_per_s" in obj:
                obj["tokens_per_s"] = obj["sentences_per_s"]
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    raise RuntimeError(f"{shlex.join(cmd)} printed no JSON line:\n{p.stdout}")


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs (nproc {len(os.sched_getaffinity(0))})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=DEFAULT_PYTHON, help="Python with torch (default %(default)s)")
    ap.add_argument("--only", default=",".join(n for n in PAIRS if not n.startswith("smollm2-") and n != "rm-smollm2"),
                    help="comma-separated pairs or groups to run (default: all but the smollm2 group and rm-smollm2)")
    ap.add_argument("--write", action="store_true", help="append the results to docs/benchmarks-history.md")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build")
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs per pair; the median is reported")
    a = ap.parse_args()
    names = [m for n in a.only.split(",") if n.strip() for m in GROUPS.get(n.strip(), [n.strip()])]
    unknown = [n for n in names if n not in PAIRS]
    if unknown:
        sys.exit(f"unknown pair(s) {unknown}; known: {list(PAIRS)} and groups {list(GROUPS)}")
    if not a.no_build:
        # Only the binaries of the selected pairs whose sources exist, so that one unfinished
        # benchmark does not block the others.
        bins = sorted({b for b, _, _ in (PAIRS[n] for n in names)
                       if os.path.exists(os.path.join(ROOT, "crates", "bench", "src", "bin", b + ".rs"))})
        if bins:
            cmd = ["cargo", "build", "--release", "-p", "mismatch-bench"]
            for b in bins:
                cmd += ["--bin", b]
            subprocess.run(cmd, cwd=ROOT, check=True)
    rows = []
    load_before = f"{os.getloadavg()[0]:.2f}"
    for name in names:
        binary, script, args = PAIRS[name]
        bin_path = os.path.join(ROOT, "target", "release", binary)
        if not (os.path.exists(bin_path) and os.path.exists(os.path.join(ROOT, script))):
            print(f"skipping {name}: {binary} or {script} missing", file=sys.stderr)
            continue
        # Alternate the two implementations and keep each one's median run: load from other
        # processes then hits both alike.
        cs, ts = [], []
        for _ in range(a.repeat):
            cs.append(run_json([bin_path] + args))
            ts.append(run_json([a.python, script] + args))
        c = sorted(cs, key=lambda r: r["tokens_per_s"])[len(cs) // 2]
        t = sorted(ts, key=lambda r: r["tokens_per_s"])[len(ts) // 2]
        ratio = c["tokens_per_s"] / t["tokens_per_s"]
        rows.append((name, " ".join(args), c, t, ratio, cs + ts))
    if not rows:
        sys.exit("no benchmark pair available")
    header = "| bench | arguments | candle per s median (range) | PyTorch per s median (range) | candle/PyTorch | GEMM GFLOP/s candle / PyTorch |\n|---|---|---:|---:|---:|---:|"

    def gemm(c, t):
        if "gemm_gflops" in c and "gemm_gflops" in t:
            return f"{c['gemm_gflops']:.0f} / {t['gemm_gflops']:.0f}"
        return "-"

    def span(runs, impl):
        v = sorted(r["tokens_per_s"] for r in runs if r.get("impl") == impl)
        return f" ({v[0]:.0f}–{v[-1]:.0f})" if len(v) > 1 else ""

    lines = [f"| {n} | `{args}` | {c['tokens_per_s']:.0f}{span(runs, c.get('impl'))} | "
             f"{t['tokens_per_s']:.0f}{span(runs, t.get('impl'))} | {r:.2f} | {gemm(c, t)} |"
             for n, args, c, t, r, runs in rows]
    table = "\n".join([header] + lines)
    print(table)
    if a.write:
        torch_version = next((t.get("torch") for _, _, _, t, _, _ in rows if t.get("torch")), "?")
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        cmd = "python bench/run.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
        # PyTorch's OpenMP threads behave very differently under load with this set.
        omp = f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} " if "OMP_WAIT_POLICY" in os.environ else ""
        raw = "\n".join(json.dumps(x) for *_, runs in rows for x in runs)
        section = (f"\n## {now}\n\n- machine: {machine()}\n- PyTorch {torch_version}, candle 0.11.1\n"
                   f"- command: `{omp}{cmd.strip()}`; load average before: {load_before}, after: {os.getloadavg()[0]:.2f}\n\n{table}\n\n<details><summary>raw JSON</summary>\n\n```\n{raw}\n```\n</details>\n")
        path = os.path.join(ROOT, "docs", "benchmarks-history.md")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        new = not os.path.exists(path)
        with open(path, "a") as f:
            if new:
                f.write("# Benchmark runs\n\nEach section is one `python bench/run.py --write`: machine, command, numbers, raw JSON. "
                        "The current result of each benchmark is in benchmarks.md.\n")
            f.write(section)
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
