"""``m2m_bids.models`` needs torch alone: every submodule imports, and every registered arch builds,
in a fresh interpreter where the neuroimaging, table and data-pipeline packages cannot be imported.

Why: the models run on bare GPU machines and are rebuilt from model cards; data (atlases included)
reaches them as tensors from the data pipeline (:mod:`m2m_bids.model_inputs`), never as files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

#: Packages a model must never import, not even lazily when it is built.
BLOCKED = ("nibabel", "nilearn", "bids", "nipype", "monai", "ants", "templateflow", "pandas", "scipy", "sklearn",
           "pydantic", "safetensors", "m2m_bids.atlases", "m2m_bids.bids", "m2m_bids.preproc",
           "m2m_bids.model_inputs", "m2m_bids.training", "m2m_bids.interpret", "m2m_bids.classical")

SCRIPT = textwrap.dedent('''
    import importlib, importlib.abc, json, pkgutil, sys
    import torch

    blocked = tuple(json.loads(sys.argv[1]))

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in blocked):
                raise ImportError(f"m2m_bids.models imported {name}")
            return None

    sys.meta_path.insert(0, Refuse())
    with_torch = set(sys.modules)
    import m2m_bids.models as models
    names = [m.name for m in pkgutil.walk_packages(models.__path__, "m2m_bids.models.")]
    for name in names:
        importlib.import_module(name)
    labels = torch.arange(8).reshape(2, 2, 2).repeat_interleave(8, 0).repeat_interleave(8, 1).repeat_interleave(8, 2)
    regions = models.Parcellation(labels + 1, tuple(range(1, 9)), tuple(f"r{i}" for i in range(1, 9)))
    built = []
    for arch in models.list_models():
        extra = {"parcellation": regions, "functional_map": "falff"} if models.reads_parcellation(arch) else {}
        models.create_model(arch, num_classes=2, img_size=16, frames=4, n_tabular=2, preset="tiny", **extra)
        built.append(arch)
    new = sorted({m.split(".")[0] for m in set(sys.modules) - with_torch} - set(sys.stdlib_module_names))
    print(json.dumps({"modules": names, "archs": built, "imported": new}))
''')


def test_models_import_and_build_with_torch_alone() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(BLOCKED)], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"m2m_bids.models.baselines.siamese", "m2m_bids.models.parcellation"} <= set(report["modules"])
    assert {"m2m", "siamese", "masan"} <= set(report["archs"])
    assert set(report["imported"]) <= {"m2m_bids", "torch", "numpy"}, report["imported"]  # numpy: torch's own dependency
