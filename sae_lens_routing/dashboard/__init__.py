"""sae-dashboard reports for a RouteSAE: the report, routing panel, offline assets, Neuronpedia JSON, screenshots."""
