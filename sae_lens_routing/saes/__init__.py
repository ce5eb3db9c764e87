"""The model: RouteSAE configs, the router, routed TopK, the RouteSAE classes and their SAELens guards."""
