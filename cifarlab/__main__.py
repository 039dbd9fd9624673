import os
import sys

from .cli import main

code = main()
if int(os.environ.get("WORLD_SIZE", 1)) > 1:  # a torchrun worker: leave the group together (ddp.leave)
    from .classify import ddp
    ddp.leave(ddp.from_environment(), code)
sys.exit(code)
