import sys

from archive_web.cli import main

sys.exit(main())
