"""Package-level rules: public names importable, no heavy/distributed imports, small files."""

import ast
from pathlib import Path

import rlhf_dist.algo as algo

ALGO_DIR = Path(algo.__file__).parent
FORBIDDEN = ("ray", "deepspeed", "torch.distributed", "rlhf_dist.config")


def test_all_public_names_exist():
    for name in algo.__all__:
        assert getattr(algo, name) is not None, name
    assert {"gae", "ppo_policy_loss", "dpo_loss", "sft_loss", "logprobs_from_logits"} <= set(
        algo.__all__
    )


def test_no_forbidden_imports_and_small_files():
    for path in ALGO_DIR.glob("*.py"):
        source = path.read_text()
        assert len(source.splitlines()) <= 250, path.name
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), (
                    path.name,
                    name,
                )
