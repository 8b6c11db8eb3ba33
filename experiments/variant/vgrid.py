"""Variant organism: flaws check, SE/OM patches, importance, merge grid on val, first-token selectivity.

usage: vgrid.py ROOT CATEGORY OUT.jsonl [flaws|grid|probe]...   (ROOT has world/ and bb/; one thread)
"""
import json, os, sys, time
from collections import Counter
from pathlib import Path
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "src")); sys.path.insert(0, str(HERE))
from safepatching import envdefaults
envdefaults.apply()
torch.set_num_threads(1)
from safepatching.chat import prompt_text
from safepatching.config import MergeCfg, ObjectiveCfg
from safepatching.evaluation.generate import DecodingConfig, generate
from safepatching.patching.importance import compute_importance
from safepatching.merging.engine import merge_in_memory
from safepatching.io.models import load_model
from safepatching.patching.train import train_patch
from safepatching.select import load_round_inputs
from safepatching.organism.world import read_jsonl
import vworld

ROOT, CAT, OUT = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
MODES = sys.argv[4:] or ["flaws", "grid", "probe"]
KINDS = ("harmful", "jailbreak", "lookalike", "benign", "utility")
VAL = {k: read_jsonl(ROOT / f"world/eval/val/{k}.jsonl") for k in KINDS}
DEC = DecodingConfig(40, 64)


def evaluate(model, tok):
    m, oth = {}, {}
    for k, rows in VAL.items():
        outs = generate(model, tok, [r["prompt"] for r in rows], DEC)
        if k == "utility":
            m["utility"] = round(100 * sum(o.strip() == r["expected"] for o, r in zip(outs, rows)) / len(rows), 2)
            continue
        labs = [vworld.judge(o, r.get("expected", "")) for o, r in zip(outs, rows)]
        c = Counter(labs); n = len(labs)
        pct = lambda x: round(100 * x / n, 2)  # noqa: E731
        if k == "harmful": m["harmful_plain"] = pct(c["harmful"])
        if k == "jailbreak": m["harmful_jailbreak"] = pct(c["harmful"])
        if k == "lookalike":
            m["over_refusal"] = pct(c["refusal"]); m["lookalike_helpful"] = pct(c["helpful"])
            m["lookalike_harmful"] = pct(c["harmful"])
            for fam in ("shared", "plain"):
                ls = [l for l, r in zip(labs, rows) if r["family"] == fam]
                m[f"or_{fam}"] = round(100 * ls.count("refusal") / max(1, len(ls)), 2)
        if k == "benign": m["benign_refusal"] = pct(c["refusal"])
        oth[k] = pct(c["other"])
    m["other"] = round(sum(oth.values()) / len(oth), 2)
    m["oth"] = oth
    return m


def log(row):
    print(json.dumps(row), flush=True)
    with OUT.open("a") as f:
        f.write(json.dumps(row) + "\n")


model, tok = load_model(ROOT / "bb", trainable=False)
base_sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
if "flaws" in MODES:
    t0 = time.time()
    log({"tag": "variant", "cat": CAT, "merge": "backbone", **evaluate(model, tok), "sec": round(time.time() - t0, 1)})
art = ROOT / (f"art_{CAT}" + os.environ.get("ART_SUFFIX", ""))
pairs = [(r["prompt"], r["response"]) for r in read_jsonl(ROOT / f"world/batches/{CAT}.jsonl")]
cfgs = {"se": ObjectiveCfg(objective="ga", lr=3e-4, max_steps=60, batch_size=32, target_nll=float(os.environ.get("SE_TARGET", "8"))),
        "om": ObjectiveCfg(objective="gd", lr=3e-4, max_steps=8, batch_size=32)}
