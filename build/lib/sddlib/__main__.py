import sys

from sddlib.cli import main

sys.exit(main())
