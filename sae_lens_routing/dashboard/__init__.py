"""sae-dashboard pages and Neuronpedia JSON for a RouteSAE."""