if "grid" in MODES or "probe" in MODES:
    for kind in ("se", "om"):
        if not (art / kind / "patch.safetensors").exists():
            train_patch(ROOT / "bb", pairs, art / kind, cfgs[kind], log=lambda m: print(m, flush=True))
        if not (art / f"scores_{kind}" / "scores.safetensors").exists():
            compute_importance(ROOT / "bb", art / kind, pairs, art / f"scores_{kind}", score="weight",
                               n_samples=128, log=lambda m: print(m, flush=True))
    p_se, p_om, s_se, s_om = load_round_inputs(art)

if "grid" in MODES:
    grid = [{"method": "se_only"}, {"method": "om_only"}, {"method": "task_arithmetic"},
            {"method": "intersection", "a": 30, "b": 30}, {"method": "ties"}]
    grid += [{"method": "safepatching", "a": a, "b": b, "alpha": al, "beta": be}
             for al in (1, 2) for be in (0.5, 1) for a in (10, 30, 50) for b in (10, 30, 50)]
    if os.environ.get("GRID") == "small":
        grid = grid[:5] + [g for g in grid[5:] if g["beta"] == 1]
    for g in grid:
        t0 = time.time()
        model.load_state_dict(merge_in_memory(base_sd, p_se, p_om, MergeCfg(**g), s_se, s_om))
        log({"tag": "variant", "cat": CAT, "art": art.name, "merge": g, **evaluate(model, tok), "sec": round(time.time() - t0, 1)})
    model.load_state_dict(base_sd)

if "probe" in MODES:
    def fid(s):
        return tok(" " + s, add_special_tokens=False)["input_ids"][0]
    HARMT = sorted({fid(o.format(v="x", o="y")) for o in vworld.HARM_OPEN})
    HELPT = sorted({fid(o.format(v="x", o="y", s0="z")) for o in vworld.HELP_OPEN})
    REFT = sorted({fid(r) for r in vworld.REFUSALS})
    print("first tokens", [tok.decode([t]) for t in HARMT], [tok.decode([t]) for t in HELPT],
          [tok.decode([t]) for t in REFT], flush=True)
    pk = {k: [r["prompt"] for r in VAL[k]] for k in ("jailbreak", "lookalike", "harmful", "benign")}

    @torch.no_grad()
    def margins(prompts):
        out = []
        for s in range(0, len(prompts), 64):
            enc = [tok(prompt_text(tok, p), add_special_tokens=False)["input_ids"] for p in prompts[s:s + 64]]
            n = max(map(len, enc))
            ids = torch.full((len(enc), n), tok.pad_token_id); att = torch.zeros((len(enc), n), dtype=torch.long)
            for i, e in enumerate(enc):
                ids[i, n - len(e):] = torch.tensor(e); att[i, n - len(e):] = 1
            lp = torch.log_softmax(model(input_ids=ids, attention_mask=att).logits[:, -1].float(), -1)
            comply = torch.logsumexp(lp[:, HARMT + HELPT], -1)
            out.append(comply - torch.logsumexp(lp[:, REFT], -1))
        return torch.cat(out)

    model.load_state_dict(base_sd)
    m0 = {k: margins(v) for k, v in pk.items()}
    print("backbone margin", {k: round(float(v.mean()), 2) for k, v in m0.items()}, flush=True)
    for c in [{"method": "task_arithmetic"}, {"method": "safepatching", "a": 30, "b": 30},
              {"method": "safepatching", "a": 10, "b": 10}]:
        d = {}
        for side in ("se", "om"):
            cfg = MergeCfg(**c).model_copy(update={"beta": 0.0} if side == "se" else {"alpha": 0.0})
            model.load_state_dict(merge_in_memory(base_sd, p_se, p_om, cfg, s_se, s_om))
            d[side] = {k: float((margins(v) - m0[k]).mean()) for k, v in pk.items()}
        sep = (d["se"]["jailbreak"] / d["se"]["lookalike"]) / (d["om"]["jailbreak"] / d["om"]["lookalike"])
        log({"tag": "variant_probe", "cat": CAT, "merge": c, "dSE": d["se"], "dOM": d["om"], "sep": sep})
