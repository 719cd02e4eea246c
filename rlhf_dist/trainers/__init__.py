"""Training loops: launcher mode (sft, rm, dpo) and, on Ray, ppo and dpo."""
