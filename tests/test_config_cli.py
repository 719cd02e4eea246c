"""The trainer commands: the config key selects DPO on Ray (``dpo-ray`` is an alias that only
sets it), and a job's sizes are checked when its config loads, before anything runs."""

import pytest
import yaml

from rlhf_dist import cli
from rlhf_dist.config import load_config
from rlhf_dist.trainers import dpo, dpo_ray


@pytest.fixture
def ran(monkeypatch):
    """Which DPO runner got which config (the runners themselves are not started)."""
    calls = []
    monkeypatch.setattr(dpo_ray, "run", lambda cfg: calls.append(("ray", cfg)))

    class Launcher:
        def __init__(self, cfg):
            self.cfg = cfg

        def fit(self):
            calls.append(("launcher", self.cfg))

    monkeypatch.setattr(dpo, "DPOTrainer", Launcher)
    return calls


def test_dpo_ray_is_dpo_with_the_mode_key(ran, capsys):
    assert cli.main(["dpo-ray", "train.lr=0.5", "logging.backend=none"]) == 0
    assert cli.main(["dpo", "train.lr=0.5", "logging.backend=none", "dpo.mode=ray"]) == 0
    assert cli.main(["dpo", "train.lr=0.5", "logging.backend=none"]) == 0
    assert [kind for kind, _ in ran] == ["ray", "ray", "launcher"]
    assert ran[0][1] == ran[1][1] and ran[0][1].dpo.mode == "ray"
    assert ran[2][1].dpo.mode == "launcher"
    # the alias adds its key after the user's, so it wins as before
    assert cli.main(["dpo-ray", "dpo.mode=launcher", "logging.backend=none"]) == 0
    assert ran[-1][0] == "ray"


def test_alias_prints_the_same_config_and_is_listed(capsys):
    assert cli.main(["dpo-ray", "train.lr=0.5", "--print-config"]) == 0
    alias = yaml.safe_load(capsys.readouterr().out)
    assert cli.main(["dpo", "train.lr=0.5", "dpo.mode=ray", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == alias and alias["dpo"]["mode"] == "ray"
    assert "aliases: dpo-ray = dpo dpo.mode=ray" in cli._usage()
    assert "dpo-ray" not in cli.TRAINERS  # one trainer entry; the key picks the mode


def test_job_sizes_fail_at_load_naming_the_field(capsys):
    bad = ["rollout.rollout_batch_size=6", "ppo.mini_batch_size=4", "--print-config"]
    assert cli.main(["ppo", *bad]) == 2
    assert (
        "rlhf-dist ppo: config error: ppo.mini_batch_size: 4 does not divide"
        in capsys.readouterr().err
    )
    assert cli.main(["sft", *bad]) == 0  # sft does not read them
    capsys.readouterr()
    assert cli.main(["dpo-ray", "resources.actor.devices_per_node=2", "--print-config"]) == 2
    assert (
        "rlhf-dist dpo-ray: config error: resources.reference: 1 ranks, DPO on Ray needs "
        "as many as resources.actor (2)"
    ) in capsys.readouterr().err


def test_printed_config_holds_the_derived_accumulation(capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under the deepspeed launcher
    assert cli.main(["sft", "train.train_batch_size=16", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["gradient_accumulation_steps"] == 16 // (2 * 2)
    # and the job's own resolve, as the trainer runs it, agrees with it
    assert (
        load_config(None, ["train.train_batch_size=16"], job="sft")
        .resolve(2)
        .train.gradient_accumulation_steps
        == 4
    )
