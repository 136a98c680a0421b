import sys

from primer.cli import main

sys.exit(main())
