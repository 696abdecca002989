import sys

from engine.export.merge import main

sys.exit(main())
