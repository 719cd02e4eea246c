"""KL-penalty coefficient controllers (Ziegler et al. 2019, "Fine-Tuning Language Models from
Human Preferences", section 2.2)."""

from __future__ import annotations

from typing import Any

from ._common import lookup


class FixedKLController:
    """Constant coefficient: ``.value`` never changes."""

    def __init__(self, kl_coef: float):
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op (same signature as the adaptive controller)."""

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Proportional controller steering the measured KL towards ``target``:

    e = clip(current_kl / target - 1, -0.2, 0.2);  value *= 1 + e * n_steps / horizon.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        if init_kl_coef < 0:
            raise ValueError(f"init_kl_coef must be >= 0, got {init_kl_coef}")
        if target <= 0 or horizon <= 0:
            raise ValueError(
                f"target and horizon must be > 0, got target={target}, horizon={horizon}"
            )
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """``current_kl``: measured KL (float or 0-dim tensor); ``n_steps``: samples (or
        steps) since the last update, in the units of ``horizon``."""
        proportional_error = min(max(float(current_kl) / self.target - 1, -0.2), 0.2)
        self.value *= 1 + proportional_error * n_steps / self.horizon

    def state_dict(self) -> dict[str, Any]:
        """Only the coefficient: target and horizon come from the (possibly changed) config."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


KL_CONTROLLERS: dict[str, type] = {
    "fixed": FixedKLController,
    "adaptive": AdaptiveKLController,
}


def make_kl_controller(kind: str, **kwargs) -> FixedKLController | AdaptiveKLController:
    """``make_kl_controller("fixed", kl_coef=0.05)`` or
    ``make_kl_controller("adaptive", init_kl_coef=0.2, target=6.0, horizon=10000)``."""
    return lookup(KL_CONTROLLERS, kind, "KL controller")(**kwargs)
