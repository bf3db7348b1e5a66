import sys

from archive_store.cli import main

sys.exit(main())
