"""Analysis of a trained RouteSAE: routed splicing into the model, steering, evaluation, feature contexts."""
