"""Run under `torchrun --nproc_per_node 2` by tests/test_torchrun.py: one RouteSAE config run on 2 CPU ranks.

With a second argument it resumes from that checkpoint instead. It records, per rank, the tokens each rank
read and a checksum of the SAE parameters and the loss after every step (test instrumentation only), then
trains through the ordinary `RouteSAETrainingRunner`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/, where helpers.py lives
from helpers import route_runner_cfg, tiny_model, token_dataset  # noqa: E402

from sae_lens_routing.training.runner import RouteSAETrainingRunner  # noqa: E402
from sae_lens_routing.training.trainer import RouteSAETrainer  # noqa: E402


def main(out_dir: str, resume: str | None = None) -> None:
    out = Path(out_dir)
    rank = int(os.environ["RANK"])
    tag = "_resumed" if resume else ""
    record: dict[str, list] = {"tokens": [], "param_sums": [], "losses": [], "steps": []}
    cfg = route_runner_cfg(
        out,
        training_tokens=256 * 12,
        train_batch_size_tokens=256,
        n_batches_in_buffer=32,
        lr=2e-2,
        n_checkpoints=1,
        checkpoint_path=str(out / f"ckpt{tag}"),
        output_path=str(out / f"final{tag}"),
        seed=7,
        resume_from_checkpoint=resume,
    )
    if os.environ.get("DDP_TEST_WANDB") and not resume:  # W&B offline: record the config the run reports
        import wandb
        from sae_lens.config import LoggingConfig

        cfg.logger = LoggingConfig(log_to_wandb=True, wandb_project="ddp-test", wandb_log_frequency=100)
        real_init = wandb.init

        def recording_init(*args, **kwargs):
            run = real_init(*args, **kwargs)
            keys = ("training_tokens", "train_batch_size_tokens")
            record["wandb_config"] = {k: run.config.get(k) for k in keys}
            return run

        wandb.init = recording_init
    runner = RouteSAETrainingRunner(cfg, override_dataset=token_dataset(256), override_model=tiny_model())
    store = runner.activations_store
    get_tokens = store.get_batch_tokens

    def recording_get_batch_tokens(*args, **kwargs):
        tokens = get_tokens(*args, **kwargs)
        record["tokens"].extend(tokens.tolist())
        return tokens

    store.get_batch_tokens = recording_get_batch_tokens
    step = RouteSAETrainer.step

    def recording_step(self, batch):
        record["steps"].append(self.n_training_steps)
        output = step(self, batch)
        record["losses"].append(output.loss.item())
        record["param_sums"].append([float(p.detach().double().sum()) for p in self.sae.parameters()])
        return output

    RouteSAETrainer.step = recording_step
    runner.run()
    (out / f"rank{rank}{tag}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
