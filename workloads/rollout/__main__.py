import sys

from workloads.rollout.service import main

sys.exit(main())
