import sys

from heartbeit.cli import main

sys.exit(main())
