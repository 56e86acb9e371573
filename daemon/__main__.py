import sys

from para.daemon.main import main

sys.exit(main())
