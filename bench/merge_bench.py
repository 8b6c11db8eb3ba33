"""Benchmark of the streaming merge (not a test).

Builds a random-init LlamaForCausalLM (>= 1 GB fp32, saved in >= 4 shards), two full-size random patches and two
score files in a temp dir, then runs, each in a fresh subprocess (peak RSS from os.wait4's rusage of that child):
  baseline  import torch + safetensors + safepatching, nothing else (the Python baseline RSS)
  copy      plain safetensors copy of the base: load_file + save_file shard by shard
  merge     merge_checkpoint(method=safepatching), streaming
  naive     load base, patches and scores whole, merge_in_memory, save (same shard layout)

    .venv/bin/python bench/merge_bench.py            # ~1.1 GB model
    .venv/bin/python bench/merge_bench.py --small    # ~70 MB, quick

Targets: merge throughput >= 0.5x the copy; merge peak RSS <= 2x the largest base shard + the Python baseline.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {  # vocab 32000 like Llama-2; ~1.09 GB fp32 in 250 MB shards, largest tensor (embed/lm_head) 131 MB
    "full": dict(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=16, shard="250MB"),
    "small": dict(vocab_size=8000, hidden_size=256, intermediate_size=704, num_hidden_layers=8, shard="16MB"),
}
MERGE_CFG = dict(method="safepatching", alpha=1.0, beta=1.0, p=0.9, a=10.0, b=10.0, rescale=True)


def setup(root: Path, size: str, vocab: int | None = None, layers: int | None = None) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from safepatching.checkpoint import load_state_dict

    dims = dict(SIZES[size])
    shard = dims.pop("shard")
    dims["vocab_size"] = vocab or dims["vocab_size"]
    dims["num_hidden_layers"] = layers or dims["num_hidden_layers"]
    torch.manual_seed(0)
    cfg = LlamaConfig(num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=256,
                      tie_word_embeddings=False, **dims)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(root / "base", max_shard_size=shard)
    del model
    sd = load_state_dict(root / "base")
    for i, (name, fname, make) in enumerate([
            ("se", "patch.safetensors", lambda t: torch.randn_like(t) * 0.01),
            ("om", "patch.safetensors", lambda t: torch.randn_like(t) * 0.01),
            ("se_scores", "scores.safetensors", torch.rand_like),
            ("om_scores", "scores.safetensors", torch.rand_like)]):
        torch.manual_seed(i + 1)
        (root / name).mkdir()
        save_file({n: make(t) for n, t in sd.items()}, str(root / name / fname))
        if fname == "patch.safetensors":
            (root / name / "manifest.json").write_text(json.dumps({"bench": name}))


def child(mode: str, root: Path, out: Path) -> dict:
    import torch
    from safetensors.torch import load_file, save_file

    from safepatching.checkpoint import copy_aux_files, list_shards, load_state_dict
    from safepatching.config import MergeCfg
    from safepatching.merge import merge_checkpoint, merge_in_memory

    cfg = MergeCfg(**MERGE_CFG)
    t0 = time.perf_counter()
    if mode == "copy":
        out.mkdir()
        for shard in list_shards(root / "base"):
            save_file(load_file(str(shard)), str(out / shard.name), metadata={"format": "pt"})
        for f in (root / "base").glob("*.json"):
            shutil.copy2(f, out / f.name)
    elif mode == "merge":
        merge_checkpoint(root / "base", root / "se", root / "om", out, cfg, root / "se_scores", root / "om_scores")
    elif mode == "naive":
        shards = list_shards(root / "base")
        sd = load_state_dict(root / "base")
        p_se, p_om = (load_file(str(root / s / "patch.safetensors")) for s in ("se", "om"))
        s_se, s_om = (load_file(str(root / s / "scores.safetensors")) for s in ("se_scores", "om_scores"))
        merged = merge_in_memory(sd, p_se, p_om, cfg, s_se, s_om)
        out.mkdir()
        for shard in shards:
            names = load_file(str(shard)).keys()
            save_file({n: merged[n].contiguous() for n in names}, str(out / shard.name), metadata={"format": "pt"})
        shutil.copy2(root / "base" / "model.safetensors.index.json", out)
        copy_aux_files(root / "base", out)
    return {"seconds": time.perf_counter() - t0}


def info(root: Path) -> dict:
    from safepatching.checkpoint import list_shards, read_specs

    shards = list_shards(root / "base")
    specs = read_specs(root / "base")
    nbytes = {n: dt.itemsize * math.prod(shape) for n, (_, dt, shape) in specs.items()}
    big = max(nbytes, key=nbytes.get)
    inputs = [root / d / f for d, f in [("se", "patch.safetensors"), ("om", "patch.safetensors"),
                                        ("se_scores", "scores.safetensors"), ("om_scores", "scores.safetensors")]]
    return {"shards": [s.name for s in shards], "total": sum(s.stat().st_size for s in shards),
            "largest": max(s.stat().st_size for s in shards), "big": big, "big_bytes": nbytes[big],
            "extra_inputs": sum(f.stat().st_size for f in inputs)}


def verify(root: Path) -> dict:
    from safepatching.checkpoint import LazyReader, list_shards

    same = True
    for s in list_shards(root / "base"):
        with LazyReader(root / "out_merge" / s.name) as a, LazyReader(root / "out_naive" / s.name) as b:
            same &= sorted(a.keys()) == sorted(b.keys()) and all(a.get(k).equal(b.get(k)) for k in a.keys())
    return {"same": same}


def run_child(mode: str, root: Path, threads: int) -> dict:
    """Run one mode in a fresh interpreter (this parent never imports torch, so the child's peak RSS from wait4 is
    its own: Linux carries the pre-exec RSS of the forked parent into ru_maxrss)."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"),
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    p = subprocess.Popen([sys.executable, __file__, "--child", mode, "--dir", str(root)],
                         stdout=subprocess.PIPE, env=env, text=True)
    stdout = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{mode} child failed (status {status})")
    res = json.loads(stdout.strip().splitlines()[-1])
    res["peak_rss"] = ru.ru_maxrss * 1024
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="a ~40 MB model for a quick run")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in each run (default 1)")
    ap.add_argument("--vocab", type=int, help="override the vocabulary size (the largest tensors are embed/lm_head)")
    ap.add_argument("--layers", type=int, help="override the number of layers")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        root = Path(args.dir)
        if args.child == "setup":
            setup(root, args.small and "small" or "full", args.vocab, args.layers)
            res = info(root)
        elif args.child == "baseline":
            import safetensors.torch  # noqa: F401
            import torch  # noqa: F401

            import safepatching.merge  # noqa: F401
            res = {}
        elif args.child == "verify":
            res = verify(root)
        else:
            res = child(args.child, root, root / f"out_{args.child}")
        print(json.dumps(res))
        return

    root = Path(tempfile.mkdtemp(prefix="merge_bench_", dir="/tmp"))
    try:
        t0 = time.perf_counter()
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
        flags = (["--small"] if args.small else []) + sum(
            ([f"--{k}", str(v)] for k, v in (("vocab", args.vocab), ("layers", args.layers)) if v), [])
        out = subprocess.run([sys.executable, __file__, "--child", "setup", "--dir", str(root)] + flags, env=env,
                             check=True, capture_output=True, text=True).stdout
        inf = json.loads(out.strip().splitlines()[-1])
        total, largest = inf["total"], inf["largest"]
        print(f"setup {time.perf_counter() - t0:.0f}s in {root}: base {total / 1e6:.0f} MB fp32 in "
              f"{len(inf['shards'])} shards, largest shard {largest / 1e6:.0f} MB, largest tensor {inf['big']} "
              f"{inf['big_bytes'] / 1e6:.0f} MB; merge also reads {inf['extra_inputs'] / 1e6:.0f} MB of patches+scores")
        print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}, torch threads {args.threads}; "
              f"merge cfg {MERGE_CFG}")
        res = {m: run_child(m, root, args.threads) for m in ("baseline", "copy", "merge", "naive")}
        py = res["baseline"]["peak_rss"]
        print(f"\nPython baseline RSS (torch + safetensors + safepatching imported): {py / 1e6:.0f} MB\n")
        io_bytes = {"copy": 2 * total, "merge": inf["extra_inputs"] + 2 * total,
                    "naive": inf["extra_inputs"] + 2 * total}
        print(f"{'run':<7}{'wall s':>8}{'out MB/s':>10}{'x copy':>8}{'in+out MB/s':>13}{'x copy':>8}"
              f"{'peak RSS MB':>13}{'(RSS-py)/shard':>16}{'(RSS-py)/tensor':>17}")
        for m in ("copy", "merge", "naive"):
            r = res[m]
            io = io_bytes[m] / r["seconds"]
            print(f"{m:<7}{r['seconds']:>8.2f}{total / r['seconds'] / 1e6:>10.0f}"
                  f"{res['copy']['seconds'] / r['seconds']:>8.2f}{io / 1e6:>13.0f}"
                  f"{io / (io_bytes['copy'] / res['copy']['seconds']):>8.2f}"
                  f"{r['peak_rss'] / 1e6:>13.0f}{(r['peak_rss'] - py) / largest:>16.2f}"
                  f"{(r['peak_rss'] - py) / inf['big_bytes']:>17.2f}")
        m = res["merge"]
        ratio = res["copy"]["seconds"] / m["seconds"]
        print(f"\ntarget throughput >= 0.5x copy (output bytes/s): {'PASS' if ratio >= 0.5 else 'FAIL'} ({ratio:.2f}x)")
        print(f"target peak RSS <= 2x largest shard + baseline = {(2 * largest + py) / 1e6:.0f} MB: "
              f"{'PASS' if m['peak_rss'] <= 2 * largest + py else 'FAIL'} ({m['peak_rss'] / 1e6:.0f} MB)")
        print(f"streaming merge == naive merge, bit-exact: {run_child('verify', root, args.threads)['same']}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
