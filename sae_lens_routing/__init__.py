"""RouteSAE (Shi et al., EMNLP 2025) for SAELens; importing it registers the "routesae" architecture."""

from sae_lens import registry

from sae_lens_routing.hub import upload_route_sae, write_model_card
from sae_lens_routing.loading.loaders import (
    IntegrityError,
    route_sae_disk_loader,
    route_sae_huggingface_loader,
)
from sae_lens_routing.loading.official import (
    load_official_checkpoint,
    official_disk_loader,
    official_huggingface_loader,
)
from sae_lens_routing.loading.releases import (
    get_routed_saes_directory,
    load_route_sae,
    load_route_sae_with_cfg_and_sparsity,
)
from sae_lens_routing.saes.config import (
    ARCHITECTURE,
    RouteSAEConfig,
    RouteTrainingSAEConfig,
    paper_hook_names,
    paper_layers,
)
from sae_lens_routing.saes.recipes import OFFICIAL_RECIPE
from sae_lens_routing.saes.route_sae import RoutedOutput, RouteSAE, RouteTrainingSAE, normalized_mse
from sae_lens_routing.saes.sae_lens_guards import SingleLayerInputError
from sae_lens_routing.training.activation_cache import (
    CachedMultiLayerActivationsStore,
    CacheMetadata,
    cache_routed_activations,
    read_cache_metadata,
)
from sae_lens_routing.training.runner import RouteSAETrainingRunner, training_summary
from sae_lens_routing.training.stock_runner import (
    STACKED_ARCHITECTURE,
    StackedRouteTrainingSAE,
    StackedRouteTrainingSAEConfig,
    routed_hook_name,
    routed_model,
    stock_runner_config,
)
from sae_lens_routing.training.store import MultiLayerActivationsStore
from sae_lens_routing.training.sweep import RouteSAESweepRunner, train_sweep_from_config
from sae_lens_routing.training.trainer import RouteSAETrainer

if ARCHITECTURE not in registry.SAE_CLASS_REGISTRY:  # once: importlib.reload must not trip SAELens's guard
    registry.register_sae_class(ARCHITECTURE, RouteSAE, RouteSAEConfig)
    registry.register_sae_training_class(ARCHITECTURE, RouteTrainingSAE, RouteTrainingSAEConfig)
    _stacked = (StackedRouteTrainingSAE, StackedRouteTrainingSAEConfig)  # stock runner's, saved as "routesae"
    registry.register_sae_training_class(STACKED_ARCHITECTURE, *_stacked)

__all__ = [
    "MultiLayerActivationsStore", "CachedMultiLayerActivationsStore", "CacheMetadata",
    "cache_routed_activations", "read_cache_metadata", "StackedRouteTrainingSAE",
    "StackedRouteTrainingSAEConfig", "routed_hook_name", "routed_model", "stock_runner_config",
    "OFFICIAL_RECIPE", "RouteSAETrainer", "RouteSAETrainingRunner", "RouteSAESweepRunner",
    "train_sweep_from_config", "training_summary", "RouteSAE", "RouteSAEConfig", "RouteTrainingSAE",
    "RouteTrainingSAEConfig", "RoutedOutput", "SingleLayerInputError", "load_official_checkpoint",
    "IntegrityError", "get_routed_saes_directory", "load_route_sae", "load_route_sae_with_cfg_and_sparsity",
    "official_disk_loader", "official_huggingface_loader", "route_sae_disk_loader",
    "route_sae_huggingface_loader", "upload_route_sae", "write_model_card", "normalized_mse",
    "paper_hook_names", "paper_layers",
]
