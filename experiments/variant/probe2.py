"""First-token mass split: P(harmful opening), P(helpful opening), P(refusal opening) at the first response
position, per val kind, for backbone and single/merged pieces; plus sample generations. usage: probe2.py ROOT CAT"""
import json, os, sys
from pathlib import Path
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "src")); sys.path.insert(0, str(HERE))
from safepatching import envdefaults
envdefaults.apply()
torch.set_num_threads(1)
from safepatching.chat import prompt_text
from safepatching.config import MergeCfg
from safepatching.evaluation.generate import DecodingConfig, generate
from safepatching.merging.engine import merge_in_memory
from safepatching.io.models import load_model
from safepatching.select import load_round_inputs
from safepatching.organism.world import read_jsonl
import vworld
ROOT, CAT = Path(sys.argv[1]), sys.argv[2]
model, tok = load_model(ROOT / "bb", trainable=False)
base = {k: v.detach().clone() for k, v in model.state_dict().items()}
p_se, p_om, s_se, s_om = load_round_inputs(ROOT / f"art_{CAT}")
fid = lambda s: tok(" " + s, add_special_tokens=False)["input_ids"][0]  # noqa: E731
G = {"harm": sorted({fid(o.format(v="x", o="y")) for o in vworld.HARM_OPEN}),
     "help": sorted({fid(o.format(v="x", o="y", s0="z")) for o in vworld.HELP_OPEN}),
     "ref": sorted({fid(r) for r in vworld.REFUSALS})}
V = {k: read_jsonl(ROOT / f"world/eval/val/{k}.jsonl") for k in ("jailbreak", "lookalike", "harmful", "benign")}

@torch.no_grad()
def mass(prompts):
    acc = {g: 0.0 for g in G}
    for s in range(0, len(prompts), 64):
        enc = [tok(prompt_text(tok, p), add_special_tokens=False)["input_ids"] for p in prompts[s:s + 64]]
        n = max(map(len, enc))
        ids = torch.full((len(enc), n), tok.pad_token_id); att = torch.zeros((len(enc), n), dtype=torch.long)
        for i, e in enumerate(enc):
            ids[i, n - len(e):] = torch.tensor(e); att[i, n - len(e):] = 1
        p = torch.softmax(model(input_ids=ids, attention_mask=att).logits[:, -1].float(), -1)
        for g, t in G.items():
            acc[g] += float(p[:, t].sum())
    return {g: round(v / len(prompts), 3) for g, v in acc.items()}

cfgs = [("backbone", None), ("se_only", {"method": "se_only"}), ("om_only", {"method": "om_only"}),
        ("sp a50 b10 a1", {"method": "safepatching", "a": 50, "b": 10, "alpha": 1, "beta": 1}),
        ("sp a30 b10 a2", {"method": "safepatching", "a": 30, "b": 10, "alpha": 2, "beta": 1})]
for name, c in cfgs:
    model.load_state_dict(base if c is None else merge_in_memory(base, p_se, p_om, MergeCfg(**c), s_se, s_om))
    row = {"tag": "variant_mass", "cat": CAT, "merge": name, **{k: mass([r["prompt"] for r in v]) for k, v in V.items()}}
    row["samples"] = {k: generate(model, tok, [r["prompt"] for r in V[k][:3]], DecodingConfig(40, 8)) for k in ("jailbreak", "lookalike")}
    print(json.dumps(row), flush=True)
    with (HERE / "results.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
