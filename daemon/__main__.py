import sys

from para.daemon.safe_path import drop_caller_paths

drop_caller_paths()  # before para.daemon.main imports anything else

from para.daemon.main import main  # noqa: E402

sys.exit(main())
