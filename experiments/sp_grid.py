"""Research sweep: train SE/OM patches (cached per tag), score importance, merge in memory, evaluate on val.

usage: sp_grid.py SPEC.json
SPEC: {"root": "reports/research/n2", "art": "reports/research/n2/art_X",           # artefact folder (cached)
       "se": {ObjectiveCfg}, "om": {ObjectiveCfg}, "backend": "full", "lora": {LoraCfg} | null,
       "score": "weight"|"delta", "n_samples": 128,
       "grid": [{MergeCfg fields..., "_diag": true}], "out": "results.jsonl", "tag": "..."}
One process, one thread (OMP_NUM_THREADS=1).
"""
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from safepatching import envdefaults  # noqa: E402

envdefaults.apply()
torch.set_num_threads(1)
from safepatching.config import LoraCfg, MergeCfg, ObjectiveCfg  # noqa: E402
from safepatching.diagnose import diagnose, format_diagnosis  # noqa: E402
from safepatching.evaluation.metrics import evaluate_model, headline  # noqa: E402
from safepatching.evaluation.generate import DecodingConfig  # noqa: E402
from safepatching.patching.importance import compute_importance  # noqa: E402
from safepatching.merging.engine import merge_in_memory  # noqa: E402
from safepatching.io.models import load_model
from safepatching.patching.train import train_patch  # noqa: E402
from safepatching.select import load_round_inputs  # noqa: E402
from safepatching.organism.world import read_jsonl  # noqa: E402

KEYS = ["harmful_plain", "harmful_jailbreak", "over_refusal", "benign_refusal", "utility", "other",
        "lookalike_harmful"]


def main(spec_path):
    spec = json.loads(Path(spec_path).read_text())
    root = Path(spec.get("root", "reports/research/n2"))
    base = root / "bb"
    art = Path(spec["art"])
    cat = spec.get("category", "weapons")
    pairs = [(r["prompt"], r["response"]) for r in read_jsonl(root / f"world/batches/{cat}.jsonl")]
    backend = spec.get("backend", "full")
    lora = LoraCfg(**spec["lora"]) if spec.get("lora") else LoraCfg()
    score = spec.get("score", "weight")
    for kind in ("se", "om"):
        if not (art / kind / "patch.safetensors").exists():
            train_patch(base, pairs, art / kind, ObjectiveCfg(**spec[kind]), backend=backend, lora_cfg=lora,
                        log=lambda m: print(m, flush=True))
        sdir = art / f"scores_{kind}"
        if not (sdir / "scores.safetensors").exists():
            compute_importance(base, art / kind, pairs, sdir, score=score, n_samples=spec.get("n_samples", 128),
                               log=lambda m: print(m, flush=True))
    model, tok = load_model(base, trainable=False)
    base_sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    p_se, p_om, s_se, s_om = load_round_inputs(art)
    out = Path(spec.get("out", Path(__file__).parent / "results.jsonl"))
    for g in spec["grid"]:
        g = dict(g)
        want_diag = g.pop("_diag", False)
        se_scale_layers = g.pop("_se_layers", None)  # research only: restrict SE patch to these layer tags
        om_scale_layers = g.pop("_om_layers", None)
        cfg = MergeCfg(**g)
        pse, pom = p_se, p_om
        if se_scale_layers is not None:
            from safepatching.diagnose import layer_of
            pse = {k: v for k, v in p_se.items() if layer_of(k) in se_scale_layers}
        if om_scale_layers is not None:
            from safepatching.diagnose import layer_of
            pom = {k: v for k, v in p_om.items() if layer_of(k) in om_scale_layers}
        t0 = time.time()
        model.load_state_dict(merge_in_memory(base_sd, pse, pom, cfg, s_se, s_om))
        met, _ = evaluate_model(model, tok, root / "world/eval/val", ("exact",), DecodingConfig(48, 64),
                                samples_per_kind=0)
        h = headline(met)
        row = {"tag": spec.get("tag", art.name), "art": str(art), "merge": g, "se_layers": se_scale_layers,
               "om_layers": om_scale_layers, **{k: h.get(k) for k in KEYS},
               "oth": {k[6:]: v for k, v in met["exact"].items() if k.startswith("other_")},
               "jb_ref": None, "sec": round(time.time() - t0, 1)}
        if want_diag:
            d = diagnose(pse, pom, s_se, s_om, cfg)
            row["diag"] = d["total"]
            print(format_diagnosis(d), flush=True)
        print(json.dumps({k: row[k] for k in row if k not in ("diag",)}), flush=True)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
