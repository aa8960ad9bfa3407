"""Preview environments and pull-request plans: the logic the CI workflows call.

* `stacks`    - preview stack names (`pr-<number>`), the config a preview derives from
                the `quick` stack file, its TTL tag and which stacks gc selects.
* `teardown`  - create and destroy in a safe order behind two small interfaces
                (`PulumiStacks`, `PreviewCluster`): LoadBalancer Services and Ingresses
                first (until their cloud load balancers are gone), then `destroy`, then
                `stack rm`; every step may run again (a half-created stack, a retried job).
* `automation` - the real implementations: the Pulumi Automation API and `kubectl`.
* `comment`   - the pull-request comment rendered from `strata plan --format json`.
* `cli`       - `strata preview create|destroy|gc` and `strata pr-comment`.

Nothing here reads `pulumi.Config`: the workflows pass everything as arguments.
"""
