"""Training: IDX data sets, the QNN MLP, and the metaplastic rule (Algorithm 1) as an optimizer."""
