from workloads.data.storage import LAKE_BUCKETS, lake_buckets_from_env


def test_lake_buckets_are_the_local_names_unless_the_cluster_sets_them():
    assert lake_buckets_from_env({}) == LAKE_BUCKETS
    on_aws = lake_buckets_from_env({"STRATA_LAKE_GOLD_BUCKET": "acme-prod-lake-gold", "STRATA_LAKE_BRONZE_BUCKET": ""})
    assert on_aws == {**LAKE_BUCKETS, "gold": "acme-prod-lake-gold"}  # an empty value is unset
