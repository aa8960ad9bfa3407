import sys

from workloads.streaming.worker import main

sys.exit(main())
