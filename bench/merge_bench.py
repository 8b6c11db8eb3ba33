"""Benchmark of the streaming merge (not a test).

Builds a random-init LlamaForCausalLM (>= 1 GB fp32, saved in >= 4 shards), two full-size random patches and two
score files in a temp dir, then runs, each in a fresh subprocess (peak RSS and CPU time from os.wait4's rusage of
that child; CPU seconds of the timed part, all threads):
  baseline  import torch + safetensors + safepatching, nothing else (the Python baseline RSS)
  copy      plain safetensors copy of the base: load_file + save_file shard by shard
  hash      sha256 of every input file (base shards, patches, scores): what provenance would cost if nothing
            were trusted; merge_checkpoint hashes the base and takes patch / score hashes from their manifests
  merge     merge_checkpoint(method=safepatching), streaming, for each config (p=0.9 and p=1: no random retention)
  naive     load base, patches and scores whole, merge_in_memory, save (same shard layout), for each config
  ours/mk   the mergekit column (MK_CFGS; skipped with --no-mergekit or when mergekit is not installed): the same
            base and two "fine-tuned" checkpoints ft_se / ft_om = base + each patch (fp32, written once beside the
            inputs), merged by mergekit's task_arithmetic, ties and dare_ties (mergekit.merge.run_merge, CPU,
            lazy_unpickle, output shards of the base's shard size) and by ours (merge_checkpoint from the base and
            the patches) with the same settings; both read 3 and write 1 model's worth of bytes. Outputs are
            compared tensor by tensor (max |difference|, share of entries differing by more than fp32 rounding).

copy and merge runs are repeated (--repeat, interleaved, so they see the same background load) and reported by
their median wall time; naive runs once. Throughput is reported as a ratio to the copy two ways: output bytes/s
(the merge writes what the copy writes) and in+out bytes/s (the merge also reads 2 patches + 2 score files).

    .venv/bin/python bench/merge_bench.py            # ~1.1 GB model
    .venv/bin/python bench/merge_bench.py --small    # ~70 MB, quick
    make bench                                       # installs requirements-bench.txt (mergekit) first

Targets: merge throughput >= 0.5x the copy (p < 1 and p = 1); merge peak RSS <= 2x the largest base shard + the
Python baseline; on task arithmetic and TIES, ours >= 1.0x mergekit's throughput with peak RSS <= mergekit's.

torch runs single-threaded by default (--threads): the merge overlaps its own work in threads (masks of the next
tensor, the streaming, parent hashing), and OpenMP worker threads spin badly when other jobs share the CPUs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safepatching import envdefaults

envdefaults.apply()

SIZES = {  # vocab 32000 like Llama-2; ~1.09 GB fp32 in 250 MB shards, largest tensor (embed/lm_head) 131 MB
    "full": dict(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=16, shard="250MB"),
    "small": dict(vocab_size=8000, hidden_size=256, intermediate_size=704, num_hidden_layers=8, shard="16MB"),
}
MERGE_CFGS = {
    "p0.9": dict(method="safepatching", alpha=1.0, beta=1.0, p=0.9, a=10.0, b=10.0, rescale=True),
    "p1": dict(method="safepatching", alpha=1.0, beta=1.0, p=1.0, a=10.0, b=10.0, rescale=True),
}
# The mergekit column: ours (a merge config) vs mergekit (method, per-model parameters), the same settings. TIES:
# both trim each delta to its top `density` share by magnitude per tensor, elect a sign per entry, average the
# deltas agreeing with it. dare_ties vs ours: both drop entries of each delta with probability 1 - p and rescale;
# mergekit then elects signs (TIES) and rescales to the delta's L1 norm, ours adds both (the `dare` method: random
# retention, rescaled by 1/p): a different random stream and
# definition, compared only on cost.
TIES_DENSITY, DARE_P = 0.2, 0.9
MK_CFGS = {
    "task_arithmetic": dict(ours=dict(method="task_arithmetic", alpha=1.0, beta=1.0),
                            mk="task_arithmetic", params=dict(weight=1.0)),
    "ties": dict(ours=dict(method="ties", alpha=1.0, beta=1.0, density=TIES_DENSITY),
                 mk="ties", params=dict(weight=1.0, density=TIES_DENSITY)),
    "dare": dict(ours=dict(method="dare", alpha=1.0, beta=1.0, p=DARE_P, rescale=True, seed=0),
                 mk="dare_ties", params=dict(weight=1.0, density=DARE_P)),
}
FT = ("ft_se", "ft_om")  # base + each patch, mergekit's inputs
INPUTS = [("se", "patch.safetensors"), ("om", "patch.safetensors"), ("se_scores", "scores.safetensors"),
          ("om_scores", "scores.safetensors")]


def merge_cfg(d: dict):
    """The merge config object from a plain dict: the one place the bench builds configs."""
    from safepatching.config import merge_settings

    return merge_settings(d)


def has_mergekit() -> bool:
    import importlib.util

    return importlib.util.find_spec("mergekit") is not None


def setup_ft(root: Path) -> None:
    """ft_se / ft_om = base + each patch in fp32, shard by shard in the base's layout (mergekit's inputs)."""
    from safetensors.torch import load_file, save_file

    from safepatching.io.checkpoints import list_shards
    from safepatching.io.shard_writer import copy_aux_files

    for ft, side in zip(FT, ("se", "om")):
        if (root / ft / "config.json").exists():
            continue
        tmp = root / f"{ft}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        patch = load_file(str(root / side / "patch.safetensors"))
        for shard in list_shards(root / "base"):
            save_file({n: t + patch[n] for n, t in load_file(str(shard)).items()}, str(tmp / shard.name),
                      metadata={"format": "pt"})
        for f in (root / "base").glob("*.json"):
            shutil.copy2(f, tmp / f.name)
        copy_aux_files(root / "base", tmp)
        tmp.rename(root / ft)


def mk_merge(root: Path, out: Path, name: str, threads: int) -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    from safepatching.io.checkpoints import list_shards

    c = MK_CFGS[name]
    config = MergeConfiguration.model_validate({
        "merge_method": c["mk"], "base_model": str(root / "base"), "dtype": "float32",
        "models": [{"model": str(root / ft), "parameters": dict(c["params"])} for ft in FT]})
    shard = max(p.stat().st_size for p in list_shards(root / "base"))
    run_merge(config, str(out), options=MergeOptions(
        cuda=False, lazy_unpickle=True, copy_tokenizer=False, write_model_card=False, quiet=True, random_seed=0,
        out_shard_size=shard, num_threads=threads))


def compare(root: Path, name: str) -> dict:
    """Ours vs mergekit's output, tensor by tensor: max |difference|, the share of entries differing by more than
    fp32 rounding (4 ulp of |base| + |P_SE| + |P_OM|, the scale of every intermediate sum), and the share of entries
    each changed from the base."""
    import torch

    from safepatching.io.checkpoints import LazyReader, list_shards

    def readers(folder: Path) -> dict[str, LazyReader]:
        out = {}
        for s in list_shards(folder):
            r = LazyReader(s)
            out.update({k: r for k in r.keys()})
        return out

    base, ours, mk = (readers(root / d) for d in ("base", f"out_ours_{name}", f"out_mk_{name}"))
    p_se, p_om = (LazyReader(root / d / "patch.safetensors") for d in ("se", "om"))
    eps = torch.finfo(torch.float32).eps
    max_diff, n_diff, n, ch_ours, ch_mk = 0.0, 0, 0, 0, 0
    missing = sorted(set(base) ^ set(mk))
    for k in base:
        if k not in mk:
            continue
        b, a, m = base[k].get(k).float(), ours[k].get(k).float(), mk[k].get(k).float()
        d = (a - m).abs()
        max_diff = max(max_diff, d.max().item() if d.numel() else 0.0)
        scale = b.abs() + p_se.get(k).abs() + p_om.get(k).abs()
        n_diff += int((d > 4 * eps * scale).sum())
        ch_ours += int((a != b).sum())
        ch_mk += int((m != b).sum())
        n += a.numel()
    return {"max_diff": max_diff, "share_diff": n_diff / n, "changed_ours": ch_ours / n, "changed_mk": ch_mk / n,
            "missing": missing}


def setup(root: Path, size: str, vocab: int | None = None, layers: int | None = None) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from safepatching.io.checkpoints import load_state_dict, sha256_file

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
    makers = [lambda t: torch.randn_like(t) * 0.01, lambda t: torch.randn_like(t) * 0.01, torch.rand_like,
              torch.rand_like]
    for i, ((name, fname), make) in enumerate(zip(INPUTS, makers)):
        torch.manual_seed(i + 1)
        (root / name).mkdir()
        save_file({n: make(t) for n, t in sd.items()}, str(root / name / fname))
        # as train_patch / compute_importance do: the manifest records the file's sha256 at write time
        key = "patch_sha256" if fname == "patch.safetensors" else "scores_sha256"
        (root / name / "manifest.json").write_text(json.dumps({"bench": name, key: sha256_file(root / name / fname)}))


def child(mode: str, root: Path, out: Path, threads: int = 1) -> dict:
    from safetensors.torch import load_file, save_file

    from safepatching.io.checkpoints import list_shards, load_state_dict, sha256_dir, sha256_file
    from safepatching.io.shard_writer import copy_aux_files
    from safepatching.merging.engine import merge_checkpoint
    from safepatching.merging.in_memory import merge_in_memory

    mode, _, cfg_name = mode.partition(":")
    if mode == "mk":
        import mergekit.merge  # noqa: F401  (imported before the clock starts, as ours is)
    cfg = None
    if mode == "ours":
        cfg = merge_cfg(MK_CFGS[cfg_name]["ours"])
    elif cfg_name and mode != "mk":
        cfg = merge_cfg(MERGE_CFGS[cfg_name])
    shutil.rmtree(out, ignore_errors=True)
    t0, c0 = time.perf_counter(), time.process_time()
    if mode == "copy":
        out.mkdir()
        for shard in list_shards(root / "base"):
            save_file(load_file(str(shard)), str(out / shard.name), metadata={"format": "pt"})
        for f in (root / "base").glob("*.json"):
            shutil.copy2(f, out / f.name)
    elif mode == "hash":
        sha256_dir(root / "base")
        for d, f in INPUTS:
            sha256_file(root / d / f)
    elif mode in ("merge", "ours"):  # (scores are opened only by methods that need them)
        merge_checkpoint(root / "base", root / "se", root / "om", out, cfg, root / "se_scores", root / "om_scores")
    elif mode == "mk":
        mk_merge(root, out, cfg_name, threads)
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
    return {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0}


def info(root: Path) -> dict:
    from safepatching.io.checkpoints import list_shards, read_specs

    shards = list_shards(root / "base")
    specs = read_specs(root / "base")
    nbytes = {n: dt.itemsize * math.prod(shape) for n, (_, dt, shape) in specs.items()}
    big = max(nbytes, key=nbytes.get)
    return {"shards": [s.name for s in shards], "total": sum(s.stat().st_size for s in shards),
            "largest": max(s.stat().st_size for s in shards), "big": big, "big_bytes": nbytes[big],
            "extra_inputs": sum((root / d / f).stat().st_size for d, f in INPUTS)}


def verify(root: Path, cfg_name: str) -> dict:
    from safepatching.io.checkpoints import LazyReader, list_shards

    same = True
    for s in list_shards(root / "base"):
        with (LazyReader(root / f"out_merge_{cfg_name}" / s.name) as a,
              LazyReader(root / f"out_naive_{cfg_name}" / s.name) as b):
            same &= sorted(a.keys()) == sorted(b.keys()) and all(a.get(k).equal(b.get(k)) for k in a.keys())
    return {"same": same}


def _env(**extra: str) -> dict[str, str]:
    """The environment of a child: this repo's src first on PYTHONPATH (kept: a bench-only site may be on it)."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, **extra)


