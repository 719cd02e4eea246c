"""Before the GPU checks run: does this environment hold what they need?

* every module that ``check.sh`` and ``bench_train.py`` import, imported;
* every requirement of the distributions they use met, recursively (``pip check`` limited to
  our stack: the GPU image holds other packages whose pins are not ours to judge);
* on CUDA, the device count (``check.sh`` runs one rank per GPU it was lent).

Prints one JSON line; exits 1 naming each missing module and unmet requirement.  Run on CPU by
``bench/gpu/image_env.sh`` in a virtualenv that holds the GPU image's packages plus the wheels
``fetch_wheels.sh`` carries, so a failure is found here, not in the device time.
"""

from __future__ import annotations

import importlib
import json
import sys
from importlib import metadata

from packaging.requirements import Requirement

MODULES = [
    "torch",
    "deepspeed",
    "transformers",
    "datasets",
    "peft",
    "accelerate",
    "omegaconf",
    "safetensors",
    "tokenizers",
    "psutil",
    "rlhf_dist.engine.engine",
    "rlhf_dist.trainers.sft",
    "rlhf_dist.trainers.dpo",
]
DISTRIBUTIONS = [
    "deepspeed",
    "transformers",
    "datasets",
    "peft",
    "accelerate",
    "omegaconf",
    "tokenizers",
    "safetensors",
    "psutil",
]


def unmet(roots: list) -> list:
    """``"dist: requirement (found X)"`` for each requirement of ``roots`` and their own
    requirements (extras and other platforms' markers skipped) that is missing or of a
    version outside its specifier."""
    problems, seen, todo = [], set(), list(roots)
    while todo:
        name = todo.pop()
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            problems.append(f"{name}: not installed")
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                found = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                problems.append(f"{name}: {req} (not installed)")
                continue
            if req.specifier and not req.specifier.contains(found, prereleases=True):
                problems.append(f"{name}: {req} (found {found})")
            todo.append(req.name)
    return sorted(set(problems))


def main() -> int:
    report = {"python": sys.version.split()[0], "import_errors": {}, "unmet": []}
    for module in MODULES:
        try:
            importlib.import_module(module)
        except Exception as err:  # every failure is reported, not just the first
            report["import_errors"][module] = f"{type(err).__name__}: {err}"[:300]
    report["unmet"] = unmet(DISTRIBUTIONS)
    try:
        import torch

        report["torch"] = torch.__version__
        report["cuda_devices"] = torch.cuda.device_count()
    except Exception:  # reported above
        pass
    report["ok"] = not report["import_errors"] and not report["unmet"]
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
