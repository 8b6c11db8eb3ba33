"""Train the variant backbone with params.yaml's BackboneCfg. usage: train_bb.py WORLD OUT"""
import os, sys
from pathlib import Path
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "src"))
from safepatching import envdefaults
envdefaults.apply()
torch.set_num_threads(1)
from safepatching.config import load_params
from safepatching.organism.model import build_organism
p = load_params(Path(__file__).resolve().parents[3] / "params.yaml")
print(build_organism(Path(sys.argv[1]), Path(sys.argv[2]), p.backbone, p.seed, log=lambda m: print(m, flush=True)))