def run_child(mode: str, root: Path, threads: int) -> dict:
    """Run one mode in a fresh interpreter (this parent never imports torch, so the child's peak RSS from wait4 is
    its own: Linux carries the pre-exec RSS of the forked parent into ru_maxrss)."""
    env = _env(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    p = subprocess.Popen([sys.executable, __file__, "--child", mode, "--dir", str(root), "--threads", str(threads)],
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
    ap.add_argument("--small", action="store_true", help="a ~70 MB model for a quick run")
    ap.add_argument("--threads", type=int, default=1, help="torch (OpenMP) threads in each run (default 1)")
    ap.add_argument("--repeat", type=int, default=3, help="copy / merge runs per mode (median reported)")
    ap.add_argument("--mk-repeat", type=int, default=1,
                    help="runs of each mergekit-column mode, ours and mergekit's, interleaved (median reported)")
    ap.add_argument("--no-mergekit", action="store_true", help="skip the mergekit column")
    ap.add_argument("--vocab", type=int, help="override the vocabulary size (the largest tensors are embed/lm_head)")
    ap.add_argument("--layers", type=int, help="override the number of layers")
    ap.add_argument("--dir", help="reuse (or build, if missing) the inputs in this folder; it is kept")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        root = Path(args.dir)
        if args.child == "setup":
            setup(root, args.small and "small" or "full", args.vocab, args.layers)
            res = info(root)
        elif args.child == "info":
            res = info(root)
        elif args.child == "setup_ft":
            setup_ft(root)
            res = {}
        elif args.child in ("baseline", "mk_baseline"):
            import safetensors.torch  # noqa: F401
            import torch  # noqa: F401

            import safepatching.merging.engine  # noqa: F401
            import safepatching.merging.in_memory  # noqa: F401
            if args.child == "mk_baseline":
                import mergekit.merge  # noqa: F401
            res = {"seconds": 0.0, "cpu": 0.0}
        elif args.child.startswith("verify:"):
            res = verify(root, args.child.partition(":")[2])
        elif args.child.startswith("compare:"):
            res = compare(root, args.child.partition(":")[2])
        else:
            res = child(args.child, root, root / f"out_{args.child.replace(':', '_')}", args.threads)
        print(json.dumps(res))
        return

    with_mk = not args.no_mergekit and has_mergekit()
    if not args.no_mergekit and not with_mk:
        print("mergekit is not installed: skipping the mergekit column (pip install -r requirements-bench.txt)")
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="merge_bench_", dir="/tmp"))
    try:
        t0 = time.perf_counter()
        env = _env()
        built = (root / "base").is_dir()
        flags = (["--small"] if args.small else []) + sum(
            ([f"--{k}", str(v)] for k, v in (("vocab", args.vocab), ("layers", args.layers)) if v), [])
        out = subprocess.run([sys.executable, __file__, "--child", "info" if built else "setup", "--dir", str(root)]
                             + flags, env=env, check=True, capture_output=True, text=True).stdout
        if with_mk:
            subprocess.run([sys.executable, __file__, "--child", "setup_ft", "--dir", str(root)], env=env,
                           check=True, capture_output=True, text=True)
        inf = json.loads(out.strip().splitlines()[-1])
        total, largest, extra = inf["total"], inf["largest"], inf["extra_inputs"]
        print(f"{'reused' if built else f'setup {time.perf_counter() - t0:.0f}s'} in {root}: base "
              f"{total / 1e6:.0f} MB fp32 in {len(inf['shards'])} shards, largest shard {largest / 1e6:.0f} MB, "
              f"largest tensor {inf['big']} {inf['big_bytes'] / 1e6:.0f} MB; merge also reads {extra / 1e6:.0f} MB "
              "of patches+scores")
        load0 = os.getloadavg()[0]
        runs: dict[str, list[dict]] = {}
        runs["baseline"] = [run_child("baseline", root, args.threads)]
        runs["hash"] = [run_child("hash", root, args.threads)]
        modes = ["copy"] + [f"merge:{c}" for c in MERGE_CFGS]
        for _ in range(args.repeat):
            for m in modes:
                runs.setdefault(m, []).append(run_child(m, root, args.threads))
        for c in MERGE_CFGS:
            runs[f"naive:{c}"] = [run_child(f"naive:{c}", root, args.threads)]
        if with_mk:
            runs["mk_baseline"] = [run_child("mk_baseline", root, args.threads)]
            for _ in range(args.mk_repeat):
                for c in MK_CFGS:
                    for k in ("ours", "mk"):
                        runs.setdefault(f"{k}:{c}", []).append(run_child(f"{k}:{c}", root, args.threads))
            runs["copy"].append(run_child("copy", root, args.threads))  # a copy after the slow mergekit runs too
        print(f"cpus {os.cpu_count()}, load average {load0:.2f} before / {os.getloadavg()[0]:.2f} after (other "
              f"jobs share the CPUs), torch threads {args.threads}, {args.repeat} copy/merge runs each"
              + (f", {args.mk_repeat} run(s) of each mergekit-column mode" if with_mk else ""))
        for c, kw in MERGE_CFGS.items():
            print(f"  {c}: {kw}")
        res = {m: {"seconds": statistics.median(r["seconds"] for r in rs),
                   "cpu": statistics.median(r["cpu"] for r in rs),
                   "peak_rss": max(r["peak_rss"] for r in rs), "all": [r["seconds"] for r in rs]}
               for m, rs in runs.items()}
        py = res["baseline"]["peak_rss"]
        print(f"\nPython baseline RSS (torch + safetensors + safepatching imported): {py / 1e6:.0f} MB")
        in_out = {"copy": 2 * total, "hash": extra + total}
        copy_s = res["copy"]["seconds"]
        copy_io = in_out["copy"] / copy_s
        print(f"\n{'run':<12}{'wall s':>8}{'cpu s':>8}{'out MB/s':>10}{'x copy':>8}{'in+out MB/s':>13}{'x copy':>8}"
              f"{'peak RSS MB':>13}{'(RSS-py)/shard':>16}   wall s of each run")
        for m in ["copy", "hash"] + [f"{k}:{c}" for c in MERGE_CFGS for k in ("merge", "naive")]:
            r = res[m]
            io = in_out.get(m, extra + 2 * total)  # merge / naive read base + patches + scores, write the output
            out_cols = (f"{total / r['seconds'] / 1e6:>10.0f}{copy_s / r['seconds']:>8.2f}" if m != "hash"
                        else f"{'':>10}{'':>8}")
            print(f"{m:<12}{r['seconds']:>8.2f}{r['cpu']:>8.2f}{out_cols}{io / r['seconds'] / 1e6:>13.0f}"
                  f"{io / r['seconds'] / copy_io:>8.2f}{r['peak_rss'] / 1e6:>13.0f}"
                  f"{(r['peak_rss'] - py) / largest:>16.2f}   {' '.join(f'{s:.2f}' for s in r['all'])}")
        print("\n(out MB/s: output bytes / wall; in+out MB/s: bytes read + written / wall; x copy: ratio to the "
              "copy's)")
        cap = 2 * largest + py
        for c in MERGE_CFGS:
            m = res[f"merge:{c}"]
            r_out = copy_s / m["seconds"]
            r_io = (extra + 2 * total) / m["seconds"] / copy_io
            same = run_child(f"verify:{c}", root, args.threads)["same"]
            print(f"\nmerge {c}: throughput >= 0.5x copy: output bytes {'PASS' if r_out >= 0.5 else 'FAIL'} "
                  f"({r_out:.2f}x), in+out bytes {'PASS' if r_io >= 0.5 else 'FAIL'} ({r_io:.2f}x)")
            print(f"merge {c}: peak RSS <= 2x largest shard + baseline = {cap / 1e6:.0f} MB: "
                  f"{'PASS' if m['peak_rss'] <= cap else 'FAIL'} ({m['peak_rss'] / 1e6:.0f} MB)")
            print(f"merge {c}: streaming merge == naive merge, bit-exact: {same}")
        if with_mk:
            mk_table(root, res, total, copy_io, args.threads)
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(root, ignore_errors=True)


