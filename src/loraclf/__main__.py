import sys

from loraclf.cli import main

sys.exit(main())
