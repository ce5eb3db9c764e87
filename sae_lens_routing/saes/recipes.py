"""The official RouteSAE training rules, for `RouteTrainingSAEConfig(..., **OFFICIAL_RECIPE)`."""

from typing import Any

OFFICIAL_RECIPE: dict[str, Any] = {
    "topk_relu": False,  # the official TopK keeps the k largest pre-activations as they are
    "decoder_init_norm": 1.0,  # decoder rows unit-norm before the first step, W_dec = W_enc.T directions
    "encoder_init_norm": 3**-0.5,  # nn.Linear's U(-d**-0.5, d**-0.5) rows have norm ~3**-0.5
    "max_grad_norm": None,  # the official loop never clips
    "rescale_acts_by_decoder_norm": False,
    "unit_norm_decoder_every": 10,  # the official `--steps 10`
    "aux_loss_coefficient": 0.0,
    "dead_feature_window_tokens": None,
    "end_to_end_tokens": 0,
}
