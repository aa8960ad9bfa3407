"""The feature store: a feature repository generated from the model specs (`repo`), training
sets by point-in-time join (`pit`), the online store in Redis (`online`) and batch scoring
(`workloads.data.scoring`). Feast is not used here: see README "Feature store" for why."""
