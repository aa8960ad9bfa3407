"""Traffic between a model's two predictors: the split contract, the local proxy, the cluster router."""