def mk_table(root: Path, res: dict, total: int, copy_io: float, threads: int) -> None:
    """The mergekit column: ours vs mergekit on the same merges (both move 4 model-sizes of bytes: base + 2 inputs
    read, 1 written)."""
    io = 4 * total
    mk_py = res["mk_baseline"]["peak_rss"]
    print(f"\nmergekit column (same base; ours reads the two patches, mergekit the two checkpoints base + patch; "
          f"{io / 1e6:.0f} MB read + written each). mergekit baseline RSS (+ mergekit imported): {mk_py / 1e6:.0f} MB")
    for c, kw in MK_CFGS.items():
        print(f"  {c}: ours {kw['ours']} | mergekit {kw['mk']} {kw['params']}")
    print(f"\n{'merge':<17}{'tool':<10}{'wall s':>8}{'cpu s':>8}{'in+out MB/s':>13}{'x copy':>8}{'peak RSS MB':>13}"
          f"{'ours/mk thr.':>14}{'ours/mk RSS':>13}{'max |diff|':>12}{'share diff':>12}{'changed':>9}   wall s of each run")
    for c in MK_CFGS:
        o, m = res[f"ours:{c}"], res[f"mk:{c}"]
        cmp = run_child(f"compare:{c}", root, threads)
        for tool, r in (("ours", o), ("mergekit", m)):
            first = tool == "ours"
            extra = (f"{m['seconds'] / o['seconds']:>14.2f}{o['peak_rss'] / m['peak_rss']:>13.2f}"
                     f"{cmp['max_diff']:>12.2e}{cmp['share_diff']:>12.2e}" if first else f"{'':>14}{'':>13}{'':>12}{'':>12}")
            print(f"{c if first else '':<17}{tool:<10}{r['seconds']:>8.2f}{r['cpu']:>8.2f}{io / r['seconds'] / 1e6:>13.0f}"
                  f"{io / r['seconds'] / copy_io:>8.2f}{r['peak_rss'] / 1e6:>13.0f}{extra}"
                  f"{cmp['changed_ours' if first else 'changed_mk']:>9.3f}   {' '.join(f'{x:.2f}' for x in r['all'])}")
        if cmp["missing"]:
            print(f"  tensors only in one output: {cmp['missing'][:5]}")
    print("\n(ours/mk thr.: mergekit's wall / ours; ours/mk RSS: our peak RSS / mergekit's; share diff: entries "
          "differing by more than 4 ulp; changed: share of entries != base)")
    for c in ("task_arithmetic", "ties"):
        o, m = res[f"ours:{c}"], res[f"mk:{c}"]
        print(f"{c}: ours >= 1.0x mergekit throughput {'PASS' if o['seconds'] <= m['seconds'] else 'FAIL'} "
              f"({m['seconds'] / o['seconds']:.2f}x), peak RSS <= mergekit's "
              f"{'PASS' if o['peak_rss'] <= m['peak_rss'] else 'FAIL'} ({o['peak_rss'] / 1e6:.0f} vs "
              f"{m['peak_rss'] / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
